"""Webhook payloads as Meta documents them, and a sender that signs them as Meta does."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import random
import secrets
import time
from dataclasses import dataclass
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


# Title (also the message) and details of the error codes the simulator reports in `failed`
# statuses. Source: developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/.
STATUS_ERRORS: dict[int, tuple[str, str]] = {
    131009: (
        "Parameter value is not valid",
        "One or more parameter values are invalid: the reacted-to message is unknown, too old, "
        "deleted or itself a reaction.",
    ),
    131026: (
        "Message undeliverable",
        "Unable to deliver message. The recipient may not be a WhatsApp user, may not have "
        "accepted the latest Terms of Service, or uses an old WhatsApp version.",
    ),
    131047: (
        "Re-engagement message",
        "More than 24 hours have passed since the recipient last replied to the sender number.",
    ),
    131049: (
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
    ),
    131053: ("Media upload error", "Unable to upload the media used in the message."),
}

ERROR_CODES_URL = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"


def status_error(code: int, details: str | None = None) -> dict[str, Any]:
    """One `errors[]` item of a failed status, as the status messages webhook reference shows:
    code, title, message (= title), error_data.details, href."""
    title, default_details = STATUS_ERRORS.get(code, ("Message failed to send", "The message could not be sent."))
    return {
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": details or default_details},
        "href": ERROR_CODES_URL,
    }


def status_change(
    phone_number_id: str,
    display: str,
    wamid: str,
    status: str,
    recipient: str,
    *,
    timestamp: int | None = None,
    errors: list[dict[str, Any]] | None = None,
    conversation: dict[str, Any] | None = None,
    pricing: dict[str, Any] | None = None,
    biz_opaque_callback_data: str | None = None,
) -> dict[str, Any]:
    """A status messages webhook change. Source:
    developers.facebook.com/docs/whatsapp/cloud-api/webhooks/reference/messages/status (a failed
    status without explicit `errors` carries the 24-hour-window error 131047)."""
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(timestamp if timestamp is not None else int(time.time())),
        "recipient_id": recipient,
    }
    if biz_opaque_callback_data is not None:
        item["biz_opaque_callback_data"] = biz_opaque_callback_data
    if conversation is not None:
        item["conversation"] = conversation
    if pricing is not None:
        item["pricing"] = pricing
    if status == "failed":
        item["errors"] = errors if errors is not None else [status_error(131047)]
    return {
        "field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": _metadata(phone_number_id, display), "statuses": [item]},
    }


MEDIA_KINDS = ("image", "video", "audio", "voice", "document", "sticker")


def media_message_change(
    phone_number_id: str,
    display: str,
    sender: str,
    kind: str,
    media_id: str,
    mime_type: str,
    sha256: str,
    *,
    caption: str | None = None,
    filename: str | None = None,
    name: str = "Sandbox User",
    wamid: str | None = None,
    timestamp: int | None = None,
    url: str | None = None,
    animated: bool = False,
) -> dict[str, Any]:
    """An inbound media message (`kind`: image, video, audio, voice, document or sticker) as the
    messages webhook reference shows it: image/video {caption?, mime_type, sha256, id}, document
    adds filename, audio has `voice` (a voice note is type audio with `voice: true`), sticker has
    `animated`; `url` only when given (Meta is adding it gradually). Sources:
    developers.facebook.com/docs/whatsapp/cloud-api/webhooks/reference/messages/{image,video,audio,document,sticker}."""
    if kind not in MEDIA_KINDS:
        raise ValueError(f"kind must be one of {', '.join(MEDIA_KINDS)}")
    if caption is not None and kind not in ("image", "video", "document"):
        raise ValueError("only image, video and document messages have a caption")
    if filename is not None and kind != "document":
        raise ValueError("only document messages have a filename")
    media: dict[str, Any] = {}
    if caption is not None:
        media["caption"] = caption
    if filename is not None:
        media["filename"] = filename
    media.update(mime_type=mime_type, sha256=sha256, id=media_id)
    if url is not None:
        media["url"] = url
    if kind in ("audio", "voice"):
        media["voice"] = kind == "voice"
    if kind == "sticker":
        media["animated"] = animated
    message_type = "audio" if kind == "voice" else kind
    change = message_change(phone_number_id, display, sender, "", name=name, wamid=wamid, timestamp=timestamp)
    message = change["value"]["messages"][0]
    del message["text"]
    message["type"] = message_type
    message[message_type] = media
    return change


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


@dataclass(frozen=True)
class StatusDelivery:
    """One signed status delivery waiting in a phone's queue."""

    url: str
    app_secret: str
    body: bytes
    wamid: str
    status: str


class StatusPoster:
    """Posts the status webhooks that follow accepted sends, in the background.

    One FIFO queue and worker per phone number, so one number's statuses never overtake each
    other and never hold up a Graph answer. Meta retries a delivery that was not answered 200
    "immediately, then with decreasing frequency" for up to 7 days; this poster makes
    `attempts` tries with a short exponential backoff (`backoff`, doubling) and then moves on to
    the next delivery (a simplification: no 7-day tail, and order is kept). Every attempt is
    appended to `log` as `{"wamid", "status", "http_status", "attempt"}` (`http_status` None and
    an `error` text when the request itself failed)."""

    def __init__(
        self, log: list[dict[str, Any]], *, attempts: int = 4, backoff: float = 0.05, timeout: float = 20.0
    ) -> None:
        self.log = log
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout  # Meta gives up on one request after about 20 s
        self._queues: dict[str, asyncio.Queue[StatusDelivery]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def put(self, phone_number_id: str, deliveries: list[StatusDelivery]) -> None:
        """Queue deliveries for a phone (call from inside the running loop)."""
        queue = self._queues.setdefault(phone_number_id, asyncio.Queue())
        for delivery in deliveries:
            queue.put_nowait(delivery)
        worker = self._workers.get(phone_number_id)
        if worker is None or worker.done():
            self._workers[phone_number_id] = asyncio.create_task(
                self._work(queue), name=f"meta-sandbox-statuses-{phone_number_id}"
            )

    async def drain(self) -> None:
        """Return once every delivery queued so far was attempted (retries included)."""
        for queue in list(self._queues.values()):
            await queue.join()

    async def close(self) -> None:
        """Stop the workers (pending deliveries are dropped) and close the HTTP session."""
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers.clear()
        self._queues.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _work(self, queue: asyncio.Queue[StatusDelivery]) -> None:
        while True:
            delivery = await queue.get()
            try:
                await self._deliver(delivery)
            finally:
                queue.task_done()

    async def _deliver(self, delivery: StatusDelivery) -> None:
        for attempt in range(1, self.attempts + 1):
            status, error = await self._post(delivery)
            entry: dict[str, Any] = {
                "wamid": delivery.wamid,
                "status": delivery.status,
                "http_status": status,
                "attempt": attempt,
            }
            if error is not None:
                entry["error"] = error
            self.log.append(entry)
            if status == 200:
                return
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))

    async def _post(self, delivery: StatusDelivery) -> tuple[int | None, str | None]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(
                delivery.url,
                data=delivery.body,
                headers={
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": sign(delivery.body, delivery.app_secret),
                    "User-Agent": "facebookexternalua",
                },
            ) as response:
                await response.read()
                return response.status, None
        except (TimeoutError, aiohttp.ClientError) as exc:
            return None, f"{type(exc).__name__}: {exc}"
