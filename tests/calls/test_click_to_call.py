"""Click-to-call end to end: a Bitrix24 operator clicks a WhatsApp customer's number
(ONEXTERNALCALLSTART from the Bitrix24 simulator, the call already registered by the portal),
thoth-pbx checks the call permission on the Meta simulator, rings the operator's phone first and
then calls the customer through the real trunk: TLS to Meta's side of the lab, SDES-SRTP, Opus,
digest auth with the number's SIP password (the Meta-side Asterisk challenges like Meta does),
From the business number at our hostname. Sources: developers.facebook.com/documentation/
business-messaging/whatsapp/calling/sip (business-initiated calls, SIP answers), developers.
facebook.com/docs/whatsapp/cloud-api/calling/user-call-permissions (permissions, limits, the
request and its reply), dev.1c-bitrix.ru/rest_help/scope_telephony/telephony/events_telephone/
(ONEXTERNALCALLSTART: the call is registered, finish its CALL_ID)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from tests.calls.conftest import start_own_lab
from tests.calls.lab import SIP_HOSTNAME, CallLab, stop_lab
from tests.calls.service import OPERATORS, bind_event, new_simulator, thoth_environ
from tests.support.bitrix import jobs, seed_instance, wait_until
from thoth_pbx.app import Services, build_app, open_services
from thoth_pbx.clients.asterisk.ari import AriError
from thoth_pbx.core.settings import load_settings
from thoth_pbx.features.callback.models import CallbackCall
from thoth_pbx.features.directory.models import AppInstance, Phone, WabaAccount
from thoth_pbx.features.messaging.models import MessagingTemplateSync, MessagingWindow
from thoth_pbx.features.portal.users import fetch_users, store_users
from thoth_pbx.sandbox import meta as meta_sim
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Portal
from thoth_pbx.sandbox.bitrix.clicktocall import click_to_call
from thoth_pbx.sandbox.meta import FailRule, MetaSimulator
from thoth_pbx.sandbox.meta.permissions import permission_reply

BUSINESS = "+14155550150"
PASSWORD = "SipSecret-0150-abcdef"
PNID = "2001"
NO_HOST, NO_HOST_PASSWORD, NO_HOST_PNID = "+14155550151", "SipSecret-0151-abcdef", "2002"  # no sip_hostname
TOKEN = "EAAGc2c" + "x" * 30
APP_SECRET = "c2c-app-secret-0123456789"
API_KEY = "c2c-api-key-0123456789"
LINE = BUSINESS.lstrip("+")
ANSWERS, DECLINES, UNAVAILABLE, FORBIDDEN = "+79991000001", "+79991000002", "+79991000003", "+79991000004"
RINGS = "+79991000005"
FINISH, REGISTER = "telephony.externalcall.finish", "telephony.externalcall.register"
ASK_BODY = {"type": "BODY", "text": "May we call you on WhatsApp about your request?"}
CPR = {"type": "call_permission_request"}  # Meta's call permission request template component


@pytest.fixture(scope="module")
def c2c_lab() -> Iterator[CallLab]:
    lab = start_own_lab("c2c", [(BUSINESS, PASSWORD, SIP_HOSTNAME), (NO_HOST, NO_HOST_PASSWORD, None)])
    yield lab
    stop_lab(lab)


@dataclass
class C2C:
    services: Services
    client: TestClient
    sim: BitrixSimulator
    portal: Portal
    meta: MetaSimulator
    instance_id: int
    phone_id: int
    lab: CallLab
    environ: dict[str, str]

    @property
    def phone(self) -> Any:
        return self.meta.phones[PNID]

    async def settings(self, **callback: Any) -> None:
        async with self.services.sessions() as session, session.begin():
            inst = await session.get(AppInstance, self.instance_id)
            assert inst is not None
            inst.settings = {**(inst.settings or {}), "callback": callback}

    async def click(self, customer: str, user_id: int = 2, line: str = LINE) -> str:
        call_id, sent = await click_to_call(self.sim, self.portal, user_id=user_id, phone=customer, line_number=line)
        assert [status for _, status, _ in sent] == [200], sent
        return call_id

    async def row(self, call_id: str) -> CallbackCall | None:
        async with self.services.sessions() as session:
            return await session.scalar(select(CallbackCall).where(CallbackCall.bitrix_call_id == call_id))

    async def state(self, call_id: str, state: str, timeout: float = 30.0) -> CallbackCall:
        async def check() -> CallbackCall | None:
            row = await self.row(call_id)
            return row if row is not None and row.state == state else None

        return await wait_until(check, timeout=timeout, what=f"click-to-call {call_id} {state}")

    async def logged(self, call_id: str) -> dict[str, Any]:
        """The Bitrix24 statistics row of a finished call (telephony.externalcall.finish)."""
        return await wait_until(lambda: self.portal.statistics.get(call_id), timeout=20, what=f"{call_id} finished")

    def finishes(self, call_id: str) -> list[dict[str, Any]]:
        return [e.params for e in self.sim.recorder.calls(FINISH, ok=True) if e.params.get("CALL_ID") == call_id]

    def meta_legs(self) -> list[dict[str, Any]]:
        """Business-initiated calls that reached Meta's side (its endpoint for our number)."""
        return [c for c in self.lab.meta_channels() if c["name"].startswith(f"PJSIP/{BUSINESS}-")]

    async def templates(self, name: str, components: list[dict[str, Any]], **more: Any) -> None:
        """A template on the simulator's WABA, then synchronised into thoth-pbx as the messaging
        feature lists them: after the start-up listing (else that older listing could be stored
        after ours), one listing of ours."""
        self.meta.add_template("c2cwaba", name, "en_US", components, **more)
        async with self.services.sessions() as session:
            phone = await session.get(Phone, self.phone_id)
            assert phone is not None and phone.waba_account_id is not None
            account_id = phone.waba_account_id

        async def listed_at_start() -> bool:
            async with self.services.sessions() as session:
                sync = await session.get(MessagingTemplateSync, account_id)
                return sync is not None and (sync.synced_at is not None or sync.error is not None)

        await wait_until(listed_at_start, what="the start-up template listing")
        listed = await self.services.messaging_parts.templates.sync(account_id)
        assert "error" not in listed, listed

    async def reply(self, customer: str, *, accept: bool = True) -> None:
        doc = meta_sim.delivery("c2cwaba", [permission_reply(self.phone, customer, accept=accept)])
        body = json.dumps(doc).encode()
        resp = await self.client.post(
            f"/api/waba/?api-key={API_KEY}",
            data=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": meta_sim.sign(body, APP_SECRET)},
        )
        assert resp.status == 200, await resp.text()


