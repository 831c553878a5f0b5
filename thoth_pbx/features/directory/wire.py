"""The directory as app.py wires it: accounts, phones, instances, and the Meta side they own."""

from __future__ import annotations

from thoth_pbx.features.deps import Deps, Wired
from thoth_pbx.features.directory.http import crud_routes
from thoth_pbx.features.directory.http_tokens import token_routes
from thoth_pbx.features.directory.service import Directory
from thoth_pbx.features.directory.whatsapp import MetaService


def wire(deps: Deps) -> tuple[Directory, MetaService, Wired]:
    settings = deps.settings
    meta = MetaService(
        engine=deps.engine,
        sessions=deps.sessions,
        box=deps.box,
        graph_url=settings.meta_graph_url,
        api_version=settings.meta_api_version,
        public_url=settings.public_url,
        inbox_sweep_seconds=settings.inbox_sweep_seconds,
    )
    directory = Directory(
        deps.sessions, presenters=meta.presenters(), asterisks=tuple(s.name for s in settings.asterisks)
    )
    directory.listeners.append(meta.accounts.invalidate)
    part = Wired(routes=[*crud_routes(directory), *token_routes(meta, directory)], start=meta.start, stop=meta.stop)
    return directory, meta, part
