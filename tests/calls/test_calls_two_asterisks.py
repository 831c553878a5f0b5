"""Two Asterisk servers driven by one thoth-pbx (issue 16, settings `[[asterisk]]`): each gets
the trunk files of its own numbers from thoth-pbx's own apply, each has its Stasis app, a call on
either is announced, answered and logged, and one server's resync never touches the other's live
calls. Two call labs (each: our Asterisk + a Meta side), the Bitrix24 simulator, SQLite."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from tests.calls.lab import SIP_HOSTNAME, CallLab, start_lab, stop_lab
from tests.calls.service import add_waba, bind_event, new_simulator, seed_portal, thoth_environ
from tests.support.bitrix import free_port, wait_until
from thoth_pbx.app import Services, build_app, open_services
from thoth_pbx.clients.asterisk.ari import AriError, basic_auth_header
from thoth_pbx.core.settings import load_settings
from thoth_pbx.features.callback.models import CallbackCall
from thoth_pbx.features.calls.models import Call
from thoth_pbx.features.directory.models import Phone
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Portal
from thoth_pbx.sandbox.bitrix.clicktocall import click_to_call
from thoth_pbx.sandbox.meta import MetaSimulator

NUMBER_A, PASSWORD_A = "+14155550171", "SipSecret-0171-abcdef"
NUMBER_B, PASSWORD_B = "+14155550172", "SipSecret-0172-abcdef"
REGISTER, FINISH = "telephony.externalcall.register", "telephony.externalcall.finish"
TOKEN = "EAAGtwo" + "x" * 30
ANSWERS = "+79991000001"  # a WhatsApp user the labs' Meta sides answer for (lab.CUSTOMERS_BEHAVIOUR)
ADMIN = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}


@pytest.fixture(scope="module")
def labs() -> Iterator[tuple[CallLab, CallLab]]:
    """Two labs with instance names of their own (other tests' labs may run meanwhile); the
    Meta side of each knows only its own number's credentials."""
    first, second = start_lab("two-a"), start_lab("two-b")
    try:
        first.add_business_number(NUMBER_A, PASSWORD_A)
        second.add_business_number(NUMBER_B, PASSWORD_B)
        yield first, second
    finally:
        stop_lab(first)
        stop_lab(second)


def _toml(table: dict[str, Any]) -> str:
    """An inline TOML table; None (which TOML lacks) is "" (the trunk's "leave the option out")."""
    return "{ " + ", ".join(f"{k} = {json.dumps('' if v is None else v)}" for k, v in table.items()) + " }"


@dataclass
class TwoServers:
    services: Services
    client: TestClient
    sim: BitrixSimulator
    portal: Portal
    meta: MetaSimulator

    def bitrix(self, linkedid: str) -> list[str]:
        """The methods Bitrix24 executed for one call, in order."""
        call_ids: set[str] = set()
        out = []
        for entry in self.sim.recorder.entries:
            params = entry.params
            if entry.ok and entry.method == REGISTER and params.get("EXTERNAL_CALL_ID") == linkedid:
                call_ids.add(str((entry.result or {}).get("CALL_ID")))
                out.append(entry.method)
            elif entry.ok and str(params.get("CALL_ID")) in call_ids:
                out.append(entry.method)
        return out

    async def callback(self, call_id: str, state: str) -> CallbackCall | None:
        """The click-to-call of Bitrix24's CALL_ID once in `state`."""
        async with self.services.sessions() as session:
            row = await session.scalar(select(CallbackCall).where(CallbackCall.bitrix_call_id == call_id))
        return row if row is not None and row.state == state else None

    async def row(self, caller: str) -> Call | None:
        async with self.services.sessions() as session:
            return await session.scalar(select(Call).where(Call.caller == caller).order_by(Call.id.desc()))

    async def wait_row(self, caller: str, state: str) -> Call:
        async def check() -> Call | None:
            row = await self.row(caller)
            return row if row is not None and row.state == state else None

        return await wait_until(check, timeout=30, what=f"the call from {caller} {state}")


@pytest.fixture
async def two(tmp_path: Path, labs: tuple[CallLab, CallLab]) -> AsyncIterator[TwoServers]:
    first, second = labs
    b = second.business
    port = free_port()
    sim, portal = await new_simulator()
    meta = MetaSimulator()  # Graph for click-to-call: call permissions
    meta.add_app("twoapp", "two-app-secret-0123456789")
    meta.add_token(TOKEN, "twoapp")
    for pnid, number in (("2001", NUMBER_A), ("2002", NUMBER_B)):
        meta.add_phone(pnid, number, "twowaba", enforce_window=False)
        meta.phones[pnid].call_permissions[ANSWERS.lstrip("+")] = {"status": "permanent"}
    meta_server = TestServer(meta.app())
    await meta_server.start_server()
    # the first lab as every call test has it (ami_url, ari_url, asterisk_config_dir from the
    # environment), the second as an [[asterisk]] table of the config file
    environ = thoth_environ(tmp_path, first, sim, port=port)
    config = tmp_path / "two.toml"
    config.write_text(
        f"""
asterisk_name = "pbx-a"
trunk = {_toml(first.trunk_settings())}

[[asterisk]]
name = "pbx-b"
ami_url = "tcp://{b.ami_user}:{b.ami_secret}@{b.host}:{b.ami_port}"
ari_url = "http://{b.ari_user}:{b.ari_password}@{b.host}:{b.http_port}"
config_dir = "{b.config_dir}"
trunk = {_toml(second.trunk_settings())}
"""
    )
    environ |= {
        "THOTH_CONFIG": str(config),
        "THOTH_ARI_APP": "thoth-two",
        "THOTH_META_GRAPH_URL": str(meta_server.make_url("")).rstrip("/"),
    }
    services = await open_services(load_settings(None, environ=environ))
    calls = {"ring_group": ["101"], "record": False, "responsible_first_seconds": 0}
    instance_id = await seed_portal(services, sim, portal, calls)
    async with services.sessions() as session, session.begin():
        waba = await add_waba(session, "Two", TOKEN)
        for number, password, server, pnid in (
            (NUMBER_A, PASSWORD_A, None, "2001"),
            (NUMBER_B, PASSWORD_B, "pbx-b", "2002"),
        ):
            session.add(
                Phone(
                    number=number,
                    phone_number_id=pnid,
                    waba_account_id=waba.id,
                    app_instance_id=instance_id,
                    sip_enabled=True,
                    sip_user_password=password,
                    sip_hostname=SIP_HOSTNAME,  # the From host Meta's side wants on our INVITEs
                    asterisk=server,
                )
            )
    bind_event(portal, "ONEXTERNALCALLSTART", port)
    client = TestClient(TestServer(build_app(services), host="127.0.0.1", port=port))
    await client.start_server()
    try:
        yield TwoServers(services, client, sim, portal, meta)
    finally:
        await client.close()
        await sim.stop()
        await meta_server.close()


async def apply_both(two: TwoServers, labs: tuple[CallLab, CallLab]) -> None:
    """thoth-pbx's own apply, one server after the other (a new TLS transport: then a restart)."""
    for link in two.services.asterisks:
        await link.ami.wait_connected(15)
    for query in ("", "?asterisk=pbx-b"):
        resp = await two.client.post(f"/api/admin/pbx/apply{query}", headers=ADMIN)
        body = await resp.json()
        assert resp.status == 200 and body["result"] in ("applied", "restart_required", "unchanged"), body
    for lab in labs:
        lab.business.restart()

    async def ours_on_both() -> bool:
        """Our applications registered on each restarted Asterisk (a client may not have
        noticed the restart yet: its own state says nothing)."""
        for link in two.services.asterisks:
            try:
                apps = {app["name"] for app in await link.ari.request("GET", "/applications")}
            except AriError:
                return False
            if not {"thoth-two", "thoth-two-callback"} <= apps:
                return False
        return True

    await wait_until(ours_on_both, timeout=30, what="the Stasis and click-to-call applications on both servers")


async def test_each_server_gets_its_numbers_trunk_and_carries_its_calls(
    two: TwoServers, labs: tuple[CallLab, CallLab]
) -> None:
    first, second = labs
    await apply_both(two, labs)
    for lab, mine, other in ((first, NUMBER_A, NUMBER_B), (second, NUMBER_B, NUMBER_A)):
        written = (lab.business.config_dir / "pjsip_thoth.conf").read_text()
        assert mine.lstrip("+") in written and other.lstrip("+") not in written
    resp = await two.client.get("/api/admin/pbx/revisions?asterisk=pbx-b", headers=ADMIN)
    assert [r["result"] for r in (await resp.json())["items"]] in (["applied"], ["restart_required"])

    placed_a = first.whatsapp_call(NUMBER_A, "+79990000171")
    placed_b = second.whatsapp_call(NUMBER_B, "+79990000172")
    call_a = await two.wait_row("+79990000171", "connected")
    call_b = await two.wait_row("+79990000172", "connected")
    assert (call_a.asterisk, call_a.called, call_a.answered_by_extension) == (None, NUMBER_A, "101")
    assert (call_b.asterisk, call_b.called, call_b.answered_by_extension) == ("pbx-b", NUMBER_B, "101")
    assert [c["id"] for c in second.business_channels() if c["id"] == call_b.channel_id]  # on its own server

    # the first server's resync (as after its ARI reconnects) leaves the other server's live call alone
    await two.services.stasis_apps[0].calls.resync()
    assert (await two.row("+79990000172")).state == "connected"  # type: ignore[union-attr]
    assert FINISH not in two.bitrix(call_b.linkedid)

    first.hangup_meta(placed_a["meta_channel"])
    second.hangup_meta(placed_b["meta_channel"])
    for call in (call_a, call_b):
        await wait_until(lambda c=call: two.bitrix(c.linkedid)[-1:] == [FINISH], timeout=30, what="the finish")
        assert two.bitrix(call.linkedid).count(REGISTER) == 1 and two.bitrix(call.linkedid).count(FINISH) == 1
    ended = [await two.wait_row(caller, "ended") for caller in ("+79990000171", "+79990000172")]
    assert [row.status_code for row in ended] == ["200", "200"]
    listed = (await (await two.client.get("/api/admin/calls", headers=ADMIN)).json())["items"]
    assert {c["caller"]: c["asterisk"] for c in listed} == {"+79990000171": None, "+79990000172": "pbx-b"}

    # each lab names itself (the harness sets systemname): the doctor reads both over AMI
    report = await (await two.client.get("/api/admin/doctor", headers=ADMIN)).json()
    [named] = [v for v in report["checks"] if v["check"] == "asterisk.systemname"]
    assert named["status"] == "ok" and "pbx-a thoth-two-a, pbx-b thoth-two-b" in named["message"], named
    health = await (await two.client.get("/healthz")).json()
    assert [(s["name"], s["ari"]["state"]) for s in health["asterisks"]] == [
        ("pbx-a", "connected"),
        ("pbx-b", "connected"),
    ]


async def test_a_click_to_call_is_dialled_by_its_numbers_server(two: TwoServers, labs: tuple[CallLab, CallLab]) -> None:
    first, second = labs
    await apply_both(two, labs)

    call_id, sent = await click_to_call(two.sim, two.portal, user_id=2, phone=ANSWERS, line_number=NUMBER_B.lstrip("+"))
    assert [status for _, status, _ in sent] == [200], sent

    row = await wait_until(lambda: two.callback(call_id, "connected"), timeout=30, what="the click-to-call connected")
    assert row.asterisk == "pbx-b"
    # both legs on the second server; the first server dialled nothing; Meta's side of the second lab took it
    live_b = {c["id"] for c in second.business_channels()}
    assert {row.operator_channel, row.customer_channel} <= live_b
    assert not [c for c in first.business_channels() if c["name"].startswith("PJSIP/wa-")]
    legs = [c for c in second.meta_channels() if c["name"].startswith(f"PJSIP/{NUMBER_B}-")]
    assert len(legs) == 1 and legs[0]["state"] == "Up", legs
    second.hangup_meta(legs[0]["id"])

    done = await wait_until(lambda: two.callback(call_id, "ended"), timeout=30, what="the click-to-call ended")
    assert done.status_code == "200"
    logged = await wait_until(lambda: two.portal.statistics.get(call_id), timeout=20, what="the call logged")
    assert logged["CALL_FAILED_CODE"] == "200"