async def _seed(services: Services, sim: BitrixSimulator, portal: Portal) -> tuple[int, int]:
    instance_id = await seed_instance(services.sessions, sim, portal)
    users = await fetch_users(await services.bitrix.portals.client(instance_id))
    box = services.secret_box
    async with services.sessions() as session, session.begin():
        await store_users(session, instance_id, users)
        waba = WabaAccount(
            name="c2c",
            waba_id="c2cwaba",
            access_token=TOKEN,
            app_secret=APP_SECRET,
            verify_token="v" * 20,
            verify_token_fingerprint=box.fingerprint("v" * 20),
            api_key=API_KEY,
            api_key_fingerprint=box.fingerprint(API_KEY),
        )
        session.add(waba)
        await session.flush()
        phone = Phone(number=BUSINESS, phone_number_id=PNID, waba_account_id=waba.id, app_instance_id=instance_id)
        session.add(phone)
        session.add(
            Phone(number=NO_HOST, phone_number_id=NO_HOST_PNID, waba_account_id=waba.id, app_instance_id=instance_id)
        )
        await session.flush()
        return instance_id, phone.id


@pytest.fixture
async def c2c(request: pytest.FixtureRequest, tmp_path: Path, c2c_lab: CallLab) -> AsyncIterator[C2C]:
    """SQLite unless a test asks for `postgres` (indirect parametrisation)."""
    meta = MetaSimulator()
    meta.add_app("c2capp", APP_SECRET)
    meta.add_token(TOKEN, "c2capp")
    meta.add_phone(PNID, BUSINESS, "c2cwaba", enforce_window=False)
    meta.add_phone(NO_HOST_PNID, NO_HOST, "c2cwaba", enforce_window=False)
    meta_server = TestServer(meta.app())
    await meta_server.start_server()
    sim, portal = await new_simulator()
    environ = thoth_environ(tmp_path, c2c_lab, sim)
    environ["THOTH_META_GRAPH_URL"] = str(meta_server.make_url("")).rstrip("/")
    port = int(environ["THOTH_LISTEN"].rsplit(":", 1)[1])
    if getattr(request, "param", "sqlite") == "postgres":
        environ["THOTH_DATABASE_URL"] = request.getfixturevalue("database_url_postgres")
    services = await open_services(load_settings(None, environ=environ))
    instance_id, phone_id = await _seed(services, sim, portal)
    bind_event(portal, "ONEXTERNALCALLSTART", port)
    client = TestClient(TestServer(build_app(services), host="127.0.0.1", port=port))
    await client.start_server()
    await services.ari.wait_connected(15)

    async def our_app_connected() -> bool:
        apps = await services.ari.request("GET", "/applications")
        return any(a["name"] == f"{services.settings.ari_app}-callback" for a in apps)

    await wait_until(our_app_connected, what="the click-to-call ARI application")
    c2c = C2C(services, client, sim, portal, meta, instance_id, phone_id, c2c_lab, environ)
    yield c2c
    await c2c.client.close()
    await sim.stop()
    await meta_server.close()
    for leg in c2c.meta_legs():  # a failed test's live call must not fail the next ones too
        c2c_lab.hangup_meta(leg["id"])


