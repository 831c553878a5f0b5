"""The doctor as app.py wires it: the parts it reads, handed in (it imports no other feature's internals)."""

from __future__ import annotations

from collections.abc import Sequence

from thoth_pbx.clients.meta.graph import GraphClient
from thoth_pbx.features.deps import Deps, Wired
from thoth_pbx.features.doctor.http import doctor_routes
from thoth_pbx.features.doctor.inputs import TokenCheck, TrunkSource
from thoth_pbx.features.doctor.service import Doctor, PortalClients


def wire(
    deps: Deps, trunks: Sequence[TrunkSource], graph: GraphClient, tokens: TokenCheck, portals: PortalClients
) -> tuple[Doctor, Wired]:
    """`trunks`: each configured Asterisk's trunk, in the order of `deps.asterisks`."""
    first, *more = trunks
    others = [(link.server, link.ami, trunk) for link, trunk in zip(deps.more_asterisks, more, strict=True)]
    doctor = Doctor(deps.settings, deps.sessions, deps.ami, first, graph, tokens, portals, more=others)
    return doctor, Wired(routes=doctor_routes(doctor))
