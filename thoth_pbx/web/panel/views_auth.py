"""Sign in, sign out, the language picker."""

from __future__ import annotations

import logging

from aiohttp import web

from thoth_pbx.core.secrets import constant_time_equal, generate_token
from thoth_pbx.web.panel import i18n
from thoth_pbx.web.panel.auth import (
    LOGIN,
    LOGIN_CSRF_COOKIE,
    PANEL,
    SESSION,
    SESSION_COOKIE,
    SESSION_TTL_S,
    SessionStore,
    csrf_ok,
    safe_next,
    set_cookie,
)
from thoth_pbx.web.panel.deps import PanelDeps
from thoth_pbx.web.panel.render import Pages

log = logging.getLogger(__name__)
LANG_COOKIE_AGE = 365 * 24 * 3600


def auth_routes(deps: PanelDeps, pages: Pages, store: SessionStore) -> list[web.RouteDef]:
    user = deps.settings.admin_user
    expected = f"{user}:{deps.admin_password}"
    secure = deps.secure_cookies

    def login_page(
        request: web.Request, *, error: str | None = None, status: int = 200, name: str = ""
    ) -> web.Response:
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or generate_token(24)
        response = pages.render(
            request,
            "login.html",
            {"login_csrf": token, "next": safe_next(request.query.get("next")), "error": error, "user": name},
            status=status,
        )
        set_cookie(response, LOGIN_CSRF_COOKIE, token, secure=secure, max_age=None)
        return response

    async def show(request: web.Request) -> web.StreamResponse:
        if store.get(request.cookies.get(SESSION_COOKIE)) is not None:
            raise web.HTTPSeeOther(safe_next(request.query.get("next")))
        return login_page(request)

    async def sign_in(request: web.Request) -> web.StreamResponse:
        _ = pages.translator(request)
        form = await request.post()
        address = request.remote or "unknown"
        name = str(form.get("user", ""))
        wait = deps.throttle.retry_after(address)
        if wait is not None:
            response = login_page(
                request,
                error=_("Too many failed sign-ins. Try again in {seconds} s.").format(seconds=wait),
                status=429,
                name=name,
            )
            response.headers["Retry-After"] = str(wait)
            return response
        if not csrf_ok(form.get("_csrf"), request.cookies.get(LOGIN_CSRF_COOKIE, "")):
            return login_page(request, error=_("The form expired. Please sign in again."), status=403, name=name)
        if not constant_time_equal(f"{name}:{form.get('password', '')}", expected):
            failures = deps.throttle.failed(address)
            log.warning(
                "panel login failed", extra={"remote": address, "failures": failures, "user_known": name == user}
            )
            return login_page(request, error=_("Wrong user name or password."), status=401, name=name)
        deps.throttle.succeeded(address)
        session = store.new(user)
        log.info("panel login", extra={"remote": address})
        response = web.HTTPSeeOther(safe_next(str(form.get("next", ""))))
        set_cookie(response, SESSION_COOKIE, session.token, secure=secure, max_age=SESSION_TTL_S)
        response.del_cookie(LOGIN_CSRF_COOKIE, path=PANEL)
        raise response

    async def sign_out(request: web.Request) -> web.StreamResponse:
        store.drop(request[SESSION].token)
        response = web.HTTPSeeOther(LOGIN)
        response.del_cookie(SESSION_COOKIE, path=PANEL)
        raise response

    async def language(request: web.Request) -> web.StreamResponse:
        code = request.match_info["code"]
        response = web.HTTPSeeOther(safe_next(request.query.get("next")))
        if code in pages.languages:
            response.set_cookie(
                i18n.LANG_COOKIE, code, path=PANEL, samesite="Strict", secure=secure, max_age=LANG_COOKIE_AGE
            )
        raise response

    return [
        web.get(LOGIN, show),
        web.post(LOGIN, sign_in),
        web.post(PANEL + "/logout", sign_out),
        web.get(PANEL + "/lang/{code}", language),
    ]