@pytest.fixture
def database_url_postgres(postgres_server: Any) -> Iterator[str]:
    name, url = postgres_server.create_database()
    yield url.replace("postgresql://", "postgresql+asyncpg://", 1)
    postgres_server.drop_database(name)


BOTH_DATABASES = pytest.mark.parametrize("c2c", ["sqlite", "postgres"], indirect=True)


@BOTH_DATABASES
async def test_with_permission_operator_rings_first_then_customer_over_tls_sdes_opus_with_digest(c2c: C2C) -> None:
    c2c.phone.call_permissions[ANSWERS.lstrip("+")] = {"status": "permanent"}
    await c2c.settings(record=True)
    call_id = await c2c.click(ANSWERS)
    row = await c2c.state(call_id, "connected")
    assert row.extension == "101" and row.user_id == 2 and row.customer == ANSWERS
    ari = c2c.services.ari
    assert row.customer_channel and row.operator_channel
    secure = await ari.request(
        "GET", f"/channels/{row.customer_channel}/variable", params={"variable": "CHANNEL(rtp,secure)"}
    )
    codec = await ari.request(
        "GET", f"/channels/{row.customer_channel}/variable", params={"variable": "CHANNEL(audionativeformat)"}
    )
    assert secure["value"] == "1" and "opus" in codec["value"]
    # Meta's side took it on the endpoint of our number, which challenges for its digest
    # credentials, so the INVITE carried the right password; the From host was ours
    legs = c2c.meta_legs()
    assert len(legs) == 1 and legs[0]["state"] == "Up", legs
    sent_from = c2c.lab._meta_ari(
        "GET", f"/channels/{legs[0]['id']}/variable", {"variable": "PJSIP_HEADER(read,From)"}
    )["value"]
    assert sent_from.startswith(f"<sip:{BUSINESS}@{SIP_HOSTNAME}>"), sent_from  # From the business number, our host
    # the customer's leg was created only once the operator had answered (their phone answers
    # 0.2 s after it starts ringing)
    operator = await ari.request("GET", f"/channels/{row.operator_channel}")
    customer = await ari.request("GET", f"/channels/{row.customer_channel}")
    created = [dt.datetime.strptime(c["creationtime"], "%Y-%m-%dT%H:%M:%S.%f%z") for c in (operator, customer)]
    assert (created[1] - created[0]).total_seconds() >= 0.2, created
    assert customer["name"].startswith(f"PJSIP/wa-{LINE}-") and operator["name"].startswith("PJSIP/101-")
    await asyncio.sleep(1.5)  # the conversation itself: a scenario duration, not a synchronisation
    c2c.lab.hangup_meta(legs[0]["id"])
    ended = await c2c.state(call_id, "ended")
    assert ended.status_code == "200" and ended.reason is None
    logged = await c2c.logged(call_id)
    assert logged["CALL_FAILED_CODE"] == "200" and logged["CALL_DURATION"] >= 1
    assert logged["PORTAL_USER_ID"] == 2 and logged["INCOMING"] == "1"  # outgoing, as Bitrix24 registered it
    # Bitrix24's CALL_ID finished once, never registered again by us
    assert len(c2c.finishes(call_id)) == 1
    assert not [e for e in c2c.sim.recorder.calls(REGISTER, ok=True) if e.params.get("TYPE") != 1]
    await wait_until(lambda: c2c.portal.records.get(call_id), what="the recording attached")
    assert ended.recording_path and Path(ended.recording_path).stat().st_size > 1000


