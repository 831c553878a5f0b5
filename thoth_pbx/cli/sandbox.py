"""`thoth-pbx sandbox meta|meta-webhook|bitrix`: the Meta and Bitrix24 simulators as processes.

The only product module that imports `thoth_pbx.sandbox` (the import rules allow it here alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from thoth_pbx.core.settings import Settings, SettingsError, parse_listen


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("sandbox", help="simulators of Meta and Bitrix24 for tests and demos")
    sandbox = parser.add_subparsers(dest="sandbox_command", required=True, metavar="SIMULATOR")
    meta = sandbox.add_parser(
        "meta",
        help="run the strict Meta Graph API simulator",
        description="Serve the Meta simulator; point the service at it with THOTH_META_GRAPH_URL=http://HOST:PORT",
    )
    meta.add_argument("--listen", default="127.0.0.1:8900", help="host:port (default 127.0.0.1:8900)")
    meta.set_defaults(func=_cmd_sandbox_meta)

    hook = sandbox.add_parser(
        "meta-webhook",
        help="post signed Meta webhooks to a URL",
        description="Send webhooks exactly as Meta signs them (X-Hub-Signature-256).",
    )
    hook.add_argument("--url", required=True, help="the callback URL shown by the admin API (with ?api-key=)")
    hook.add_argument("--app-secret", required=True, help="the WABA account's app secret")
    hook.add_argument("--waba-id", default="102290129340398")
    hook.add_argument("--phone-number-id", default="106540352242922")
    hook.add_argument("--display-number", default="+15550100001")
    hook.add_argument("--from", dest="sender", default="15551234567", help="the customer's WhatsApp number")
    hook.add_argument(
        "--kind",
        choices=("message", "status", "call", "batch"),
        default="message",
        help="message; status (sent/delivered/read); call (connect + terminate); batch (--count messages in one delivery)",
    )
    hook.add_argument("--text", default="Hello from the sandbox")
    hook.add_argument(
        "--count", type=int, default=1, help="deliveries to send (for batch: messages in the one delivery)"
    )
    hook.add_argument("--duplicate", action="store_true", help="send every delivery twice")
    hook.add_argument("--reorder", action="store_true", help="shuffle the deliveries (e.g. terminate before connect)")
    hook.add_argument("--corrupt-signature", action="store_true", help="send a wrong signature (expect 401)")
    hook.add_argument(
        "--via",
        metavar="META_SIMULATOR_URL",
        help="post through a running Meta simulator (e.g. http://127.0.0.1:8900), so it knows the customer wrote"
        " (the 24-hour window, read marks) as Meta would",
    )
    hook.set_defaults(func=_cmd_sandbox_webhook)

    bitrix = sandbox.add_parser(
        "bitrix",
        help="run the strict Bitrix24 REST + OAuth simulator",
        description="Serve one simulated portal with its OAuth server; point the service at it with "
        "THOTH_BITRIX_OAUTH_URL=http://HOST:PORT/oauth/token and the printed client id/secret.",
    )
    bitrix.add_argument("--listen", default="127.0.0.1:8480", help="host:port (default 127.0.0.1:8480)")
    bitrix.add_argument("--client-id", help="OAuth client id (default: THOTH_BITRIX_CLIENT_ID or a sandbox id)")
    bitrix.add_argument(
        "--client-secret", help="OAuth client secret (default: THOTH_BITRIX_CLIENT_SECRET or a sandbox secret)"
    )
    bitrix.add_argument("--rate", type=float, default=2.0, help="leaky bucket drain per second (Enterprise: 5)")
    bitrix.add_argument("--burst", type=int, default=50, help="leaky bucket limit (Enterprise: 250)")
    bitrix.add_argument(
        "--users",
        default="1:Anna Admin:100,2:Boris Agent:101,3:Vera Agent:102",
        help="ID:Name:extension,... (UF_PHONE_INNER)",
    )
    bitrix.add_argument(
        "--install-to",
        metavar="URL",
        help="after start, install the app like a portal: POST ONAPPINSTALL to this URL "
        "(e.g. http://127.0.0.1:8080/api/bitrix/install)",
    )
    bitrix.add_argument(
        "--webhook",
        metavar="USER_ID[:SCOPE,...]",
        action="append",
        default=[],
        help="create an incoming webhook of this user (default scopes: all the simulator knows) and print its URL; "
        "repeatable (e.g. --webhook 1:user,telephony)",
    )
    bitrix.set_defaults(func=_cmd_sandbox_bitrix)


def _cmd_sandbox_meta(args: argparse.Namespace, settings: Settings) -> int:
    from thoth_pbx.sandbox.meta import Seed, serve

    listen = parse_listen("listen", args.listen)
    seed = Seed()

    def banner() -> None:  # printed once the socket listens
        print(f"Meta simulator on http://{listen}  (control: http://{listen}/_sandbox/state)", flush=True)
        print(f"  THOTH_META_GRAPH_URL=http://{listen}", flush=True)
        print(f"  app id {seed.app_id}, app secret {seed.app_secret}", flush=True)
        print(f"  access token {seed.token}", flush=True)
        print(
            f"  WABA {seed.waba_id}, phone {seed.display_phone_number} (phone_number_id {seed.phone_number_id})",
            flush=True,
        )

    try:
        asyncio.run(serve(listen.host, listen.port, seed, ready=banner))
    except KeyboardInterrupt:
        pass
    return 0


def _cmd_sandbox_webhook(args: argparse.Namespace, settings: Settings) -> int:
    from thoth_pbx.sandbox import meta as sim

    pnid, display, sender = args.phone_number_id, args.display_number, args.sender
    docs: list[dict[str, Any]] = []
    if args.kind == "batch":
        docs.append(sim.delivery(args.waba_id, [sim.messages_change(pnid, display, sender, args.count)]))
    for i in range(args.count if args.kind != "batch" else 0):
        if args.kind == "message":
            docs.append(sim.delivery(args.waba_id, [sim.message_change(pnid, display, sender, args.text)]))
        elif args.kind == "status":
            wamid = f"wamid.sandbox{i}"
            docs.extend(
                sim.delivery(args.waba_id, [sim.status_change(pnid, display, wamid, s, sender)])
                for s in ("sent", "delivered", "read")
            )
        else:
            call_id = f"wacid.sandbox{i}"
            docs.append(sim.delivery(args.waba_id, [sim.call_connect_change(pnid, display, call_id, sender)]))
            docs.append(sim.delivery(args.waba_id, [sim.call_terminate_change(pnid, display, call_id, sender)]))
    flags = {"duplicate": args.duplicate, "reorder": args.reorder, "corrupt_signature": args.corrupt_signature}
    if args.via:
        import httpx

        control = {"url": args.url, "app_secret": args.app_secret, "deliveries": docs, **flags}
        response = httpx.post(args.via.rstrip("/") + "/_sandbox/webhooks", json=control, timeout=60)
        if response.status_code != 200:
            raise SettingsError(
                "via", f"the Meta simulator answered HTTP {response.status_code}: {response.text[:200]}"
            )
        statuses = list(response.json()["statuses"])
    else:
        sender_ = sim.WebhookSender(args.url, args.app_secret)
        statuses = asyncio.run(sender_.send([json.dumps(d).encode() for d in docs], **flags))
    _print({"sent": len(statuses), "statuses": statuses})
    return 0 if all(s == 200 for s in statuses) else 1


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


async def _serve(
    args: argparse.Namespace, settings: Settings, host: str, port: int, users: list[tuple[int, str, str | None]]
) -> None:
    from thoth_pbx.sandbox.bitrix import BitrixSimulator, SimUser

    sim = BitrixSimulator()
    sim.client_id = args.client_id or settings.bitrix_client_id or sim.client_id
    sim.client_secret = args.client_secret or settings.bitrix_client_secret or sim.client_secret
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
    print(
        f"  portal {portal.domain} member_id {portal.member_id}, limit {portal.rate}/s burst {portal.burst}", flush=True
    )
    for spec in args.webhook:
        user, _, scope = spec.partition(":")
        if not user.isascii() or not user.isdigit() or int(user) not in portal.users:
            raise SettingsError(
                "webhook", f"{spec!r}: USER_ID must be one of the portal's users ({sorted(portal.users)})"
            )
        hook = sim.add_webhook(portal, user_id=int(user), **({"scope": scope} if scope else {}))
        print(f"  webhook of user {hook.user_id} ({hook.scope}): {sim.webhook_url(portal, hook)}", flush=True)
    if args.install_to:
        status, answer = await sim.install(portal, args.install_to)
        print(f"  install -> {args.install_to}: HTTP {status} {answer}", flush=True)
    try:
        await asyncio.Event().wait()  # until Ctrl-C
    finally:
        await sim.stop()


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
