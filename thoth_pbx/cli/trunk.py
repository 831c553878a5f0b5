"""`thoth-pbx pbx render|apply|status|restart` and `thoth-pbx calling enable|disable|show|reset-password`:
the WhatsApp trunk on Asterisk and Calling + SIP on Meta (registered from cli/main.py).

Exit codes of `apply`: 0 applied/unchanged, 3 restart required, 1 rolled back or failed,
2 bad settings (the field is named on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from thoth_pbx.core.settings import Settings
from thoth_pbx.core.validation import FieldError

EXIT_BY_RESULT = {"applied": 0, "unchanged": 0, "restart_required": 3, "rolled_back": 1, "failed": 1}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _register_calling(sub)
    pbx = sub.add_parser("pbx", help="the WhatsApp SIP trunk on Asterisk (render, apply, status, restart)")
    pbx.add_argument(
        "--asterisk",
        metavar="NAME",
        help="which configured Asterisk (settings [[asterisk]]; default: the first, asterisk_name)",
    )
    actions = pbx.add_subparsers(dest="pbx_action", required=True, metavar="ACTION")

    render = actions.add_parser("render", help="print the rendered files (passwords masked); writes nothing")
    render.add_argument("--file", choices=("pjsip_thoth.conf", "extensions_thoth.conf"), help="only this file")
    render.set_defaults(func=_cmd_render)

    apply = actions.add_parser("apply", help="write, reload over AMI, verify; roll back if Asterisk refuses")
    apply.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for AMI (default 10)")
    apply.set_defaults(func=_cmd_apply)

    status = actions.add_parser("status", help="AMI, live trunk objects, reachability, last revision, drift (JSON)")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for AMI (default 5)")
    status.set_defaults(func=_cmd_status)

    restart = actions.add_parser("restart", help="restart Asterisk to load transport changes")
    restart.add_argument(
        "--when-convenient",
        action="store_true",
        required=True,
        help="`core restart when convenient`: only once no call is up",
    )
    restart.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for AMI (default 10)")
    restart.set_defaults(func=_cmd_restart)


def _run(
    settings: Settings, body: Callable[[Any], Awaitable[int]], *, ami_timeout: float | None, asterisk: str | None = None
) -> int:
    async def main() -> int:
        from thoth_pbx.app import close_services, open_services
        from thoth_pbx.clients.asterisk.ami import AmiError, AmiNotConnected
        from thoth_pbx.features.trunk.http import pick_server

        services = await open_services(settings)
        try:
            pbx = pick_server(services.pbx_servers, asterisk)
            if ami_timeout is not None and pbx.server.ami is not None:
                pbx.ami.start()
                try:
                    await pbx.ami.wait_connected(ami_timeout)
                except AmiNotConnected as exc:
                    if ami_timeout > 0:
                        print(f"thoth-pbx: {exc}", file=sys.stderr)
            return await body(pbx)
        except FieldError as exc:
            print(f"thoth-pbx: {exc.field}: {exc.message}", file=sys.stderr)
            return 2
        except AmiError as exc:
            print(f"thoth-pbx: AMI: {exc}", file=sys.stderr)
            return 1
        finally:
            await close_services(services)

    return asyncio.run(main())


def _cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    async def body(pbx: Any) -> int:
        rendered = await pbx.render()
        for name, text in rendered.masked().items():
            if args.file in (None, name):
                if args.file is None:
                    print(f"; ===== {name}")
                sys.stdout.write(text)
        for warning in rendered.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        return 0

    return _run(settings, body, ami_timeout=None, asterisk=args.asterisk)


def _cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    async def body(pbx: Any) -> int:
        outcome, revision = await pbx.apply(f"cli:{getpass.getuser()}")
        out = {"revision": revision, **outcome.as_json()}
        diff = out.pop("diff")
        if diff:
            sys.stderr.write(diff)
        print(json.dumps(out, indent=2))
        return EXIT_BY_RESULT.get(outcome.result, 1)

    return _run(settings, body, ami_timeout=args.timeout, asterisk=args.asterisk)


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    async def body(pbx: Any) -> int:
        print(json.dumps(await pbx.status(), indent=2))
        return 0

    return _run(settings, body, ami_timeout=args.timeout, asterisk=args.asterisk)


def _cmd_restart(args: argparse.Namespace, settings: Settings) -> int:
    async def body(pbx: Any) -> int:
        output = await pbx.restart_when_convenient()
        print(output.strip() or "Asterisk will restart once no call is up")
        return 0

    return _run(settings, body, ami_timeout=args.timeout, asterisk=args.asterisk)


def _register_calling(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    calling = sub.add_parser("calling", help="WhatsApp Calling + SIP of a phone on Meta")
    actions = calling.add_subparsers(dest="calling_action", required=True, metavar="ACTION")
    for name, text in (
        ("enable", "enable Calling + SIP (our hostname/port, SDES), read back, store the SIP password"),
        ("disable", "disable Calling and SIP on Meta (Meta keeps the SIP server and password)"),
        ("show", "read Meta's settings, compare with ours, store the SIP password if it changed"),
        ("reset-password", "make Meta issue a new SIP password (clear servers, enable again)"),
    ):
        p = actions.add_parser(name, help=text, description=text)
        p.add_argument("phone", metavar="PHONE", help="E.164 number, Meta phone_number_id or phone id")
        p.set_defaults(func=_cmd_calling)


def _cmd_calling(args: argparse.Namespace, settings: Settings) -> int:
    from thoth_pbx.core.logs import setup_logging

    setup_logging(settings.log_level)  # JSON log lines on stderr, like `serve`; results on stdout
    return asyncio.run(_calling(settings, args.calling_action, args.phone))


async def _calling(settings: Settings, action: str, phone: str) -> int:
    from thoth_pbx.app import close_services, open_services
    from thoth_pbx.core.validation import FieldError
    from thoth_pbx.features.directory.service import PHONES
    from thoth_pbx.features.trunk.calling import CallingFailed

    services = await open_services(settings)
    try:
        try:
            result = await services.calling.run(phone, action)
        except CallingFailed as failed:
            error = failed.result.error or {}
            _print(
                {
                    "ok": False,
                    "error": error,
                    "phone": await services.directory.get(PHONES, failed.result.phone_id, reveal=False),
                }
            )
            print(f"thoth-pbx: Meta refused: {error.get('message')}\n  hint: {error.get('hint')}", file=sys.stderr)
            return 1
        except FieldError as exc:
            print(f"thoth-pbx: {exc.field}: {exc.message}", file=sys.stderr)
            return 2
        _print(
            {
                "ok": result.ok,
                "action": action,
                "meta_settings": result.state,
                "problems": result.problems,
                "phone": await services.directory.get(PHONES, result.phone_id, reveal=False),
            }
        )
        return 0 if result.ok else 1
    finally:
        await services.meta.stop()
        await close_services(services)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