async def test_operator_who_does_not_answer_means_no_invite_to_whatsapp(c2c: C2C) -> None:
    c2c.phone.call_permissions[ANSWERS.lstrip("+")] = {"status": "permanent"}
    await c2c.settings(operator_ring_seconds=5)
    call_id = await c2c.click(ANSWERS, user_id=5)  # Dina, extension 104: rings forever
    row = await c2c.state(call_id, "dialing")
    assert row.extension == "104"
    ended = await c2c.state(call_id, "ended")
    assert ended.status_code == "304" and "did not answer" in (ended.reason or "")
    assert c2c.meta_legs() == []
    logged = await c2c.logged(call_id)
    assert logged["CALL_FAILED_CODE"] == "304" and logged["CALL_FAILED_REASON"] == ended.reason


@BOTH_DATABASES
async def test_without_permission_no_invite_request_sent_operator_told_and_accept_calls_back(c2c: C2C) -> None:
    await c2c.settings(auto_call_back=True)
    async with c2c.services.sessions() as session, session.begin():  # the customer wrote an hour ago
        session.add(
            MessagingWindow(
                phone_id=c2c.phone_id,
                customer=ANSWERS.lstrip("+"),
                last_inbound_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
            )
        )
    call_id = await c2c.click(ANSWERS)
    ended = await c2c.state(call_id, "ended")
    assert ended.status_code == "403" and "interactive message" in (ended.reason or "")
    assert c2c.meta_legs() == [] and not any(ch["name"].startswith("PJSIP/wa-") for ch in c2c.lab.business_channels())
    sent = [m for m in c2c.phone.sent if m.get("type") == "interactive"]
    assert len(sent) == 1 and sent[0]["to"] == ANSWERS.lstrip("+")
    assert sent[0]["interactive"]["type"] == "call_permission_request"
    logged = await c2c.logged(call_id)  # the operator sees why in the call log
    assert logged["CALL_FAILED_CODE"] == "403" and "permission" in logged["CALL_FAILED_REASON"]
    # the customer accepts: the operator is rung again and the customer called
    await c2c.reply(ANSWERS)
    again = await c2c.state(f"callback-{ended.id}", "connected")
    assert again.extension == "101"
    register = [e for e in c2c.sim.recorder.calls(REGISTER, ok=True) if e.params.get("EXTERNAL_CALL_ID")]
    assert len(register) == 1 and register[0].params["TYPE"] == 1 and register[0].params["PHONE_NUMBER"] == ANSWERS
    new_call_id = str(register[0].result["CALL_ID"])
    legs = c2c.meta_legs()
    assert len(legs) == 1
    c2c.lab.hangup_meta(legs[0]["id"])
    await c2c.state(f"callback-{ended.id}", "ended")
    logged = await c2c.logged(new_call_id)
    assert logged["CALL_FAILED_CODE"] == "200"
    await c2c.reply(ANSWERS)  # a repeated reply calls nobody again
    await asyncio.sleep(0)
    assert len([e for e in c2c.sim.recorder.calls(REGISTER, ok=True) if e.params.get("EXTERNAL_CALL_ID")]) == 1


