"""`thoth-pbx sandbox bitrix`: the Bitrix24 simulator as a process (registered from cli.py)."""

from __future__ import annotations

import argparse
import asyncio

from thoth_pbx.cli.meta import _sandbox_group
from thoth_pbx.core.settings import Settings, SettingsError, parse_listen


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sandbox = _sandbox_group(sub)
    bitrix = sandbox.add_parser(
        "bitrix",
        help="run the strict Bitrix24 REST + OAuth simulator",
        description="Serve one simulated portal with its OAuth server; point the service at it with "
                    "THOTH_BITRIX_OAUTH_URL=http://HOST:PORT/oauth/token and the printed client id/secret.",
    )
    bitrix.add_argument("--listen", default="127.0.0.1:8480", help="host:port (default 127.0.0.1:8480)")
    bitrix.add_argument("--client-id", help="OAuth client id (default: THOTH_BITRIX_CLIENT_ID or a sandbox id)")
    bitrix.add_argument("--client-secret", help="OAuth client secret (default: THOTH_BITRIX_CLIENT_SECRET or a sandbox secret)")
    bitrix.add_argument("--rate", type=float, default=2.0, help="leaky bucket drain per second (Enterprise: 5)")
    bitrix.add_argument("--burst", type=int, default=50, help="leaky bucket limit (Enterprise: 250)")
    bitrix.add_argument("--users", default="1:Anna Admin:100,2:Boris Agent:101,3:Vera Agent:102",
                        help="ID:Name:extension,... (UF_PHONE_INNER)")
    bitrix.add_argument("--install-to", metavar="URL",
                        help="after start, install the app like a portal: POST ONAPPINSTALL to this URL "
                             "(e.g. http://127.0.0.1:8080/api/bitrix/install)")
    bitrix.set_defaults(func=_cmd_sandbox_bitrix)


def parse_users(text: str) -> list[tuple[int, str, str | None]]:
    users = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        fields = item.split(":")
        if len(fields) < 2 or not fields[0].isdigit():
            raise SettingsError("users", f"{item!r} must look like ID:Name[:extension]")
        users.append((int(fields[0]), fields[1], fields[2] if len(fields) > 2 and fields[2] else None))
    return users


def _cmd_sandbox_bitrix(args: argparse.Namespace, settings: Settings) -> int:
    listen = parse_listen("listen", args.listen)
    users = parse_users(args.users)
    try:
        asyncio.run(_serve(args, settings, listen.host, listen.port, users))
    except KeyboardInterrupt:
        pass
    return 0


async def _serve(args: argparse.Namespace, settings: Settings, host: str, port: int,
                 users: list[tuple[int, str, str | None]]) -> None:
    from thoth_pbx.sandbox.bitrix import BitrixSimulator, SimUser

    options = {}
    client_id = args.client_id or settings.bitrix_client_id
    client_secret = args.client_secret or settings.bitrix_client_secret
    if client_id:
        options["client_id"] = client_id
    if client_secret:
        options["client_secret"] = client_secret
    sim = BitrixSimulator(**options)
    await sim.start(host, port)
    people = []
    for uid, name, extension in users:
        first, _, last = name.partition(" ")
        people.append(SimUser(uid, first, last, extension))
    portal = sim.add_portal(rate=args.rate, burst=args.burst, users=people)
    print(f"Bitrix24 simulator on {sim.base_url}  (control: {sim.base_url}/_sandbox/state)", flush=True)
    print(f"  THOTH_BITRIX_OAUTH_URL={sim.oauth_url}", flush=True)
    print(f"  THOTH_BITRIX_CLIENT_ID={sim.client_id}", flush=True)
    print(f"  THOTH_BITRIX_CLIENT_SECRET={sim.client_secret}", flush=True)
    print(f"  portal {portal.domain} member_id {portal.member_id}, limit {portal.rate}/s burst {portal.burst}", flush=True)
    if args.install_to:
        status, answer = await sim.install(portal, args.install_to)
        print(f"  install -> {args.install_to}: HTTP {status} {answer}", flush=True)
    try:
        await asyncio.Event().wait()  # until Ctrl-C
    finally:
        await sim.stop()
