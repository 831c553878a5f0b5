"""`GET /api/admin/doctor`: every preflight check with its verdict and fix (docs/doctor.md).

Always 200 when the checks ran (the verdicts are the answer, not an HTTP error); the body's
`ok` and `exit_code` are what `thoth-pbx doctor` would exit with.
"""

from __future__ import annotations

from aiohttp import web

from thoth_pbx.features.doctor.service import Doctor


def doctor_routes(doctor: Doctor) -> list[web.RouteDef]:
    async def run(request: web.Request) -> web.Response:
        report = await doctor.run()
        return web.json_response(report.as_json())

    return [web.get("/api/admin/doctor", run)]