async def test_outside_the_window_without_template_nothing_is_sent_and_the_operator_is_told(c2c: C2C) -> None:
    call_id = await c2c.click(ANSWERS)
    ended = await c2c.state(call_id, "ended")
    assert ended.status_code == "403" and "cannot be asked" in (ended.reason or "")
    assert c2c.phone.sent == []


async def test_outside_the_window_the_configured_template_asks(c2c: C2C) -> None:
    """Outside the 24-hour window only a template may go: the one the portal configured, a call
    permission request template (a body and Meta's `call_permission_request` component). It is
    a request like the interactive one (the simulator counts it against the limits) and the
    customer's accept on it rings the operator again and calls the customer."""
    await c2c.templates("call_permission_ask", [ASK_BODY, CPR])
    await c2c.settings(template_name="call_permission_ask", template_language="en_US", auto_call_back=True)
    call_id = await c2c.click(ANSWERS)
    ended = await c2c.state(call_id, "ended")
    assert ended.status_code == "403" and "permission template" in (ended.reason or ""), ended.reason
    sent = c2c.phone.sent
    assert len(sent) == 1 and sent[0]["type"] == "template" and sent[0]["template"]["name"] == "call_permission_ask"
    assert sent[0]["rendered"]["call_permission_request"] is True
    assert ended.detail["request_wamid"] == sent[0]["id"] and ended.detail["requested"] == "template"
    assert len(c2c.phone.permission_requests[ANSWERS.lstrip("+")]) == 1  # a request, limits counted
    assert c2c.meta_legs() == []
    # the customer accepts the template's request: the operator is rung again, the customer called
    await c2c.reply(ANSWERS)
    again = await c2c.state(f"callback-{ended.id}", "connected")
    assert again.extension == "101"
    register = [e for e in c2c.sim.recorder.calls(REGISTER, ok=True) if e.params.get("EXTERNAL_CALL_ID")]
    assert len(register) == 1 and register[0].params["PHONE_NUMBER"] == ANSWERS
    legs = c2c.meta_legs()
    assert len(legs) == 1
    c2c.lab.hangup_meta(legs[0]["id"])
    await c2c.state(f"callback-{ended.id}", "ended")
    logged = await c2c.logged(str(register[0].result["CALL_ID"]))
    assert logged["CALL_FAILED_CODE"] == "200"


async def test_a_configured_template_without_the_permission_component_is_not_sent(c2c: C2C) -> None:
    """A plain approved template would reach the customer with nothing to grant (Meta: only the
    `call_permission_request` component asks): nothing is sent and the operator is told which
    template is wrong and why."""
    await c2c.templates("call_permission_ask", [ASK_BODY])
    await c2c.settings(template_name="call_permission_ask", template_language="en_US", auto_call_back=True)
    call_id = await c2c.click(ANSWERS)
    ended = await c2c.state(call_id, "ended")
    why = "the permission template call_permission_ask+en_US has no call permission request component"
    assert ended.status_code == "403" and why in (ended.reason or ""), ended.reason
    assert c2c.phone.sent == [] and c2c.phone.permission_requests == {}
    assert not ended.detail.get("requested")
    logged = await c2c.logged(call_id)
    assert logged["CALL_FAILED_CODE"] == "403" and why in logged["CALL_FAILED_REASON"]
    assert c2c.meta_legs() == []


@pytest.mark.parametrize(
    ("customer", "status", "why"),
    [
        (DECLINES, "603", "declined the call (SIP 486)"),
        (UNAVAILABLE, "480", "unreachable or did not answer (SIP 480)"),
        (FORBIDDEN, "403", "SIP 403"),
    ],
)
async def test_sip_refusals_of_meta_give_their_own_status(c2c: C2C, customer: str, status: str, why: str) -> None:
    c2c.phone.call_permissions[customer.lstrip("+")] = {"status": "permanent"}
    call_id = await c2c.click(customer)
    ended = await c2c.state(call_id, "ended")
    assert ended.status_code == status and why in (ended.reason or ""), ended.reason
    logged = await c2c.logged(call_id)
    assert logged["CALL_FAILED_CODE"] == status and logged["CALL_DURATION"] == 0
    assert why in logged["CALL_FAILED_REASON"]


