"""Read what Asterisk has loaded, over AMI (used by apply's verify and by status)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from thoth_pbx.clients.asterisk.ami import AmiActionFailed, AmiClient, AmiNotConnected, AmiTimeout

Event = dict[str, Any]


async def endpoint_events(ami: AmiClient, names: Iterable[str]) -> dict[str, list[Event] | None]:
    """PJSIPShowEndpoint for each name, concurrently; None for an endpoint Asterisk lacks."""
    names = list(dict.fromkeys(names))
    replies = await asyncio.gather(
        *(ami.event_list({"Action": "PJSIPShowEndpoint", "Endpoint": name}) for name in names),
        return_exceptions=True,
    )
    out: dict[str, list[Event] | None] = {}
    for name, reply in zip(names, replies, strict=False):
        if isinstance(reply, AmiActionFailed):
            out[name] = None  # "Unable to retrieve endpoint"
        elif isinstance(reply, BaseException):
            raise reply
        else:
            out[name] = [dict(event) for event in reply]
    return out


async def dialplan_show(ami: AmiClient, contexts: Iterable[str]) -> dict[str, str]:
    """`dialplan show CONTEXT` output per context ("" when the context does not exist)."""
    out: dict[str, str] = {}
    for context in contexts:
        try:
            out[context] = await ami.command(f"dialplan show {context}")
        except AmiActionFailed:
            out[context] = ""
    return out


async def reload_module(ami: AmiClient, module: str, *, timeout: float) -> str:
    """AMI Reload; returns Asterisk's message. Success does NOT mean the objects loaded."""
    reply = await ami.action_ok({"Action": "Reload", "Module": module}, timeout=timeout)
    return str(reply.get("Message", ""))


async def restart_when_convenient(ami: AmiClient, *, timeout: float = 3.0) -> str:
    """`core restart when convenient`: Asterisk restarts once no call is up (loads new transports).

    Asterisk handles the command by shutting down (after waiting for calls to end), so the
    reply often never comes: no answer within `timeout` or a closed connection means the
    restart is under way.
    """
    try:
        output = await ami.command("core restart when convenient", timeout=timeout)
    except (AmiTimeout, AmiNotConnected):
        return "restart requested: Asterisk restarts as soon as no call is up"
    return output.strip() or "restart requested: Asterisk restarts as soon as no call is up"
