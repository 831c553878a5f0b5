"""Webhook payloads as Meta documents them, and a sender that signs them as Meta does."""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import time
from typing import Any

import aiohttp


def _metadata(phone_number_id: str, display: str) -> dict[str, Any]:
    return {"display_phone_number": display.lstrip("+"), "phone_number_id": phone_number_id}


def delivery(waba_id: str, changes: list[dict[str, Any]], *, time: int | None = None) -> dict[str, Any]:
    """The envelope Meta posts: one entry (the WABA) with the given changes. `time` is the
    entry's trigger timestamp, which Meta's references show on account-level fields
    (developers.facebook.com/docs/whatsapp/cloud-api/webhooks/reference/account_update)."""
    entry: dict[str, Any] = {"id": waba_id}
    if time is not None:
        entry["time"] = time
    entry["changes"] = changes
    return {"object": "whatsapp_business_account", "entry": [entry]}


def message_change(
    phone_number_id: str,
    display: str,
    sender: str,
    text: str,
    *,
    name: str = "Sandbox User",
    wamid: str | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    return {
        "field": "messages",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": _metadata(phone_number_id, display),
            "contacts": [{"profile": {"name": name}, "wa_id": sender}],
            "messages": [
                {
                    "from": sender,
                    "id": wamid or "wamid." + secrets.token_urlsafe(24),
                    "timestamp": str(timestamp or int(time.time())),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        },
    }


def messages_change(phone_number_id: str, display: str, sender: str, count: int) -> dict[str, Any]:
    """One change holding `count` messages (Meta batches up to 1000 updates)."""
    change = message_change(phone_number_id, display, sender, "m0")
    change["value"]["messages"] = [
        {
            "from": sender,
            "id": "wamid." + secrets.token_urlsafe(24),
            "timestamp": str(int(time.time())),
            "type": "text",
            "text": {"body": f"message {i}"},
        }
        for i in range(count)
    ]
    return change


def status_change(phone_number_id: str, display: str, wamid: str, status: str, recipient: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": recipient,
    }
    if status == "failed":
        item["errors"] = [
            {
                "code": 131047,
                "title": "Re-engagement message",
                "message": "Re-engagement message",
                "error_data": {
                    "details": "More than 24 hours have passed since the recipient last replied to the sender number."
                },
            }
        ]
    return {
        "field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": _metadata(phone_number_id, display), "statuses": [item]},
    }


def call_connect_change(
    phone_number_id: str,
    display: str,
    call_id: str,
    caller: str,
    *,
    direction: str = "USER_INITIATED",
    sdp: str | None = None,
) -> dict[str, Any]:
    sdp = sdp or "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 3480 RTP/SAVP 111 126\r\n"
    return {
        "field": "calls",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": _metadata(phone_number_id, display),
            "contacts": [{"profile": {"name": "Sandbox Caller"}, "wa_id": caller}],
            "calls": [
                {
                    "id": call_id,
                    "from": caller,
                    "to": display.lstrip("+"),
                    "event": "connect",
                    "timestamp": str(int(time.time())),
                    "direction": direction,
                    "session": {"sdp_type": "offer" if direction == "USER_INITIATED" else "answer", "sdp": sdp},
                }
            ],
        },
    }


def call_terminate_change(
    phone_number_id: str,
    display: str,
    call_id: str,
    caller: str,
    *,
    status: str = "COMPLETED",
    duration: int | None = 42,
) -> dict[str, Any]:
    now = int(time.time())
    item: dict[str, Any] = {
        "id": call_id,
        "from": caller,
        "to": display.lstrip("+"),
        "event": "terminate",
        "direction": "USER_INITIATED",
        "timestamp": str(now),
        "status": status,
    }
    if duration is not None:  # only for answered calls
        item.update(start_time=str(now - duration), end_time=str(now), duration=duration)
    return {
        "field": "calls",
        "value": {"messaging_product": "whatsapp", "metadata": _metadata(phone_number_id, display), "calls": [item]},
    }


def sign(body: bytes, app_secret: str) -> str:
    """X-Hub-Signature-256 as Meta computes it: HMAC-SHA256 of the raw body, hex, "sha256=" prefix."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Posts signed deliveries like Meta does, with the faults Meta really shows."""

    def __init__(self, url: str, app_secret: str, *, timeout: float = 20.0) -> None:
        self.url = url
        self.app_secret = app_secret
        self.timeout = timeout  # Meta gives up after about 20 s and retries later

    async def send(
        self,
        bodies: list[bytes],
        *,
        duplicate: bool = False,
        reorder: bool = False,
        corrupt_signature: bool = False,
        seed: int | None = None,
    ) -> list[int]:
        """Send each body (raw bytes, signed as they are); returns the HTTP statuses in send order."""
        plan = [b for body in bodies for b in ((body, body) if duplicate else (body,))]
        if reorder:
            random.Random(seed).shuffle(plan)
        statuses = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
            for body in plan:
                signature = sign(body, self.app_secret)
                if corrupt_signature:
                    signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
                async with session.post(
                    self.url,
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        "X-Hub-Signature-256": signature,
                        "User-Agent": "facebookexternalua",
                    },
                ) as response:
                    await response.read()
                    statuses.append(response.status)
        return statuses