@pytest.mark.parametrize(
    ("code", "path", "status", "why"),
    [
        (138006, "call_permissions", "403", "(138006)"),
        (138012, "call_permissions", "423", "(138012)"),
        (138009, "messages", "423", "(138009)"),
    ],
)
async def test_graph_refusals_give_their_own_status(c2c: C2C, code: int, path: str, status: str, why: str) -> None:
    await c2c.templates("call_permission_ask", [ASK_BODY, CPR])
    c2c.meta.fail_next(FailRule(code=code, path=path, http_status=400))
    await c2c.settings(template_name="call_permission_ask", template_language="en_US")
    call_id = await c2c.click(ANSWERS)
    ended = await c2c.state(call_id, "ended")
    assert ended.status_code == status and why in (ended.reason or ""), ended.reason
    assert c2c.meta_legs() == []
    logged = await c2c.logged(call_id)
    assert logged["CALL_FAILED_CODE"] == status and why in logged["CALL_FAILED_REASON"]


async def test_a_number_on_an_asterisk_no_longer_configured_is_refused_with_the_reason(c2c: C2C) -> None:
    """Several Asterisk servers (docs/scaling.md): a number's server dials its click-to-calls; a
    number still naming a server the settings no longer have is refused at once, said why
    (tests/calls/test_calls_two_asterisks.py dials through a second server)."""
    async with c2c.services.sessions() as session, session.begin():
        phone = await session.get(Phone, c2c.phone_id)
        assert phone is not None
        phone.asterisk = "pbx-b"
    try:
        asked = len([r for r in c2c.meta.requests if "call_permissions" in str(r.get("path"))])
        call_id = await c2c.click(ANSWERS)
        ended = await c2c.state(call_id, "ended")
        assert ended.status_code == "503" and "no Asterisk server 'pbx-b'" in (ended.reason or ""), ended.reason
        logged = await c2c.logged(call_id)
        assert logged["CALL_FAILED_CODE"] == "503" and "pbx-b" in logged["CALL_FAILED_REASON"]
        assert c2c.meta_legs() == []
        assert len([r for r in c2c.meta.requests if "call_permissions" in str(r.get("path"))]) == asked
    finally:
        async with c2c.services.sessions() as session, session.begin():
            phone = await session.get(Phone, c2c.phone_id)
            assert phone is not None
            phone.asterisk = None


async def test_unknown_line_and_forged_token_are_not_ours(c2c: C2C) -> None:
    sent = await c2c.sim.send_event(
        c2c.portal, "ONEXTERNALCALLSTART", {"CALL_ID": "x", "USER_ID": "2"}, application_token="forged-0000"
    )
    assert [status for _, status in sent] == [401]
    call_id, delivered = await click_to_call(c2c.sim, c2c.portal, user_id=2, phone=ANSWERS, line_number="1999555")
    assert delivered[0][1] == 200 and "not a WhatsApp number" in json.dumps(delivered[0][2])
    assert await c2c.row(call_id) is None


async def test_the_same_event_twice_is_one_call(c2c: C2C) -> None:
    """Bitrix24 may post an event again (asterlink drops repeats of a CALL_ID): one row, one finish."""
    call_id = await c2c.click(ANSWERS)
    await c2c.state(call_id, "ended")
    data = {"CALL_ID": call_id, "USER_ID": "2", "PHONE_NUMBER": ANSWERS, "LINE_NUMBER": LINE}
    again = await c2c.sim.deliver_event(c2c.portal, "ONEXTERNALCALLSTART", data)
    assert again[0][1] == 200 and again[0][2]["handled"] == {"duplicate": call_id}
    await c2c.logged(call_id)
    async with c2c.services.sessions() as session:
        rows = (await session.scalars(select(CallbackCall))).all()
    assert len(rows) == 1 and len(c2c.finishes(call_id)) == 1


