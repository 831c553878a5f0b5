"""The WhatsApp trunk as app.py wires it: render/apply/status on Asterisk, Calling + SIP on Meta."""

from __future__ import annotations

from typing import Any

from thoth_pbx.clients.meta.graph import GraphClient
from thoth_pbx.features.deps import Deps, Wired
from thoth_pbx.features.trunk.calling import CallingService
from thoth_pbx.features.trunk.http import ShowPhone, calling_routes, pbx_routes
from thoth_pbx.features.trunk.render import DEFAULTS
from thoth_pbx.features.trunk.service import PbxService


def wire(deps: Deps, graph: GraphClient, show_phone: ShowPhone) -> tuple[dict[str, PbxService], CallingService, Wired]:
    """Each configured Asterisk's trunk by name, the first server first."""
    servers = {
        link.server.name: PbxService(deps.settings, deps.sessions, link.ami, link.server) for link in deps.asterisks
    }
    calling = CallingService(deps.sessions, graph)
    routes: list[Any] = [*pbx_routes(servers, deps.settings.admin_user), *calling_routes(calling, show_phone)]
    return servers, calling, Wired(routes=routes)


def endpoint_prefix(deps: Deps) -> str:
    """The dial prefix of operators' phones on this PBX: `PJSIP/<trunk endpoint name>`."""
    return f"PJSIP/{deps.settings.trunk.get('endpoint_name', DEFAULTS.endpoint_name)}"
