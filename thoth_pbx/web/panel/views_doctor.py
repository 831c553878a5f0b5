"""The preflight page: the doctor's checks (features/doctor), the same report as
`thoth-pbx doctor` and `GET /api/admin/doctor`, run when the admin opens the page."""

from __future__ import annotations

from aiohttp import web

from thoth_pbx.web.panel.auth import PANEL
from thoth_pbx.web.panel.deps import PanelDeps
from thoth_pbx.web.panel.render import Pages


def doctor_routes(deps: PanelDeps, pages: Pages) -> list[web.RouteDef]:
    async def doctor(request: web.Request) -> web.Response:
        if deps.doctor is None:
            raise web.HTTPNotFound()
        report = (await deps.doctor.run()).as_json()
        # what needs the admin first: failures, then warnings, then what cannot be known, then ok
        order = {"fail": 0, "warn": 1, "cannot_check": 2, "ok": 3}
        checks = sorted(report["checks"], key=lambda c: order.get(c["status"], 4))
        return pages.render(request, "doctor.html", {"nav": "doctor", "report": report, "checks": checks})

    return [web.get(PANEL + "/doctor", doctor)]
