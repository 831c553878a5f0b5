"""`thoth-pbx calling ...` and `thoth-pbx sandbox meta|meta-webhook` (registered from cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from thoth_pbx.core.settings import Settings, parse_listen


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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

    sandbox = _sandbox_group(sub)
    meta = sandbox.add_parser("meta", help="run the strict Meta Graph API simulator",
                              description="Serve the Meta simulator; point the service at it with "
                                          "THOTH_META_GRAPH_URL=http://HOST:PORT")
    meta.add_argument("--listen", default="127.0.0.1:8900", help="host:port (default 127.0.0.1:8900)")
    meta.set_defaults(func=_cmd_sandbox_meta)

    hook = sandbox.add_parser("meta-webhook", help="post signed Meta webhooks to a URL",
                              description="Send webhooks exactly as Meta signs them (X-Hub-Signature-256).")
    hook.add_argument("--url", required=True, help="the callback URL shown by the admin API (with ?api-key=)")
    hook.add_argument("--app-secret", required=True, help="the WABA account's app secret")
    hook.add_argument("--waba-id", default="102290129340398")
    hook.add_argument("--phone-number-id", default="106540352242922")
    hook.add_argument("--display-number", default="+15550100001")
    hook.add_argument("--from", dest="sender", default="15551234567", help="the customer's WhatsApp number")
    hook.add_argument("--kind", choices=("message", "status", "call", "batch"), default="message",
                      help="message; status (sent/delivered/read); call (connect + terminate); batch (--count messages in one delivery)")
    hook.add_argument("--text", default="Hello from the sandbox")
    hook.add_argument("--count", type=int, default=1, help="deliveries to send (for batch: messages in the one delivery)")
    hook.add_argument("--duplicate", action="store_true", help="send every delivery twice")
    hook.add_argument("--reorder", action="store_true", help="shuffle the deliveries (e.g. terminate before connect)")
    hook.add_argument("--corrupt-signature", action="store_true", help="send a wrong signature (expect 401)")
    hook.set_defaults(func=_cmd_sandbox_webhook)


def _sandbox_group(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """The `sandbox` group, shared with other simulators (whoever registers first creates it)."""
    parser = sub.choices.get("sandbox")
    if parser is None:
        parser = sub.add_parser("sandbox", help="simulators of Meta and Bitrix24 for tests and demos")
        return parser.add_subparsers(dest="sandbox_command", required=True, metavar="SIMULATOR")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="sandbox_command", required=True, metavar="SIMULATOR")


def _cmd_calling(args: argparse.Namespace, settings: Settings) -> int:
    from thoth_pbx.core.logs import setup_logging

    setup_logging(settings.log_level)  # JSON log lines on stderr, like `serve`; results on stdout
    return asyncio.run(_calling(settings, args.calling_action, args.phone))


async def _calling(settings: Settings, action: str, phone: str) -> int:
    from thoth_pbx.app import close_services, open_services
    from thoth_pbx.features.directory.service import PHONES
    from thoth_pbx.features.trunk.calling import CallingFailed
    from thoth_pbx.core.validation import FieldError

    services = await open_services(settings)
    try:
        try:
            result = await services.meta.calling.run(phone, action)
        except CallingFailed as failed:
            error = failed.result.error or {}
            _print({"ok": False, "error": error, "phone": await services.directory.get(PHONES, failed.result.phone_id, reveal=False)})
            print(f"thoth-pbx: Meta refused: {error.get('message')}\n  hint: {error.get('hint')}", file=sys.stderr)
            return 1
        except FieldError as exc:
            print(f"thoth-pbx: {exc.field}: {exc.message}", file=sys.stderr)
            return 2
        _print({"ok": result.ok, "action": action, "meta_settings": result.state, "problems": result.problems,
                "phone": await services.directory.get(PHONES, result.phone_id, reveal=False)})
        return 0 if result.ok else 1
    finally:
        await services.meta.stop()
        await close_services(services)


def _cmd_sandbox_meta(args: argparse.Namespace, settings: Settings) -> int:
    from thoth_pbx.sandbox.meta import Seed, serve

    listen = parse_listen("listen", args.listen)
    seed = Seed()

    def banner() -> None:  # printed once the socket listens
        print(f"Meta simulator on http://{listen}  (control: http://{listen}/_sandbox/state)", flush=True)
        print(f"  THOTH_META_GRAPH_URL=http://{listen}", flush=True)
        print(f"  app id {seed.app_id}, app secret {seed.app_secret}", flush=True)
        print(f"  access token {seed.token}", flush=True)
        print(f"  WABA {seed.waba_id}, phone {seed.display_phone_number} (phone_number_id {seed.phone_number_id})",
              flush=True)

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
            docs.extend(sim.delivery(args.waba_id, [sim.status_change(pnid, display, wamid, s, sender)])
                        for s in ("sent", "delivered", "read"))
        else:
            call_id = f"wacid.sandbox{i}"
            docs.append(sim.delivery(args.waba_id, [sim.call_connect_change(pnid, display, call_id, sender)]))
            docs.append(sim.delivery(args.waba_id, [sim.call_terminate_change(pnid, display, call_id, sender)]))
    sender_ = sim.WebhookSender(args.url, args.app_secret)
    statuses = asyncio.run(sender_.send([json.dumps(d).encode() for d in docs], duplicate=args.duplicate,
                                        reorder=args.reorder, corrupt_signature=args.corrupt_signature))
    _print({"sent": len(statuses), "statuses": statuses})
    return 0 if all(s == 200 for s in statuses) else 1


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