@BOTH_DATABASES
async def test_a_restart_while_talking_logs_the_call_once_when_it_ends(c2c: C2C) -> None:
    """thoth-pbx stops mid-call (the call lives on in Asterisk), starts again, re-attaches, and
    finishes Bitrix24's CALL_ID once when the customer hangs up, with the whole talk time."""
    c2c.phone.call_permissions[ANSWERS.lstrip("+")] = {"status": "permanent"}
    call_id = await c2c.click(ANSWERS)
    await c2c.state(call_id, "connected")
    port = int(c2c.environ["THOTH_LISTEN"].rsplit(":", 1)[1])
    await c2c.client.close()  # stops every part, the click-to-call's ARI application too
    legs = c2c.meta_legs()
    assert len(legs) == 1 and legs[0]["state"] == "Up"  # still talking
    c2c.services = await open_services(load_settings(None, environ=c2c.environ))
    c2c.client = TestClient(TestServer(build_app(c2c.services), host="127.0.0.1", port=port))
    await c2c.client.start_server()
    row = await c2c.row(call_id)
    assert row is not None and row.state == "connected"

    async def reattached() -> bool:
        try:  # on PostgreSQL ARI starts once this instance holds the Stasis app again
            apps = await c2c.services.ari.request("GET", "/applications")
        except AriError:
            return False
        app = next((a for a in apps if a["name"] == f"{c2c.services.settings.ari_app}-callback"), None)
        return app is not None and row.customer_channel in app["channel_ids"]

    await wait_until(reattached, what="the live call re-attached")
    await asyncio.sleep(1.0)  # talking on: a scenario duration, not a synchronisation
    assert [leg["state"] for leg in c2c.meta_legs()] == ["Up"]  # not cut by the restart
    assert (await c2c.row(call_id)).state == "connected"  # type: ignore[union-attr]
    c2c.lab.hangup_meta(legs[0]["id"])
    ended = await c2c.state(call_id, "ended")
    logged = await c2c.logged(call_id)
    assert ended.status_code == "200" and logged["CALL_FAILED_CODE"] == "200" and logged["CALL_DURATION"] >= 1
    assert len(c2c.finishes(call_id)) == 1
    bridge = row.detail["bridge"]
    assert bridge and not [b for b in await c2c.services.ari.request("GET", "/bridges") if b["id"] == bridge]


async def test_from_host_other_than_the_configured_hostname_is_refused(c2c: C2C) -> None:
    """A number without sip_hostname gets no from_domain (the trunk render warns): Meta answers
    403 "SIP server ... does not match any SIP server configured"; the log says SIP 403."""
    c2c.meta.phones[NO_HOST_PNID].call_permissions[ANSWERS.lstrip("+")] = {"status": "permanent"}
    call_id = await c2c.click(ANSWERS, line=NO_HOST.lstrip("+"))
    ended = await c2c.state(call_id, "ended")
    assert ended.status_code == "403" and "SIP 403" in (ended.reason or "")
    assert not [c for c in c2c.lab.meta_channels() if c["state"] == "Up"]


async def test_customer_not_answering_in_time_is_missed_and_operator_leaving_cancels(c2c: C2C) -> None:
    c2c.phone.call_permissions[RINGS.lstrip("+")] = {"status": "permanent"}
    await c2c.settings(customer_ring_seconds=5)
    call_id = await c2c.click(RINGS)
    ended = await c2c.state(call_id, "ended")
    assert ended.status_code == "304" and "did not answer in time" in (ended.reason or "")
    await c2c.settings(customer_ring_seconds=60)
    await c2c.logged(call_id)  # finished in Bitrix24: the next click is a new call there, not its re-register
    call_id = await c2c.click(RINGS)
    await c2c.state(call_id, "calling")
    await wait_until(lambda: c2c.meta_legs(), what="WhatsApp ringing")
    operator_phone = next(c for c in c2c.lab.meta_channels() if c["name"].startswith("PJSIP/from-business-"))
    c2c.lab.hangup_meta(operator_phone["id"])
    ended = await c2c.state(call_id, "ended")
    assert ended.status_code == "603-S" and "operator hung up" in (ended.reason or "")
    await wait_until(lambda: not c2c.meta_legs(), what="the WhatsApp leg cancelled")
    from thoth_pbx.clients.asterisk.ari import basic_auth_header

    admin = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}
    listed = await (await c2c.client.get("/api/admin/callbacks", headers=admin)).json()
    assert [(i["status_code"], i["customer"]) for i in listed["items"]] == [("603-S", RINGS), ("304", RINGS)]
    assert (await c2c.client.get("/api/admin/callbacks")).status == 401


