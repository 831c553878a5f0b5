"""Recovery of the Stasis app after a (re)connect or a restart: calls still live in Asterisk are
re-attached and carried on, calls that ended meanwhile are finished with what is known, and
WhatsApp channels left in our app without a call row are started as new calls.

A mixin of `StasisCalls` (stasis.py): it works on the same call table, queues and tasks; the
attributes and call-flow steps it uses are declared here and provided there."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.asterisk.ari import AriClient, AriError
from thoth_pbx.clients.asterisk.events import AriEvent, EventType, parse_event
from thoth_pbx.features.calls import callflow as cf
from thoth_pbx.features.calls.callflow import Operator
from thoth_pbx.features.calls.models import Call
from thoth_pbx.features.calls.notifier import CallContext, CallNotifier, Registration
from thoth_pbx.features.directory import Phone
from thoth_pbx.store.base import on_server

log = logging.getLogger(__name__)


class CallRecovery:
    ari: AriClient
    asterisk: str | None
    sessions: async_sessionmaker[AsyncSession]
    notifier: CallNotifier
    endpoint_prefix: str
    _resync_lock: asyncio.Lock
    _queues: dict[str, asyncio.Queue[AriEvent]]
    _tasks: dict[str, asyncio.Task[None]]

    # call-flow steps, provided by StasisCalls
    def _start_call(self, channel_id: str, event: AriEvent) -> None:
        raise NotImplementedError

    def _forget_task(self, channel_id: str, _task: asyncio.Task[None]) -> None:
        raise NotImplementedError

    async def _route_and_talk(
        self,
        state: cf.CallState,
        ctx: CallContext,
        queue: asyncio.Queue[AriEvent],
        registration: Registration | None = None,
    ) -> None:
        raise NotImplementedError

    async def _wait_for_hangup(self, state: cf.CallState, channels: set[str], queue: asyncio.Queue[AriEvent]) -> None:
        raise NotImplementedError

    async def _finish(self, state: cf.CallState, ctx: CallContext) -> None:
        raise NotImplementedError

    async def _hangup(self, channel_id: str) -> None:
        raise NotImplementedError

    def _of_this_asterisk(self) -> ColumnElement[bool]:
        """Calls of the Asterisk this app talks to: another server's live calls are not ours to
        finish (their channels are not in our channel list)."""
        return on_server(Call.asterisk, self.asterisk)

    async def resync(self) -> None:
        """After a (re)connect: re-attach to live calls, finish calls that ended meanwhile."""
        await self._filter_events()
        try:
            await self._resync()
        except Exception:  # database away: new calls still work; the next (re)connect tries again
            log.exception("resync failed")

    async def _filter_events(self) -> None:
        """Ask Asterisk for the event types the call flow reads, nothing else: a call also brings
        ~7 ChannelVarset, ChannelDialplan, Playback* events that both Asterisk and our event
        loop would serialise and parse for nothing, in a burst while its calls wait to be
        announced. (ARI `PUT /applications/{app}/eventFilter`, Asterisk 13.26 / 16.3 and later:
        https://www.asterisk.org/filtering-event-types-ari/.) Set on every connect, so a
        restarted Asterisk gets it too."""
        allowed = [{"type": kind.value} for kind in EventType if kind is not EventType.UNKNOWN]
        try:
            await self.ari.request("PUT", f"/applications/{self.ari.app}/eventFilter", json_body={"allowed": allowed})
        except AriError as exc:  # an older Asterisk: every event comes, the unknown ones are ignored
            log.info("ARI event filter not set; receiving every event", extra={"error": str(exc)})

    async def _resync(self) -> None:
        async with self._resync_lock:
            try:
                live = {c["id"]: c for c in await self.ari.request("GET", "/channels") or []}
            except AriError as exc:
                log.warning("resync: cannot list channels", extra={"error": str(exc)})
                return
            async with self.sessions() as session:
                open_calls = (
                    await session.scalars(select(Call).where(Call.state != "ended", self._of_this_asterisk()))
                ).all()
            for call in open_calls:
                if call.channel_id in self._tasks:
                    continue
                if call.channel_id in live:
                    self._reattach(call, live)
                else:
                    await self._finish_orphan(call)
            await self._adopt_unrecorded(live)

    async def _adopt_unrecorded(self, live: dict[str, Any]) -> None:
        """WhatsApp channels waiting in our app with no call row: we went away between their
        StasisStart and the row's commit. They are started as new calls."""
        waiting = {
            cid: c
            for cid, c in live.items()
            if cid not in self._queues
            and str(c.get("name", "")).startswith(self.endpoint_prefix)
            and (c.get("dialplan") or {}).get("app_name") == "Stasis"
            and str((c.get("dialplan") or {}).get("app_data", "")).split(",")[0] == self.ari.app
        }
        if not waiting:
            return
        async with self.sessions() as session:
            known = set(
                (
                    await session.scalars(
                        select(Call.channel_id).where(Call.channel_id.in_(waiting), self._of_this_asterisk())
                    )
                ).all()
            )
        for channel_id, channel in waiting.items():
            if channel_id in known or channel_id in self._queues:
                continue
            args = str(channel["dialplan"].get("app_data", "")).split(",")[1:]
            log.warning("picked up a call left in the Stasis app without a record", extra={"channel": channel_id})
            self._start_call(channel_id, parse_event({"type": "StasisStart", "channel": channel, "args": args}))

    def _reattach(self, call: Call, live: dict[str, Any]) -> None:
        queue: asyncio.Queue[AriEvent] = asyncio.Queue()
        self._queues[call.channel_id] = queue
        operator_channel = (call.detail or {}).get("operator_channel")
        if operator_channel:
            self._queues[operator_channel] = queue
        task = asyncio.create_task(
            self._run_reattached(call, operator_channel, live, queue), name=f"call-{call.channel_id}"
        )
        self._tasks[call.channel_id] = task
        task.add_done_callback(functools.partial(self._forget_task, call.channel_id))
        log.info("re-attached to live call", extra={"call": call.id, "state": call.state})

    async def _run_reattached(
        self, call: Call, operator_channel: str | None, live: dict[str, Any], queue: asyncio.Queue[AriEvent]
    ) -> None:
        async with self.sessions() as session:
            phone = await session.get(Phone, call.phone_id) if call.phone_id else None
            ctx = await self.notifier.context(session, phone)
        state = cf.CallState(call.id, call.channel_id, call.linkedid, call.caller, call.called, call.started_at)
        if call.state == "connected" and call.answered_at is not None:
            state.answered_at = call.answered_at
            state.answered_by = Operator(call.answered_by_extension or "", call.answered_by_user_id)
            if operator_channel:
                state.legs[operator_channel] = cf.Leg(state.answered_by, operator_channel, "ANSWER")
            watch = {call.channel_id} | ({operator_channel} if operator_channel in live else set())
            if operator_channel not in live:
                await self._hangup(call.channel_id)  # operator already gone: end the call
            else:
                await self._wait_for_hangup(state, watch, queue)
            for channel_id in watch:
                await self._hangup(channel_id)
        else:
            try:
                await self._route_and_talk(state, ctx, queue)
            except cf.CallEnded:
                pass
        await self._finish(state, ctx)

    async def _finish_orphan(self, call: Call) -> None:
        """The channel ended while we were away: finish with what we know."""
        async with self.sessions() as session:
            phone = await session.get(Phone, call.phone_id) if call.phone_id else None
            ctx = await self.notifier.context(session, phone)
        state = cf.CallState(call.id, call.channel_id, call.linkedid, call.caller, call.called, call.started_at)
        state.answered_at = call.answered_at
        if call.answered_at is None:
            state.legs["unknown"] = cf.Leg(Operator(""), "", "NOANSWER")
        operator_channel = (call.detail or {}).get("operator_channel")
        if operator_channel:
            await self._hangup(operator_channel)  # left alone in Stasis when the caller went
        # the real end time is unknown: the talk time counts up to now (documented in docs/calls.md)
        await self._finish(state, ctx)
        log.warning("finished a call that ended while thoth-pbx was down", extra={"call": call.id})
