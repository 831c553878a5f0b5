"""`thoth-pbx ...` entry point. Every subcommand has --help; settings errors are one line."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from thoth_pbx import __version__
from thoth_pbx.core.settings import Settings, SettingsError, load_settings, redact_url
from thoth_pbx.core.validation import FieldError

Command = Callable[[argparse.Namespace, Settings], int]


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from thoth_pbx.core.logs import setup_logging

    setup_logging(settings.log_level)
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    from aiohttp import web

    from thoth_pbx.app import build_app, open_services

    services = await open_services(settings)
    runner = web.AppRunner(build_app(services), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.listen.host, settings.listen.port)
    await site.start()
    # Everything loaded so far lives as long as the process: out of the collector's way, so
    # the full collections that would scan it (pauses of milliseconds) stay short.
    gc.collect()
    gc.freeze()
    # before the banner: whoever read it may stop us at once, and that must be a clean stop
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    base = settings.public_url
    # The banner goes to stdout for the person who started the service, never to the logs.
    print(f"thoth-pbx {__version__} listening on http://{settings.listen}", flush=True)
    print(f"  panel:      {base}/panel/", flush=True)
    print(f"  admin API:  {base}/api/admin/  (HTTP Basic)", flush=True)
    print(f"  metrics:    {base}/metrics  (HTTP Basic)", flush=True)
    print(f"  health:     {base}/healthz", flush=True)
    if services.admin_password_generated:  # shown once, when it was made; later starts say where it is kept
        print(f"  admin user: {settings.admin_user}  password: {services.admin_password}", flush=True)
        print(f"  (generated once, kept in {settings.admin_password_file})", flush=True)
    elif settings.admin_password is None:
        print(f"  admin user: {settings.admin_user}  password: in {settings.admin_password_file}", flush=True)
    await stop.wait()
    await runner.cleanup()
    return 0


def _cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> None:
        from thoth_pbx.app import open_database
        from thoth_pbx.store import db

        engine, _ = await open_database(settings, args.revision)
        try:
            print("database at revision(s):", ", ".join(sorted(await db.current_revisions(engine))))
        finally:
            await engine.dispose()

    asyncio.run(run())
    return 0


def _cmd_db_current(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        from thoth_pbx.store import db

        engine = db.create_engine(settings.database_url)
        try:
            current = await db.current_revisions(engine)
        finally:
            await engine.dispose()
        heads = db.head_revisions()
        print(json.dumps({"current": sorted(current), "heads": sorted(heads), "up_to_date": current == heads}))
        return 0 if current == heads else 1

    return asyncio.run(run())


def _cmd_config_check(args: argparse.Namespace, settings: Settings) -> int:
    shown: dict[str, Any] = {
        "source": str(settings.source) if settings.source else None,
        "listen": str(settings.listen),
        "public_url": settings.public_url,
        "database_url": redact_url(settings.database_url),
        "ami": str(settings.ami) if settings.ami else None,
        "ari": str(settings.ari) if settings.ari else None,
        "ari_app": settings.ari_app,
        "asterisk_config_dir": str(settings.asterisk_config_dir),
        "asterisk_mode": settings.asterisk_mode,
        "asterisks": [
            {
                "name": server.name,
                "ami": str(server.ami) if server.ami else None,
                "ari": str(server.ari) if server.ari else None,
                "config_dir": str(server.config_dir),
                "mode": server.mode,
            }
            for server in settings.asterisks
        ],
        "meta": f"{settings.meta_graph_url}/{settings.meta_api_version}",
    }
    print(json.dumps(shown, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thoth-pbx",
        description="WhatsApp Business messages and calls into Bitrix24 through your own Asterisk/FreePBX.",
    )
    parser.add_argument("--version", action="version", version=f"thoth-pbx {__version__}")
    parser.add_argument("--config", "-c", help="TOML settings file (default: $THOTH_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the service (HTTP API, webhooks, AMI/ARI)")
    serve.set_defaults(func=_cmd_serve)

    dbp = sub.add_parser("db", help="database schema")
    dbsub = dbp.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dbsub.add_parser("upgrade", help="apply migrations (also done on every start)")
    up.add_argument("revision", nargs="?", default="heads", help="target revision (default: heads)")
    up.set_defaults(func=_cmd_db_upgrade)
    cur = dbsub.add_parser("current", help="show the applied and the latest revisions; exit 1 if behind")
    cur.set_defaults(func=_cmd_db_current)

    cfg = sub.add_parser("config", help="settings")
    cfgsub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = cfgsub.add_parser("check", help="validate the settings and print them (secrets hidden)")
    check.set_defaults(func=_cmd_config_check)

    from thoth_pbx.cli import doctor, sandbox, trunk

    trunk.register(sub)  # pbx render|apply|status|restart, calling enable|disable|show|reset-password
    sandbox.register(sub)  # sandbox meta|meta-webhook|bitrix
    doctor.register(sub)  # doctor [--json]: preflight checks
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        return int(args.func(args, settings))
    except SettingsError as exc:
        print(f"thoth-pbx: {exc}", file=sys.stderr)
        return 2
    except FieldError as exc:  # a settings table its feature validates at start ([calls], [messaging])
        print(f"thoth-pbx: setting {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
