"""The admin web panel (`/panel/`): pages over the same services and validation as the JSON API.

aiohttp + Jinja templates, a little progressive JavaScript served by us (no CDN, no build),
English and Russian message catalogs. See docs/panel.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from thoth_pbx.web.panel.auth import STATIC, SessionStore, guard
from thoth_pbx.web.panel.deps import PanelDeps
from thoth_pbx.web.panel.render import Pages
from thoth_pbx.web.panel.views_auth import auth_routes
from thoth_pbx.web.panel.views_dashboard import dashboard_routes
from thoth_pbx.web.panel.views_doctor import doctor_routes
from thoth_pbx.web.panel.views_lists import list_routes
from thoth_pbx.web.panel.views_phones import phone_routes
from thoth_pbx.web.panel.views_trunk import trunk_routes
from thoth_pbx.web.panel.views_wabas import waba_routes

__all__ = ["Panel", "PanelDeps", "panel"]

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class Panel:
    routes: list[web.AbstractRouteDef]
    middleware: Callable[..., Awaitable[web.StreamResponse]]


def panel(deps: PanelDeps) -> Panel:
    pages = Pages()
    store = SessionStore()

    def refuse(request: web.Request, status: int, reason: str) -> web.StreamResponse:
        return pages.render(request, "refused.html", {"reason": reason, "nav": ""}, status=status)

    routes: list[web.AbstractRouteDef] = [
        *auth_routes(deps, pages, store),
        *dashboard_routes(deps, pages),
        *waba_routes(deps, pages),
        *phone_routes(deps, pages),
        *trunk_routes(deps, pages),
        *list_routes(deps, pages),
        *doctor_routes(deps, pages),
        web.static(STATIC.rstrip("/"), STATIC_DIR),
    ]
    return Panel(routes=routes, middleware=guard(store, refuse))
