"""The panel's rules that need no browser: the Secure cookie flag on https, the JSON API kept
on HTTP Basic (a panel session is no API credential), and a complete Russian catalog."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po
from yarl import URL

from thoth_pbx.clients.asterisk.ari import basic_auth_header
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
