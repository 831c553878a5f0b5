"""The panel's rules that need no browser: the Secure cookie flag on https, the JSON API kept
on HTTP Basic (a panel session is no API credential), and a complete Russian catalog."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po
from markupsafe import escape
from yarl import URL

from thoth_pbx.clients.asterisk.ari import basic_auth_header
from thoth_pbx.features.calls.models import Call
from thoth_pbx.web.panel import i18n
from thoth_pbx.web.panel.auth import SessionStore, safe_next

PANEL_DIR = Path(i18n.__file__).parent


async def sign_in(service) -> str:  # type: ignore[no-untyped-def]
    """The session's Set-Cookie. The cookies are Secure here (https), so the plain-http test
    client does not send them back by itself: the test does."""
    login = await service.get("/panel/login")
    token = re.search(r'name="_csrf" value="([^"]+)"', await login.text())
    assert token is not None
    resp = await service.post(
        "/panel/login",
        data={"_csrf": token.group(1), "user": "admin", "password": "correct-horse-battery", "next": "/panel/"},
        headers={"Cookie": f"thoth_login_csrf={token.group(1)}"},
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    return resp.headers.getall("Set-Cookie")[0]


async def test_the_session_cookie_is_secure_on_https_and_no_api_credential(service) -> None:  # type: ignore[no-untyped-def]
    """public_url is https://thoth.example.com in these settings (tests/conftest.py)."""
    cookie = await sign_in(service)
    assert cookie.startswith("thoth_session=")
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "samesite"} <= flags and "SameSite=Strict" in cookie and "Path=/panel" in cookie
    # the panel's cookie opens the panel ...
    session = {"Cookie": cookie.split(";")[0]}
    assert (await service.get("/panel/wabas", headers=session, allow_redirects=False)).status == 200
    resp = await service.get("/panel/phones/999", headers=session)
    assert resp.status == 404 and "id: no phone with id 999" in await resp.text()  # a page, not JSON
    resp = await service.get("/panel/no-such-page", headers=session)
    assert resp.status == 404 and "Page not found" in await resp.text()
    # ... but the JSON API keeps HTTP Basic
    resp = await service.get("/api/admin/wabas", headers=session)
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Basic")
    auth = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}
    assert (await service.get("/api/admin/wabas", headers=auth)).status == 200


async def test_root_goes_to_the_panel_and_the_panel_to_sign_in(service) -> None:  # type: ignore[no-untyped-def]
    resp = await service.get("/", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/panel/"
    resp = await service.get("/panel/phones?x=1", allow_redirects=False)
    location = URL(resp.headers["Location"])
    assert resp.status == 303 and location.path == "/panel/login" and location.query["next"] == "/panel/phones?x=1"
    resp = await service.post("/panel/wabas/new", data={"name": "x"}, allow_redirects=False)
    assert resp.status == 403  # a POST without a session is refused, not redirected


def test_every_message_of_the_panel_has_a_russian_translation(tmp_path: Path) -> None:
    """Extracts the messages from the code and templates now (pybabel, as docs/panel.md says) and
    checks the committed Russian catalog has each one: a new string without a translation fails."""
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            str(PANEL_DIR / "babel.cfg"),
            "-o",
            str(pot),
            str(PANEL_DIR),
        ],
        check=True,
        capture_output=True,
    )
    wanted = {(m.context, m.id) for m in read_po(pot.open("rb")) if m.id}
    with (PANEL_DIR / "locale/ru/LC_MESSAGES/messages.po").open("rb") as fh:
        russian = {(m.context, m.id): m.string for m in read_po(fh) if m.id}
    missing = sorted(str(key) for key in wanted if not russian.get(key))
    assert not missing, f"no Russian for: {missing}"
    assert len(wanted) > 200
    catalogs = i18n.load_catalogs()
    assert set(catalogs) == {"en", "ru"}
    assert catalogs["ru"].gettext("Needs your attention") == "Требует вашего внимания"
    assert catalogs["ru"].pgettext("button", "Sign in") == "Войти"


def test_accept_language_order() -> None:
    assert i18n.accepted("de-DE,de;q=0.9,ru;q=0.95,en;q=0.1") == ["de", "ru", "de", "en"]
    assert i18n.accepted("en;q=0, ru") == ["ru"]


def test_sessions_expire_and_sign_in_only_goes_back_into_the_panel() -> None:
    now = [1000.0]
    store = SessionStore(ttl_s=60, clock=lambda: now[0])
    session = store.new("admin")
    assert store.get(session.token) is session and session.csrf != session.token
    now[0] += 59
    assert store.get(session.token) is session
    now[0] += 1
    assert store.get(session.token) is None and store.get(None) is None
    assert safe_next("/panel/phones?x=1") == "/panel/phones?x=1"
    for elsewhere in ("https://evil.example/", "//evil.example/panel/", "/api/admin/wabas", "/panel\\..\\x", None):
        assert safe_next(elsewhere) == "/panel/"


