"""Composition root: builds the services from settings and wires the aiohttp application.

Only this module (and cli.py) knows every part; the parts know only the interfaces they
are handed. Start-up order: secret key -> database + migrations -> HTTP routes; AMI and
ARI connect in the background so the service is up (and says so in /healthz) even while
Asterisk is not.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from aiohttp import web
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from thoth_pbx import __version__
from thoth_pbx.features.portal.http import bitrix_routes
from thoth_pbx.features.calls.http import calls_routes
from thoth_pbx.web.login_throttle import LoginThrottle
from thoth_pbx.web.http import admin_auth, crud_routes, json_errors
from thoth_pbx.features.directory.http_meta import meta_routes
from thoth_pbx.outbox.http import outbox_routes
from thoth_pbx.features.trunk.http import pbx_routes
from thoth_pbx.features.portal.jobs import KIND_REGISTER
from thoth_pbx.features.portal.service import BitrixService
from thoth_pbx.features.directory.service import Directory
from thoth_pbx.core.logs import register_secret
from thoth_pbx.features.directory.whatsapp import MetaService
from thoth_pbx.outbox.queue import Outbox
from thoth_pbx.clients.asterisk.ami import AmiClient
from thoth_pbx.clients.asterisk.ari import AriClient
from thoth_pbx.features.calls.notifier import BitrixCallNotifier, store_bitrix_call_id
from thoth_pbx.features.calls.stasis import StasisCalls
from thoth_pbx.features.trunk.service import PbxService
from thoth_pbx.features.trunk.render import DEFAULTS as TRUNK_DEFAULTS
from thoth_pbx.core.secrets import SecretBox, generate_token, open_key
from thoth_pbx.core.settings import Settings, SettingsError
from thoth_pbx.store import db
from thoth_pbx.store.changes import TableChanges
from thoth_pbx.store.health import database_health
from thoth_pbx.store.keycheck import stored_secret_sample
from thoth_pbx.store.sqlite_inline import Checkpointer
from thoth_pbx.store.types import install_secret_box

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
    pbx: PbxService
    admin_password_generated: bool = False  # made by this start: the banner shows it once
    checkpointer: Checkpointer | None = None  # inline SQLite only (store/sqlite_inline.py)


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
            raise SettingsError("database_url", f"the database cannot be read: {db.describe_error(exc)}"
                                                f"{db.file_hint(engine)}") from None
        box = SecretBox(open_key(settings.secret_key_file, sample))
        install_secret_box(box)
        try:
            await db.upgrade(engine, revision)
        except DBAPIError as exc:
            raise SettingsError("database_url", f"the database cannot be migrated: {db.describe_error(exc)}"
                                                f"{db.file_hint(engine)}") from None
    except BaseException:
        await engine.dispose()
        raise
    return engine, box


async def open_services(settings: Settings) -> Services:
    engine, box = await open_database(settings)
    admin_password, generated = resolve_admin_password(settings)
    register_secret(admin_password)
    for value in (settings.bitrix_client_secret,):
        register_secret(value)
    sessions = db.session_factory(engine)
    meta = MetaService(engine=engine, sessions=sessions, box=box, graph_url=settings.meta_graph_url,
                       api_version=settings.meta_api_version, public_url=settings.public_url)
    directory = Directory(sessions, presenters=meta.presenters())
    directory.listeners.append(meta.accounts.invalidate)
    outbox = Outbox(sessions)
    bitrix = BitrixService(sessions, outbox, settings)
    directory.listeners.append(bitrix.directory_changed)
    ami = AmiClient(settings.ami)
    ari = AriClient(settings.ari, settings.ari_app)
    notifier = BitrixCallNotifier(sessions, bitrix.calls, bitrix.portals, settings.calls)
    outbox.set_on_done(KIND_REGISTER, store_bitrix_call_id)
    # what a call context is copied from: phone, portal (settings, status), user map
    context_changes = TableChanges(engine, ("phone", "app_instance", "bitrix_user"))
    calls = StasisCalls(ari, sessions, notifier, recordings_dir=settings.recordings_dir, changes=context_changes,
                        endpoint_prefix=f"PJSIP/{settings.trunk.get('endpoint_name', TRUNK_DEFAULTS.endpoint_name)}")
    ari.on_event = calls.on_event
    ari.on_connect = calls.resync
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        secret_box=box,
        directory=directory,
        meta=meta,
        outbox=outbox,
        bitrix=bitrix,
        ami=ami,
        ari=ari,
        calls=calls,
        pbx=PbxService(settings, sessions, ami),
        checkpointer=db.checkpointer(engine),
        admin_password=admin_password,
        admin_password_generated=generated,
    )


async def start_background(services: Services) -> None:
    if services.checkpointer is not None:
        services.checkpointer.start()
    services.ami.start()
    services.ari.start()
    services.meta.start()
    services.outbox.start()
    services.bitrix.start()


async def stop_background(services: Services) -> None:
    """Stop in reverse order; calls live on in Asterisk and are re-attached at the next start."""
    await services.calls.stop()
    await services.ari.stop()
    await services.outbox.stop()
    await services.bitrix.stop()
    await services.meta.stop()
    await services.ami.stop()
    if services.checkpointer is not None:
        await services.checkpointer.stop()


async def close_services(services: Services) -> None:
    await stop_background(services)
    await services.engine.dispose()


async def healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    database = await database_health(services.engine, services.secret_box)
    body = {
        "version": __version__,
        "database": database,
        "ami": services.ami.status.as_json(),
        "ari": services.ari.status.as_json(),
    }
    ok = database["state"] == "ok"
    ready = ok and all(body[k]["state"] in ("connected", "disabled") for k in ("ami", "ari"))
    body["status"] = "ok" if ready else ("degraded" if ok else "down")
    return web.json_response(body, status=200 if ok else 503)


def build_app(services: Services, login_throttle: LoginThrottle | None = None) -> web.Application:
    """The aiohttp application around already opened services; closes them on cleanup."""
    settings = services.settings
    app = web.Application(
        client_max_size=4 * 1024 * 1024,
        middlewares=[json_errors, admin_auth(settings.admin_user, services.admin_password, login_throttle)],
    )
    app[SERVICES] = services
    app.router.add_get("/healthz", healthz)
    app.router.add_routes(crud_routes(services.directory))
    app.router.add_routes(pbx_routes(services.pbx, settings.admin_user))
    app.router.add_routes(meta_routes(services.meta, services.directory))
    app.router.add_routes(outbox_routes(services.outbox) + bitrix_routes(services.bitrix, services.sessions))
    app.router.add_routes(calls_routes(services.sessions))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await start_background(services)
        yield
        await close_services(services)

    app.cleanup_ctx.append(lifecycle)
    return app
