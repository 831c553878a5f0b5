"""Sign-in for the panel: server-side sessions behind an HttpOnly SameSite cookie, a CSRF token
on every form, and the login throttle the JSON API's Basic auth uses (one count per address).

Sessions live in this process's memory: logging out (or a restart) ends them for good, which a
signed stateless cookie could not do. The JSON API under /api/admin/ keeps HTTP Basic.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from aiohttp import web

from thoth_pbx.core.secrets import constant_time_equal, generate_token
from thoth_pbx.core.validation import FieldError

PANEL = "/panel"
STATIC = PANEL + "/static/"
LOGIN = PANEL + "/login"
SESSION_COOKIE = "thoth_session"
LOGIN_CSRF_COOKIE = "thoth_login_csrf"  # the sign-in form's token, before there is a session
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1000
# no session needed: the sign-in form, the language picker, the stylesheet and script
PUBLIC_PREFIXES = (LOGIN, PANEL + "/lang/", STATIC)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class PanelSession:
    token: str
    user: str
    csrf: str
    expires: float
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) shown once

    def flash(self, text: str, kind: str = "ok") -> None:
        self.flashes.append((kind, text))

    def take_flashes(self) -> list[tuple[str, str]]:
        taken, self.flashes = self.flashes, []
        return taken


SESSION = web.RequestKey("panel_session", PanelSession)


class SessionStore:
    def __init__(self, ttl_s: float = SESSION_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._sessions: OrderedDict[str, PanelSession] = OrderedDict()

    def new(self, user: str) -> PanelSession:
        session = PanelSession(generate_token(32), user, generate_token(32), self._clock() + self.ttl_s)
        self._sessions[session.token] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def get(self, token: str | None) -> PanelSession | None:
        session = self._sessions.get(token or "")
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._sessions[session.token]
            return None
        return session

    def drop(self, token: str) -> None:
        self._sessions.pop(token, None)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a panel path only, never another site."""
    if value and value.startswith(PANEL + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return PANEL + "/"


def set_cookie(response: web.StreamResponse, name: str, value: str, *, secure: bool, max_age: int | None) -> None:
    response.set_cookie(name, value, path=PANEL, httponly=True, samesite="Strict", secure=secure, max_age=max_age)


def csrf_ok(given: object, expected: str) -> bool:
    return isinstance(given, str) and bool(given) and constant_time_equal(given, expected)


def guard(
    store: SessionStore, refuse: Callable[[web.Request, int, str], web.StreamResponse]
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Every /panel page needs a session; every POST needs the session's CSRF token."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not (path == PANEL or path.startswith(PANEL + "/")) or path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        session = store.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            if request.method == "GET":
                raise web.HTTPSeeOther(f"{LOGIN}?next={quote(request.path_qs, safe='/')}")
            return refuse(request, 403, "csrf")
        request[SESSION] = session
        if request.method not in ("GET", "HEAD"):
            form = await request.post()
            if not csrf_ok(form.get("_csrf"), session.csrf):
                return refuse(request, 403, "csrf")
        try:
            return await handler(request)
        except FieldError as exc:  # an unknown id, a refused action: a page, not the API's JSON
            return refuse(request, exc.status, f"{exc.field}: {exc.message}")
        except web.HTTPNotFound:
            return refuse(request, 404, "not-found")

    return middleware