async def test_calls_filter_by_state_date_and_number_and_play_a_kept_recording(service) -> None:  # type: ignore[no-untyped-def]
    """The calls page's own query (the API filters by state only): state, a date range in UTC
    and part of either number; the recording is served only from recordings_dir."""
    settings = service.services.settings
    recordings = Path(settings.recordings_dir)
    recordings.mkdir(parents=True, exist_ok=True)
    (recordings / "kept.wav").write_bytes(b"RIFF0000WAVEfmt ")
    outside = recordings.parent / "elsewhere.wav"
    outside.write_bytes(b"RIFF-not-ours")
    day = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    rows = [
        Call(linkedid="l1", channel_id="c1", caller="+79990000001", called="+15550100001", state="ended",
             started_at=day, status_code="200", bitrix_call_id="externalCall.1", recording_path=str(recordings / "kept.wav")),
        Call(linkedid="l2", channel_id="c2", caller="+79990000002", called="+15550100001", state="ended",
             started_at=day + dt.timedelta(days=2), status_code="304", recording_path=str(outside)),
        Call(linkedid="l3", channel_id="c3", caller="+79990000003", called="+15550100002", state="ringing",
             started_at=day + dt.timedelta(days=2)),
    ]  # fmt: skip
    async with service.services.sessions() as session, session.begin():
        session.add_all(rows)
    ids = [r.id for r in rows]
    cookie = (await sign_in(service)).split(";")[0]
    headers = {"Cookie": cookie}

    async def listed(query: str) -> list[int]:
        resp = await service.get(f"/panel/calls?{query}", headers=headers)
        page = await resp.text()
        return [int(n) for n in re.findall(r'<a href="/panel/calls/(\d+)">', page)]

    assert await listed("") == ids[::-1]
    assert await listed("state=ended") == [ids[1], ids[0]]
    assert await listed("since=2026-12-01") == [ids[2], ids[1]]
    assert await listed("until=2026-11-30") == [ids[0]]
    assert await listed("number=0000003") == [ids[2]]
    assert await listed("number=%2B15550100001&state=ended&since=2026-12-02&until=2026-12-02") == [ids[1]]
    resp = await service.get("/panel/calls?since=30.11.2026", headers=headers)
    assert resp.status == 400 and "must be a date like 2026-12-01" in await resp.text()

    detail = await (await service.get(f"/panel/calls/{ids[0]}", headers=headers)).text()
    assert "externalCall.1" in detail and f'src="/panel/calls/{ids[0]}/recording"' in detail
    resp = await service.get(f"/panel/calls/{ids[0]}/recording", headers=headers)
    assert resp.status == 200 and await resp.read() == b"RIFF0000WAVEfmt "
    resp = await service.get(f"/panel/calls/{ids[1]}/recording", headers=headers)
    assert resp.status == 404  # a path outside recordings_dir is never served
    resp = await service.get(f"/panel/calls/{ids[0]}/recording", allow_redirects=False)
    assert resp.status == 303  # and never without a session: to the sign-in page


async def test_enabling_calling_without_a_sip_hostname_shows_the_error_beside_that_field(service) -> None:  # type: ignore[no-untyped-def]
    """CallingService refuses before asking Meta; the page names the field the admin must fill."""
    auth = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}
    waba = await (
        await service.post("/api/admin/wabas", json={"name": "W", "access_token": "EAAG" + "x" * 20}, headers=auth)
    ).json()
    phone = await (
        await service.post(
            "/api/admin/phones",
            json={"number": "+15550100001", "phone_number_id": "106540352242922", "waba_account_id": waba["id"]},
            headers=auth,
        )
    ).json()
    session = {"Cookie": (await sign_in(service)).split(";")[0]}
    page = await (await service.get(f"/panel/phones/{phone['id']}", headers=session)).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token is not None
    resp = await service.post(
        f"/panel/phones/{phone['id']}/calling", data={"_csrf": token.group(1), "action": "enable"}, headers=session
    )
    page = await resp.text()
    assert resp.status == 400
    beside = re.search(r'id="field-sip_hostname">(.*?)</div>', page, re.S)
    assert beside is not None and "set the SIP hostname of this phone before enabling calling" in beside.group(1)


async def test_the_preflight_page_shows_the_doctors_report(service) -> None:  # type: ignore[no-untyped-def]
    """The panel's preflight page is the doctor's report (the same checks and verdicts as
    GET /api/admin/doctor), failures first, each with its fix."""
    session = {"Cookie": (await sign_in(service)).split(";")[0]}
    auth = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}
    api = await (await service.get("/api/admin/doctor", headers=auth)).json()
    resp = await service.get("/panel/doctor", headers=session)
    assert resp.status == 200
    page = await resp.text()
    rows = re.findall(r'<tr data-check="([^"]+)" data-status="([^"]+)">', page)
    assert sorted(rows) == sorted((c["check"], c["status"]) for c in api["checks"])
    order = {"fail": 0, "warn": 1, "cannot_check": 2, "ok": 3}
    assert [order[status] for _, status in rows] == sorted(order[status] for _, status in rows)
    failing = [c for c in api["checks"] if c["status"] == "fail"]
    assert failing, "this test's set-up has no Asterisk: some checks fail"
    assert all(str(escape(c["fix"])) in page for c in failing)  # as the template escapes it
    assert ("needs your attention" in page) == (not api["ok"])
