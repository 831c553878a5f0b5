"""The doctor as app.py wires it: the parts it reads, handed in (it imports no other feature's internals)."""

from __future__ import annotations

from thoth_pbx.clients.meta.graph import GraphClient
from thoth_pbx.features.deps import Deps, Wired
from thoth_pbx.features.doctor.http import doctor_routes
from thoth_pbx.features.doctor.inputs import TokenCheck, TrunkSource
from thoth_pbx.features.doctor.service import Doctor, PortalClients


def wire(
    deps: Deps, trunk: TrunkSource, graph: GraphClient, tokens: TokenCheck, portals: PortalClients
) -> tuple[Doctor, Wired]:
    doctor = Doctor(deps.settings, deps.sessions, deps.ami, trunk, graph, tokens, portals)
    return doctor, Wired(routes=doctor_routes(doctor))
