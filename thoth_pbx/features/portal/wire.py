"""The Bitrix24 portal as app.py wires it: install, events, users, per-portal clients."""

from __future__ import annotations

from thoth_pbx.features.deps import Deps, Wired
from thoth_pbx.features.directory import Directory
from thoth_pbx.features.portal.http import portal_admin_routes
from thoth_pbx.features.portal.service import BitrixService
from thoth_pbx.store.changes import TableChanges


def wire(deps: Deps, directory: Directory) -> tuple[BitrixService, Wired]:
    # the events' portal check keeps each portal's key until app_instance changes
    portal_keys = TableChanges(deps.engine, ("app_instance",))
    bitrix = BitrixService(deps.sessions, deps.outbox, deps.settings, changes=portal_keys)
    directory.listeners.append(bitrix.directory_changed)
    return bitrix, Wired(routes=portal_admin_routes(bitrix, deps.sessions), start=bitrix.start, stop=bitrix.stop)
