"""The two legs of a click-to-call over ARI, in our own Stasis application.

The operator's phone rings first; only once they answer is the customer dialled through the
trunk (`PJSIP/+<customer>@wa-<business digits>`: TLS, SDES, Opus, digest auth with the
number's SIP password and From the business number at our hostname, all from the trunk's
per-number endpoint). The two legs are bridged, optionally recorded through a snoop, and
every way it ends becomes an `Outcome` handed to `on_end`.

A separate ARI application (`<ari_app>-callback`) keeps these channels away from the incoming
call flow, which treats every StasisStart of its own application as a WhatsApp caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thoth_pbx.clients.asterisk.ari import AriClient, AriError
from thoth_pbx.features.callback import decide
from thoth_pbx.features.callback.decide import Outcome

log = logging.getLogger(__name__)

HANG_UP = ("ChannelDestroyed", "StasisEnd", "ChannelHangupRequest")
FINAL_DIAL = ("ANSWER", "BUSY", "NOANSWER", "CHANUNAVAIL", "CONGESTION", "CANCEL")
ENTER_TIMEOUT_S = 5.0
# hangup cause of the operator's leg -> DIALSTATUS word (a dial timeout ends with 16/19: no answer)
_OPERATOR_CAUSES = {17: "BUSY", 21: "BUSY", 1: "CHANUNAVAIL", 3: "CHANUNAVAIL", 20: "CHANUNAVAIL", 27: "CHANUNAVAIL"}
_OPERATOR_CAUSES |= {34: "CHANUNAVAIL", 38: "CHANUNAVAIL"}


@dataclass
class Plan:
    """What one click-to-call dials (from its row and the portal's settings)."""

    row_id: int
    tag: str  # makes the channel ids unique across databases and restarts: c2c-<row>-<tag>-op|wa
    operator_endpoint: str  # e.g. PJSIP/101
    customer_endpoint: str  # e.g. PJSIP/+79991000001@wa-14155550123
    operator_ring_seconds: int
    customer_ring_seconds: int
    record: bool = False
    business: str = ""  # +E.164: the customer's leg shows it (Meta wants From <sip:+BIZ@our host>)
    customer: str = ""  # +E.164: the operator's phone shows who is being called


@dataclass
class Progress:
    """Facts the dialer reports as they happen (stored by the service)."""

    operator_channel: str | None = None
    customer_channel: str | None = None
    answered: bool = False
    recording: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Report = Callable[[int, str, Progress], Awaitable[None]]  # row id, new state, progress


class _Ended(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class Dialer:
    def __init__(self, ari: AriClient, report: Report, *, recordings_dir: Path | None = None) -> None:
        self.ari = ari
        self.report = report
        self.recordings_dir = recordings_dir
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._entered: dict[str, asyncio.Future[None]] = {}
        self._recordings: dict[str, asyncio.Future[None]] = {}
        self.tasks: dict[int, asyncio.Task[Outcome]] = {}

    # ------------------------------------------------------------------ events

    def on_event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type") or "")
        if kind in ("RecordingFinished", "RecordingFailed"):
            done = self._recordings.get(str((event.get("recording") or {}).get("name") or ""))
            if done is not None and not done.done():
                done.set_result(None)
            return
        channel = event.get("peer") if kind == "Dial" else event.get("channel")
        channel_id = str((channel or {}).get("id") or "")
        if kind == "StasisStart":
            entered = self._entered.get(channel_id)
            if entered is not None and not entered.done():
                entered.set_result(None)
        queue = self._queues.get(channel_id)
        if queue is not None:
            queue.put_nowait(event)

    # ------------------------------------------------------------------ one call

    def start(self, plan: Plan, *, progress: Progress | None = None) -> asyncio.Task[Outcome]:
        task = asyncio.create_task(self.run(plan, progress or Progress()), name=f"callback-{plan.row_id}")
        self.tasks[plan.row_id] = task
        task.add_done_callback(lambda _t: self.tasks.pop(plan.row_id, None))
        return task

    async def run(self, plan: Plan, progress: Progress) -> Outcome:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        operator, customer = channel_ids(plan.row_id, plan.tag)
        self._queues[operator] = self._queues[customer] = queue
        bridge_id: str | None = None
        stopping = False
        try:
            if progress.answered:  # re-attached after a restart: only the end is left to see
                bridge_id = progress.extra.get("bridge")
                return await self._talk(plan, progress, queue, bridge_id)
            result = await self._ring(
                operator, plan.operator_endpoint, plan.operator_ring_seconds, queue, None, plan.customer
            )
            if result != "ANSWER":
                return decide.operator_missed(result)
            progress.operator_channel = operator
            await self.report(plan.row_id, "calling", progress)
            await self._request("POST", f"/channels/{operator}/ring")  # the operator hears ringing
            result = await self._ring(
                customer, plan.customer_endpoint, plan.customer_ring_seconds, queue, operator, plan.business
            )
            if result != "ANSWER":
                raise _Ended(self._customer_outcome(result))
            progress.customer_channel = customer
            progress.answered = True
            await self._request("DELETE", f"/channels/{operator}/ring")
            bridge = await self.ari.request(
                "POST", "/bridges", params={"type": "mixing", "name": f"c2c-{plan.row_id}-{plan.tag}"}
            )
            bridge_id = bridge["id"]
            progress.extra["bridge"] = bridge_id
            await self.ari.request(
                "POST",
                f"/bridges/{bridge_id}/addChannel",
                params={"channel": f"{operator},{customer}", "inhibitConnectedLineUpdates": True},
            )
            if plan.record:
                progress.recording = await self._record(plan.row_id, plan.tag, customer)
            await self.report(plan.row_id, "connected", progress)
            return await self._talk(plan, progress, queue, bridge_id)
        except _Ended as ended:
            return ended.outcome
        except asyncio.CancelledError:
            stopping = True  # the service stops: the call lives on in Asterisk, re-attached at the next start
            raise
        finally:
            for channel_id in () if stopping else (operator, customer, f"{customer}-rec"):
                await self._request("DELETE", f"/channels/{channel_id}")
            for channel_id in (operator, customer):
                self._queues.pop(channel_id, None)
            if bridge_id and not stopping:
                await self._request("DELETE", f"/bridges/{bridge_id}")

    async def _talk(
        self, plan: Plan, progress: Progress, queue: asyncio.Queue[dict[str, Any]], bridge_id: str | None
    ) -> Outcome:
        watched = {c for c in (progress.operator_channel, progress.customer_channel) if c}
        for channel_id in watched:
            self._queues[channel_id] = queue
        while True:
            event = await queue.get()
            if event.get("type") in HANG_UP and _channel_id(event) in watched:
                break
        if progress.recording:
            await self._stop_recording(progress.recording)
        return Outcome(decide.ANSWERED)

    def _customer_outcome(self, result: str) -> Outcome:
        if result.startswith("SIP:"):
            return decide.customer_refusal(int(result[4:]) if result[4:].isdigit() else None, we_cancelled=False)
        if result == "OPERATOR_LEFT":
            return Outcome("603-S", "The operator hung up before the customer answered")
        if result == "TIMEOUT":
            return decide.customer_refusal(None, we_cancelled=True)
        return decide.customer_refusal(None, we_cancelled=False)

    async def _ring(
        self,
        channel_id: str,
        endpoint: str,
        seconds: int,
        queue: asyncio.Queue[dict[str, Any]],
        other: str | None,
        caller_id: str = "",
    ) -> str:
        """Create a leg, dial it, wait for its answer: ANSWER, a DIALSTATUS word, TIMEOUT,
        OPERATOR_LEFT (`other` hung up meanwhile) or SIP:<code> for a failed customer leg."""
        entered = asyncio.get_running_loop().create_future()
        self._entered[channel_id] = entered
        try:
            await self.ari.request(
                "POST",
                "/channels/create",
                params={"endpoint": endpoint, "app": self.ari.app, "channelId": channel_id, "originator": other},
            )
            async with asyncio.timeout(ENTER_TIMEOUT_S):
                await entered
            if caller_id:  # else the INVITE goes out From "Anonymous" <sip:...@anonymous.invalid>
                # an outgoing leg's From is its connected line (the calling party); `i`: set it
                # without sending anything on the leg
                for name in ("CONNECTEDLINE(num,i)", "CONNECTEDLINE(name,i)", "CALLERID(num)"):
                    await self.ari.request(
                        "POST", f"/channels/{channel_id}/variable", params={"variable": name, "value": caller_id}
                    )
            await self.ari.request("POST", f"/channels/{channel_id}/dial", params={"timeout": seconds})
        except (TimeoutError, AriError) as exc:
            log.warning(
                "click-to-call: cannot dial", extra={"endpoint": endpoint, "error": str(exc) or "no StasisStart"}
            )
            return "CHANUNAVAIL"
        finally:
            self._entered.pop(channel_id, None)
        loop = asyncio.get_running_loop()
        dialled = loop.time()
        deadline = dialled + seconds + 2
        cause: int | None = None
        tech: Any = None
        while True:
            try:
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    event = await queue.get()
            except TimeoutError:
                return "TIMEOUT"
            kind = event.get("type")
            target = _channel_id(event)
            if other is not None and target == other and kind in HANG_UP:
                return "OPERATOR_LEFT"
            if target != channel_id:
                continue
            if kind == "Dial":
                status = str(event.get("dialstatus") or "")
                if status == "ANSWER":
                    return "ANSWER"
                if status == "NOANSWER" and other is not None:
                    return "TIMEOUT"
                if status in FINAL_DIAL and other is None:
                    return status
            elif kind == "ChannelStateChange" and (event.get("channel") or {}).get("state") == "Up":
                return "ANSWER"
            elif kind == "ChannelHangupRequest":
                cause = event.get("cause") if isinstance(event.get("cause"), int) else cause
                tech = event.get("tech_cause", tech)
            elif kind in ("ChannelDestroyed", "StasisEnd"):
                if isinstance(event.get("cause"), int):
                    cause = event["cause"]
                tech = event.get("tech_cause", tech)
                if kind == "StasisEnd" and cause is None:
                    continue  # no cause on StasisEnd: ChannelDestroyed follows with it
                if other is None:
                    return _OPERATOR_CAUSES.get(cause or 0, "NOANSWER")
                sip = decide.sip_status(tech, cause)
                if sip in (None, 480, 487) and loop.time() - dialled >= seconds - 0.5:
                    return "TIMEOUT"  # our dial timeout ended it (the hang-up can come before Dial NOANSWER)
                return f"SIP:{sip}" if sip is not None else "CHANUNAVAIL"

    async def _record(self, row_id: int, tag: str, channel_id: str) -> str | None:
        """Both directions of the WhatsApp leg through a snoop (keeps the bridge passing Opus through)."""
        snoop = f"{channel_id}-rec"
        name = f"thoth-c2c-{row_id}-{tag}"
        entered = asyncio.get_running_loop().create_future()
        self._entered[snoop] = entered
        try:
            await self.ari.request(
                "POST",
                f"/channels/{channel_id}/snoop",
                params={"spy": "both", "app": self.ari.app, "snoopId": snoop},
            )
            async with asyncio.timeout(ENTER_TIMEOUT_S):
                await entered
            self._recordings[name] = asyncio.get_running_loop().create_future()
            await self.ari.request(
                "POST", f"/channels/{snoop}/record", params={"name": name, "format": "wav", "ifExists": "overwrite"}
            )
            return name
        except (TimeoutError, AriError) as exc:
            log.warning("click-to-call recording failed", extra={"row": row_id, "error": str(exc) or "no StasisStart"})
            self._recordings.pop(name, None)
            return None
        finally:
            self._entered.pop(snoop, None)

    async def _stop_recording(self, name: str) -> None:
        await self._request("POST", f"/recordings/live/{name}/stop")
        finished = self._recordings.pop(name, None)
        if finished is not None:
            try:
                async with asyncio.timeout(5.0):
                    await finished
            except TimeoutError:
                log.warning("click-to-call recording not finished after 5 s", extra={"recording": name})

    async def fetch_recording(self, name: str) -> Path | None:
        if self.recordings_dir is None:
            return None
        try:
            data = await self.ari.request_bytes("GET", f"/recordings/stored/{name}/file")
        except AriError as exc:
            log.warning("click-to-call recording not available", extra={"recording": name, "error": str(exc)})
            return None
        path = self.recordings_dir / f"{name}.wav"
        await asyncio.to_thread(_write, path, data)
        return path

    async def live_channels(self) -> set[str]:
        return {str(c.get("id")) for c in await self.ari.request("GET", "/channels") or []}

    async def _request(self, method: str, path: str) -> None:
        try:
            await self.ari.request(method, path)
        except AriError:
            pass  # already gone / not ringing

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def channel_ids(row_id: int, tag: str) -> tuple[str, str]:
    """The operator's and the customer's channel ids of one click-to-call."""
    return f"c2c-{row_id}-{tag}-op", f"c2c-{row_id}-{tag}-wa"


def _channel_id(event: dict[str, Any]) -> str:
    channel = event.get("peer") if event.get("type") == "Dial" else event.get("channel")
    return str((channel or {}).get("id") or "")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