async def test_a_standby_instance_does_not_dial_the_owner_does(c2c: C2C) -> None:
    """Asterisk gives an ARI application to one websocket at a time: our click-to-call application
    follows the Stasis ownership (calls/leadership.py). While this instance stands by, the start
    job waits and nothing is dialled; once it owns again, the call goes out. (SQLite elects the
    single instance at once, so the standby is played by setting the ownership's flag.)"""
    owner = c2c.services.stasis_owner
    assert owner is not None and owner.owner
    app = f"{c2c.services.settings.ari_app}-callback"

    async def connected(expected: bool) -> bool:
        apps = await c2c.services.ari.request("GET", "/applications")
        return any(a["name"] == app for a in apps) is expected

    c2c.phone.call_permissions[ANSWERS.lstrip("+")] = {"status": "permanent"}
    owner.owner = False
    await wait_until(lambda: connected(False), what="the click-to-call application closed on a standby")
    call_id = await c2c.click(ANSWERS)

    async def waited() -> bool:  # the start job ran and was put back: no ARI here to dial with
        started = await jobs(c2c.services.sessions, kind="callback.start")
        return len(started) == 1 and started[0].status == "pending" and started[0].attempts >= 1

    await wait_until(waited, what="the start job waiting for the owner")
    row = await c2c.row(call_id)
    assert row is not None and row.state == "new" and c2c.meta_legs() == []
    owner.owner = True
    await c2c.state(call_id, "connected")
    legs = c2c.meta_legs()
    assert len(legs) == 1
    c2c.lab.hangup_meta(legs[0]["id"])
    assert (await c2c.state(call_id, "ended")).status_code == "200"


async def test_bitrix_down_when_the_call_ends_the_log_arrives_once_after(c2c: C2C) -> None:
    c2c.phone.call_permissions[ANSWERS.lstrip("+")] = {"status": "permanent"}
    call_id = await c2c.click(ANSWERS)
    await c2c.state(call_id, "connected")
    c2c.sim.outage = True
    legs = c2c.meta_legs()
    c2c.lab.hangup_meta(legs[0]["id"])
    ended = await c2c.state(call_id, "ended")
    assert ended.status_code == "200"

    async def finish_waiting() -> bool:
        finishing = await jobs(c2c.services.sessions, kind="bitrix.call.finish")
        return len(finishing) == 1 and finishing[0].status == "pending" and finishing[0].attempts >= 1

    await wait_until(finish_waiting, what="the finish tried during the outage")
    assert call_id not in c2c.portal.statistics
    c2c.sim.outage = False
    c2c.services.outbox.wake()
    logged = await wait_until(lambda: c2c.portal.statistics.get(call_id), timeout=60, what="finish after the outage")
    assert logged["CALL_FAILED_CODE"] == "200" and len(c2c.finishes(call_id)) == 1


async def test_wrong_sip_password_is_refused_by_meta_and_said_so(c2c: C2C) -> None:
    """Meta's side challenges for the number's digest credentials: with another password on
    Meta's side (as after a reset) our INVITE is refused and the log says what to fix."""
    c2c.phone.call_permissions[ANSWERS.lstrip("+")] = {"status": "permanent"}
    c2c.lab.add_business_number(BUSINESS, "another-password-0000")
    try:
        call_id = await c2c.click(ANSWERS)
        ended = await c2c.state(call_id, "ended")
        assert ended.status_code == "403" and "digest credentials" in (ended.reason or ""), ended.reason
        assert c2c.meta_legs() == []
    finally:
        c2c.lab.add_business_number(BUSINESS, PASSWORD)


_ = OPERATORS  # the lab's operators (tests/calls/service.py): 101 answers, 104 rings forever
