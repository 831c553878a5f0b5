"""Composition root: builds the services from settings and wires the aiohttp application.

Only this module (and cli.py) knows every part; the parts know only the interfaces they
are handed. Start-up order: secret key -> database + migrations -> HTTP routes; AMI and
ARI connect in the background so the service is up (and says so in /healthz) even while
Asterisk is not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from thoth_pbx.clients.asterisk.ami import AmiClient
from thoth_pbx.clients.asterisk.ari import AriClient

# Every table, so `Base.metadata` is whole before the key check and the service start (the
# tables live with their owners; store/ knows none of them).
from thoth_pbx.clients.meta import tables as _inbox_tables  # noqa: E402,F401
from thoth_pbx.core.logs import register_secret
from thoth_pbx.core.secrets import SecretBox, generate_token, open_key
from thoth_pbx.core.settings import Settings, SettingsError
from thoth_pbx.features.callback import models as _callback_models  # noqa: E402,F401
from thoth_pbx.features.callback import wire as callback_feature
from thoth_pbx.features.calls import models as _calls_models  # noqa: E402,F401
from thoth_pbx.features.calls import wire as calls_feature
from thoth_pbx.features.calls.callflow import CallSettings
from thoth_pbx.features.calls.jobs import CallJobs
from thoth_pbx.features.calls.leadership import StasisOwnership
from thoth_pbx.features.calls.stasis import StasisCalls
from thoth_pbx.features.calls.wire import StasisApp
from thoth_pbx.features.customers import models as _customer_models  # noqa: E402,F401
from thoth_pbx.features.customers import wire as customers_feature
from thoth_pbx.features.deps import AsteriskLink, Deps, Wired
from thoth_pbx.features.directory import models as _directory_models  # noqa: E402,F401
from thoth_pbx.features.directory import wire as directory_feature
from thoth_pbx.features.directory.service import PHONES, Directory
from thoth_pbx.features.directory.whatsapp import MetaService
from thoth_pbx.features.doctor import wire as doctor_feature
from thoth_pbx.features.doctor.service import Doctor
from thoth_pbx.features.messaging import models as _messaging_models  # noqa: E402,F401
from thoth_pbx.features.messaging import wire as messaging_feature
from thoth_pbx.features.messaging.lines import MessagingLines
from thoth_pbx.features.messaging.settings import MessagingSettings
from thoth_pbx.features.messaging.wire import Messaging
from thoth_pbx.features.portal import models as _portal_models  # noqa: E402,F401
from thoth_pbx.features.portal import wire as portal_feature
from thoth_pbx.features.portal.service import BitrixService
from thoth_pbx.features.trunk import models as _trunk_models  # noqa: E402,F401
from thoth_pbx.features.trunk import wire as trunk_feature
from thoth_pbx.features.trunk.calling import CallingService
from thoth_pbx.features.trunk.service import PbxService
from thoth_pbx.outbox import models as _outbox_models  # noqa: E402,F401
from thoth_pbx.outbox.http import outbox_routes
from thoth_pbx.outbox.queue import Outbox
from thoth_pbx.store import db
from thoth_pbx.store import setting as _setting  # noqa: E402,F401
from thoth_pbx.store.changes import ChangeListener
from thoth_pbx.store.keycheck import stored_secret_sample
from thoth_pbx.store.sqlite_inline import Checkpointer
from thoth_pbx.store.types import install_secret_box
from thoth_pbx.web.bitrix_webhook import bitrix_webhook_routes
from thoth_pbx.web.health import AsteriskHealth, health_routes
from thoth_pbx.web.http import admin_auth, json_errors
from thoth_pbx.web.login_throttle import LoginThrottle
from thoth_pbx.web.meta_webhook import meta_webhook_routes
from thoth_pbx.web.metrics import metrics_routes
from thoth_pbx.web.panel import PanelDeps, panel

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    secret_box: SecretBox
    directory: Directory
    ami: AmiClient
    ari: AriClient
    admin_password: str
    meta: MetaService
    outbox: Outbox
    bitrix: BitrixService
    calls: StasisCalls
    call_jobs: CallJobs
    calling: CallingService  # Calling + SIP on Meta (features/trunk)
    messaging: MessagingLines  # Open Lines of each WhatsApp number (features/messaging)
    messaging_parts: Messaging  # the lines, templates, 24-hour windows and the SMS provider
    pbx: PbxService
    admin_password_generated: bool = False  # made by this start: the banner shows it once
    checkpointer: Checkpointer | None = None  # inline SQLite only (store/sqlite_inline.py)
    parts: list[Wired] = field(default_factory=list)  # started in order, stopped in reverse
    stasis_owner: StasisOwnership | None = None  # holds or waits for the Stasis app (ARI configured)
    # every configured Asterisk (settings `[[asterisk]]`), the first one first: its clients, its
    # trunk, its Stasis app; `ami`, `ari`, `pbx`, `calls` and `stasis_owner` are the first one's
    asterisks: tuple[AsteriskLink, ...] = ()
    pbx_servers: dict[str, PbxService] = field(default_factory=dict)
    stasis_apps: list[StasisApp] = field(default_factory=list)
    doctor: Doctor | None = None  # the preflight checks (API, CLI and panel)


SERVICES = web.AppKey("services", Services)


def resolve_admin_password(settings: Settings) -> tuple[str, bool]:
    """The configured admin password, or one generated once and kept in a 0600 file."""
    if settings.admin_password:
        return settings.admin_password, False
    path: Path = settings.admin_password_file
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    password = generate_token(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password, True


async def open_database(settings: Settings, revision: str = "heads") -> tuple[AsyncEngine, SecretBox]:
    """The engine and the key, checked against each other before anything is written: a key file
    that cannot read the stored secrets (lost, replaced) stops here, the database untouched, and a
    new key is made only for a database with no secret in it. An unreadable database file is one
    line naming `database_url`, not a traceback."""
    engine = db.create_engine(settings.database_url)
    try:
        try:
            sample = await stored_secret_sample(engine)
        except DBAPIError as exc:
            raise SettingsError(
                "database_url", f"the database cannot be read: {db.describe_error(exc)}{db.file_hint(engine)}"
            ) from None
        box = SecretBox(open_key(settings.secret_key_file, sample))
        install_secret_box(box)
        try:
            await db.upgrade(engine, revision)
        except DBAPIError as exc:
            raise SettingsError(
                "database_url", f"the database cannot be migrated: {db.describe_error(exc)}{db.file_hint(engine)}"
            ) from None
    except BaseException:
        await engine.dispose()
        raise
    return engine, box


async def open_services(settings: Settings) -> Services:
    # the tables features validate themselves: checked before the database is touched
    CallSettings.from_json(settings.calls)
    MessagingSettings.from_json(settings.messaging)
    engine, box = await open_database(settings)
    admin_password, generated = resolve_admin_password(settings)
    register_secret(admin_password)
    for value in (settings.bitrix_client_secret,):
        register_secret(value)
    sessions = db.session_factory(engine)
    deps = Deps(
        settings=settings,
        engine=engine,
        sessions=sessions,
        box=box,
        outbox=Outbox(sessions, name=settings.instance_name, lease=settings.outbox_lease_seconds),
        ami=AmiClient(settings.ami),
        ari=AriClient(settings.ari, settings.ari_app),
        more_asterisks=tuple(
            AsteriskLink(server, AmiClient(server.ami), AriClient(server.ari, settings.ari_app))
            for server in settings.more_asterisks
        ),
    )
    directory, meta, directory_part = directory_feature.wire(deps)
    bitrix, portal_part = portal_feature.wire(deps, directory)
    pbx_servers, calling, trunk_part = trunk_feature.wire(
        deps, meta.graph, lambda phone_id: directory.get(PHONES, phone_id)
    )
    pbx = next(iter(pbx_servers.values()))
    stasis_apps, call_jobs, calls_part = calls_feature.wire(deps, bitrix.portals, trunk_feature.endpoint_prefix(deps))
    calls, stasis_owner = stasis_apps[0].calls, stasis_apps[0].owner
    messaging_parts, messaging_part = messaging_feature.wire(deps, directory, bitrix, meta.dispatcher, meta.graph)
    customers_part = customers_feature.wire(deps)
    _callback, callback_part = callback_feature.wire(
        deps,
        bitrix,
        call_jobs,
        meta.graph,
        meta.dispatcher,
        messaging_parts.windows.last_inbound,
        [stasis.owner for stasis in stasis_apps],
        messaging_parts.templates.of_account,  # the permission template is checked against them
    )
    doctor, doctor_part = doctor_feature.wire(
        deps, list(pbx_servers.values()), meta.graph, meta.tokens.check, bitrix.portals
    )
    checkpointer = db.checkpointer(engine)
    change_listener = ChangeListener.for_engine(engine)  # PostgreSQL: other instances' writes
    outbox = deps.outbox
    # Started in this order, stopped in reverse: the outbox stops before the portal clients it
    # uses close, and the calls stop (their tasks cancelled; the calls live on in Asterisk and
    # are re-attached at the next start) before ARI does. The calls part connects ARI while this
    # instance owns the Stasis app (features/calls/leadership.py: one owner per Asterisk).
    lifecycle = [
        Wired(start=checkpointer.start, stop=checkpointer.stop) if checkpointer else Wired(),
        Wired(start=change_listener.start, stop=change_listener.stop) if change_listener else Wired(),
        *(Wired(start=link.ami.start, stop=link.ami.stop) for link in deps.asterisks),
        directory_part,
        portal_part,
        Wired(start=outbox.start, stop=outbox.stop),
        trunk_part,
        calls_part,
        callback_part,  # click-to-call: its own ARI application (after the outbox it enqueues on)
        messaging_part,
        doctor_part,  # routes only (GET /api/admin/doctor)
        customers_part,  # routes only (GET /api/admin/customers)
    ]
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        secret_box=box,
        directory=directory,
        meta=meta,
        outbox=outbox,
        bitrix=bitrix,
        ami=deps.ami,
        ari=deps.ari,
        calls=calls,
        call_jobs=call_jobs,
        calling=calling,
        messaging=messaging_parts.lines,
        messaging_parts=messaging_parts,
        pbx=pbx,
        checkpointer=checkpointer,
        admin_password=admin_password,
        admin_password_generated=generated,
        parts=lifecycle,
        stasis_owner=stasis_owner,
        doctor=doctor,
        asterisks=deps.asterisks,
        pbx_servers=pbx_servers,
        stasis_apps=stasis_apps,
    )


async def start_background(services: Services) -> None:
    for part in services.parts:
        part.start()


async def stop_background(services: Services) -> None:
    for part in reversed(services.parts):
        await part.stop()


async def close_services(services: Services) -> None:
    await stop_background(services)
    await services.engine.dispose()


def build_app(services: Services, login_throttle: LoginThrottle | None = None) -> web.Application:
    """The aiohttp application around already opened services; closes them on cleanup."""
    settings = services.settings
    throttle = login_throttle or LoginThrottle()  # one count of failed logins: API and panel
    owners_of = {stasis.asterisk: stasis.owner for stasis in services.stasis_apps}
    servers = [
        AsteriskHealth(
            link.server.name,
            link.ami,
            link.ari,
            owner.status if (owner := owners_of.get(link.server.name)) is not None else None,
        )
        for link in services.asterisks
    ]
    admin_panel = panel(
        PanelDeps(
            settings=settings,
            engine=services.engine,
            sessions=services.sessions,
            box=services.secret_box,
            admin_password=services.admin_password,
            throttle=throttle,
            directory=services.directory,
            meta=services.meta,
            outbox=services.outbox,
            bitrix=services.bitrix,
            calling=services.calling,
            messaging=services.messaging,
            pbx=services.pbx,
            ami=services.ami,
            ari=services.ari,
            stasis=services.stasis_owner.status if services.stasis_owner else None,
            doctor=services.doctor,
            pbx_servers=services.pbx_servers,
            asterisks=servers,
        )
    )
    app = web.Application(
        client_max_size=4 * 1024 * 1024,
        middlewares=[
            json_errors,
            admin_auth(settings.admin_user, services.admin_password, throttle),
            admin_panel.middleware,  # sessions + CSRF for /panel/ (`/` redirects there)
        ],
    )
    app[SERVICES] = services
    app.router.add_routes(health_routes(services.engine, services.secret_box, servers))
    app.router.add_routes(meta_webhook_routes(services.meta.webhook))
    app.router.add_routes(bitrix_webhook_routes(services.bitrix.app))
    app.router.add_routes(outbox_routes(services.outbox, services.sessions))
    elected = [stasis.owner for stasis in services.stasis_apps if stasis.owner is not None]
    owners = (lambda: {owner.asterisk: owner.owner for owner in elected}) if elected else None
    links = [(link.server.name, link.ami, link.ari) for link in services.asterisks]
    app.router.add_routes(metrics_routes(services.sessions, links, owners))
    for part in services.parts:
        app.router.add_routes(part.routes)
    app.router.add_routes(admin_panel.routes)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await start_background(services)
        yield
        await close_services(services)

    app.cleanup_ctx.append(lifecycle)
    return app
