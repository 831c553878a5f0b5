"""The Stasis application: every incoming WhatsApp call, from StasisStart to finish.

Event handling never blocks: the ARI event callback only routes each event into the
queue of the call it belongs to, and every call runs in its own task. A slow Bitrix24 or
a slow call therefore delays nobody else.

Bursts (docs/calls.md "Bursts"): one task, the announcer, stores new calls one at a time
in arrival order, each in its own transaction, and lets each call's register leave before
it stores the next; the rest of every call's flow (ringback, CRM lookup, ringing) waits,
for at most ANNOUNCE_FIRST_MAX_S, until the burst is over (burst.py: no new call for a
quiet period) and its registers are done. So the first caller of a burst reaches Bitrix24
first, without waiting for the others to be stored, and no caller's announce waits behind
the bookkeeping of the calls before it.

Facts go to the database first (the `call` row plus the notifier's outbox jobs in the same
transaction), so a restart loses nothing: on every (re)connect `resync()` re-attaches to
live channels and finishes calls whose channel disappeared while we were away.

Bitrix24 is reached only through the `CallNotifier` interface handed in by app.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.asterisk.ari import AriClient, AriError
from thoth_pbx.clients.asterisk.events import HANG_UP, AriEvent, ChannelState, DialStatus, EventType, parse_event
from thoth_pbx.core.validation import is_extension
from thoth_pbx.features.calls import callflow as cf
from thoth_pbx.features.calls.burst import BurstWindow
from thoth_pbx.features.calls.callflow import Operator
from thoth_pbx.features.calls.entering import Entering
from thoth_pbx.features.calls.identity import CallerIdentity, from_stasis_args
from thoth_pbx.features.calls.models import Call
from thoth_pbx.features.calls.notifier import CallContext, CallNotifier, Registering, RegisterResult, Registration
from thoth_pbx.features.calls.recording import SNOOP_ARG, CallRecorder
from thoth_pbx.features.calls.recovery import CallRecovery
from thoth_pbx.features.customers import identify, link_crm
from thoth_pbx.features.directory import Phone
from thoth_pbx.store.base import table_of
from thoth_pbx.store.fast_insert import insert_returning_id
from thoth_pbx.store.snapshots import ChangeCounter, Snapshots
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

WACID_VARIABLE = "PJSIP_HEADER(read,X-WA-Meta-WACID)"
# Dial statuses that end a leg's ringing (ANSWER among them); PROGRESS and RINGING do not.
FINAL_DIAL_STATUSES = (
    DialStatus.ANSWER,
    DialStatus.BUSY,
    DialStatus.NOANSWER,
    DialStatus.CHANUNAVAIL,
    DialStatus.CONGESTION,
    DialStatus.CANCEL,
)
LEG_ARG = "thoth-leg"
CALLS = table_of(Call)
# How long a cached call context (phone, portal settings, user map) may be used when no
# write of this process invalidated it: writes by other processes (CLI) show up this late.
CONTEXT_MAX_AGE_S = 10.0
CONTEXT_CACHE_SIZE = 1000
# How long a call's ringback and routing may wait behind the announces of later calls of a
# burst: a steady stream of new calls must not hold a ringing back for long.
ANNOUNCE_FIRST_MAX_S = 1.0
# How long a caller's identification waits for its register's result (to do it all in one
# transaction, after the burst's registers); a portal slower than this links the CRM later.
IDENTIFY_AFTER_REGISTER_MAX_S = 2.0
# Calls stored in one transaction at most when many arrived together (a Bitrix batch's size).
ANNOUNCE_GROUP_MAX = 50


def _identify_first(caller: str) -> bool:
    """Whether the register needs the customer row: a caller without a number is bound in
    Bitrix24 by their customer identity (notifier.without_phone). Any other caller's identity is
    found after the call is announced (`_identify_later`), off the burst's critical path."""
    return cf.normalise_number(caller) is None


async def _customer_id(session: AsyncSession, ctx: CallContext, identity: CallerIdentity | None) -> int | None:
    """The caller's customer identity (features/customers), found or made in the call's transaction."""
    if identity is None or ctx.account_id is None or not (identity.phone or identity.bsuid):
        return None
    customer = await identify(
        session, ctx.account_id, bsuid=identity.bsuid, phone=identity.phone, username=identity.username
    )
    return customer.id


async def _link_registered(session: AsyncSession, customer_id: int, result: RegisterResult) -> None:
    """The CRM entity the register bound the call to, remembered on the caller's identity."""
    if result and result.get("CRM_ENTITY_TYPE"):
        await link_crm(session, customer_id, result.get("CRM_ENTITY_TYPE"), result.get("CRM_ENTITY_ID"))


# the call, its context, its register's result to come, and whether it came in a burst
Stored = tuple[Call, CallContext, Registration | None, bool]


@dataclass(frozen=True)
class _Arrival:
    """A new call waiting for the announcer; `stored` resolves to its row, or None if it failed."""

    channel_id: str
    linkedid: str
    caller: str
    called: str | None
    wacid: str | None
    stored: asyncio.Future[Stored | None]
    identity: CallerIdentity | None = None  # who calls: phone and/or BSUID, username (identity.py)


class StasisCalls(CallRecovery):
    """Runs the calls of our ARI application."""

    def __init__(
        self,
        ari: AriClient,
        sessions: async_sessionmaker[AsyncSession],
        notifier: CallNotifier,
        *,
        endpoint_prefix: str = "PJSIP/wa.meta.vc",
        recordings_dir: Path | None = None,
        changes: ChangeCounter | None = None,
        asterisk: str | None = None,
        burst: BurstWindow | None = None,
    ) -> None:
        """`asterisk`: the configured server `ari` talks to, stamped on its calls (None: the
        first server), so a resync touches only the calls of its own Asterisk. `burst`: when
        arrivals count as one burst (burst.py; a test's clock)."""
        self.asterisk = asterisk
        self.ari = ari
        self.sessions = sessions
        self.notifier = notifier
        self.endpoint_prefix = endpoint_prefix
        self.recordings_dir = recordings_dir
        # the context of each dialled number, kept until a phone, portal or user changes
        # (without a change counter every call reads its context from the database)
        self._contexts: Snapshots[str | None, tuple[int | None, CallContext]] = Snapshots(
            changes, max_age=CONTEXT_MAX_AGE_S, max_entries=CONTEXT_CACHE_SIZE
        )
        self._queues: dict[str, asyncio.Queue[AriEvent]] = {}  # channel id -> call queue
        self._tasks: dict[str, asyncio.Task[None]] = {}  # WA channel id -> call task
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._resync_lock = asyncio.Lock()
        # new calls not yet stored with their register on its way (counted from the StasisStart)
        self._announcing = 0
        self._announced = asyncio.Event()
        self._announced.set()
        self._arrivals: deque[_Arrival] = deque()  # in arrival order, for the announcer
        self._registrations: set[Registration] = set()  # registers of stored calls, until done
        self._announcer: asyncio.Task[None] | None = None
        self.burst = burst or BurstWindow()
        # operator legs and recording snoops we created, until their StasisStart
        self._entering = Entering()
        self.recorder = CallRecorder(ari, self._entering, recordings_dir)

    # ------------------------------------------------------------------ event intake

    def on_event(self, raw: dict[str, Any]) -> None:
        """ARI event callback: parse, route, never block."""
        event = parse_event(raw)
        kind = event.type
        if kind in (EventType.RECORDING_FINISHED, EventType.RECORDING_FAILED):
            self.recorder.finished(event.recording or "")
            return
        channel_id = event.peer.id if kind == EventType.DIAL and event.peer else event.channel_id
        if kind == EventType.STASIS_START and event.channel is not None:
            channel_id = event.channel.id
            if event.args and event.args[0] in (LEG_ARG, SNOOP_ARG):
                self._entering.arrived(channel_id)
                return
            if channel_id in self._queues:
                return  # re-attached call: already ours
            if not event.channel.name.startswith(self.endpoint_prefix):
                log.warning("call from an unexpected endpoint", extra={"channel": event.channel.name})
            self._start_call(channel_id, event)
            return
        queue = self._queues.get(channel_id or "")
        if queue is not None:
            queue.put_nowait(event)

    def _start_call(self, channel_id: str, event: AriEvent) -> None:
        self.burst.arrived(others_announcing=self._announcing > 0)
        self._announcing += 1  # counted from the event on: its task may not have started yet
        self._announced.clear()
        queue: asyncio.Queue[AriEvent] = asyncio.Queue()
        self._queues[channel_id] = queue
        task = asyncio.create_task(self._run_new_call(channel_id, event, queue), name=f"call-{channel_id}")
        self._tasks[channel_id] = task
        task.add_done_callback(functools.partial(self._forget_task, channel_id))

    def _forget_task(self, channel_id: str, _task: asyncio.Task[None]) -> None:
        self._forget(channel_id)

    def _forget(self, channel_id: str) -> None:
        self._tasks.pop(channel_id, None)
        queue = self._queues.get(channel_id)
        for key in [k for k, q in self._queues.items() if q is queue]:
            self._queues.pop(key, None)

    def _keep(self, task: asyncio.Task[None]) -> None:
        """A call's side task (held until done, cancelled by stop)."""
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def stop(self) -> None:
        tasks = [*self._tasks.values(), *self._side_tasks]
        if self._announcer is not None:
            tasks.append(self._announcer)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def active_calls(self) -> int:
        return len(self._tasks)

    # ------------------------------------------------------------------ one call

    async def _run_new_call(self, channel_id: str, event: AriEvent, queue: asyncio.Queue[AriEvent]) -> None:
        channel = event.channel
        assert channel is not None  # a StasisStart always names its channel
        args = event.args
        called = cf.normalise_number(args[0] if args else None) or cf.normalise_number(channel.exten)
        identity = from_stasis_args(channel.caller_number, args)
        if identity.rejected:
            log.warning("caller identity values rejected", extra={"fields": list(identity.rejected)})
        caller = identity.caller
        wacid = args[1] if len(args) > 1 and args[1] else None
        linkedid = channel.linkedid or channel_id
        try:
            if wacid is None:
                wacid = await self._variable(channel_id, WACID_VARIABLE)
            stored = await self._announce(channel_id, linkedid, caller, called, wacid, identity)
        finally:
            self._announce_done()
        if stored is None:  # database down or broken: the call must still ring somewhere
            await self._to_fallback(channel_id)
            return
        call, ctx, registration, in_burst = stored
        # In a burst, ringback and routing wait behind the announces (bounded): the dialplan's
        # Progress() already gave Meta early media (it drops a call with none within 20 s), so
        # the tone can wait the milliseconds the registers need. A call stored alone joins the
        # burst that began while its register was leaving (the first caller of every burst).
        if in_burst or self._announcing > 0:
            await self._behind_announces(registration)
        if call.customer_id is None:  # its own task: a slow register never holds the call's finish
            self._keep(asyncio.create_task(self._identify_later(call.id, ctx, identity, registration)))
        ringback = asyncio.create_task(self._early_media(channel_id))
        state = cf.CallState(call.id, channel_id, linkedid, caller, call.called, call.started_at)
        try:
            await ringback
            await self._route_and_talk(state, ctx, queue, registration)
        except cf.CallEnded:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call flow failed", extra={"call": call.id})
            await self._hangup(channel_id)
        await self._finish(state, ctx)

    async def _identify_later(
        self, call_id: int, ctx: CallContext, identity: CallerIdentity, registration: Registration | None
    ) -> None:
        """The caller's customer identity, found or made once the call is announced (a caller with
        a number: the register did not need it), then the CRM entity the register bound the call
        to linked to it, as the register's done-hook does for a customer known in time."""
        try:
            # the register's result first (bounded): then one transaction does it all, and in a
            # burst it runs after the registers instead of between them
            if registration is not None:  # a slow portal: the customer row now, the CRM link later
                await asyncio.wait({registration}, timeout=IDENTIFY_AFTER_REGISTER_MAX_S)  # never cancels it
            async with self.sessions() as session, session.begin():
                customer_id = await _customer_id(session, ctx, identity)
                if customer_id is None:
                    return
                await session.execute(update(Call).where(Call.id == call_id).values(customer_id=customer_id))
                if registration is None or registration.done():  # (done meanwhile counts too)
                    await _link_registered(session, customer_id, registration.result() if registration else None)
                    return
            result = await asyncio.shield(registration)
            async with self.sessions() as session, session.begin():
                await _link_registered(session, customer_id, result)
        except asyncio.CancelledError:
            raise
        except Exception:  # the call goes on; only the customer link is missing
            log.exception("caller identification failed", extra={"call": call_id})

    async def _announce(
        self,
        channel_id: str,
        linkedid: str,
        caller: str,
        called: str | None,
        wacid: str | None,
        identity: CallerIdentity | None = None,
    ) -> Stored | None:
        """The call stored by the announcer, its register on its way; None if it could not be stored."""
        future: asyncio.Future[Stored | None] = asyncio.get_running_loop().create_future()
        arrival = _Arrival(channel_id, linkedid, caller, called, wacid, future, identity)
        self._arrivals.append(arrival)
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.create_task(self._announce_arrivals(), name="calls-announcer")
        return await arrival.stored

    async def _announce_arrivals(self) -> None:
        """Store new calls in arrival order (`_announce_with`): in a burst the first caller reaches
        Bitrix24 first instead of behind every other call's row. One session serves the whole
        burst (closing one costs turns of the event loop)."""
        try:
            while self._arrivals:
                async with self.sessions() as session:
                    await self._announce_with(session)
        finally:
            for arrival in self._arrivals:  # stopping: their call tasks are cancelled too
                arrival.stored.cancel()
            self._arrivals.clear()

    async def announced(self) -> None:
        """Returns once no new call is left to store with its register on its way and the
        burst, if any, is over (burst.py: no new call for its quiet period); at once for a call
        that came alone."""
        while not (self._announced.is_set() and self.burst.left() <= 0):
            await self._announced.wait()
            await self.burst.ended()

    def _announce_done(self) -> None:
        self._announcing -= 1
        if self._announcing <= 0:
            self._announcing = 0
            self._announced.set()

    async def _behind_announces(self, registration: Registration | None) -> None:
        """Wait (at most ANNOUNCE_FIRST_MAX_S in all) until the burst is over (`announced`) and the
        registers of the burst, this call's among them, are done: until then its ringback, CRM
        lookup, ringing and identification would only take the box's CPU from the registers of
        the later callers. A call that comes alone does not wait: its lookup runs while its
        register is under way."""
        try:
            async with asyncio.timeout(ANNOUNCE_FIRST_MAX_S):
                while True:  # calls that came while the registers were out extend the burst
                    await self.announced()
                    pending = {r for r in (*self._registrations, registration) if r is not None and not r.done()}
                    if not pending:
                        return
                    await asyncio.wait(pending)  # never cancels them (routing reads them)
        except TimeoutError:
            pass

    async def _announce_with(self, session: AsyncSession) -> None:
        """Announce arrivals with `session` until none is left, or a call cannot be stored (a fresh
        session then). The first arrival is stored alone, so it leaves at once; the calls that
        arrived meanwhile are stored together (group commit: each call with its register, one
        transaction for the group), their registers batching behind the ones already out."""
        alone = True
        while self._arrivals:
            group: list[_Arrival] = []
            while self._arrivals and len(group) < (1 if alone else ANNOUNCE_GROUP_MAX):
                arrival = self._arrivals.popleft()
                if not arrival.stored.done():  # else its call task is gone (stopping): resync picks it up
                    group.append(arrival)
            alone = False
            if not group:
                continue
            try:
                stored = await self._store_calls(session, group)
            except Exception:
                if len(group) > 1:  # one bad call must not send the others to the fallback
                    log.warning("storing calls together failed; storing them one by one", extra={"calls": len(group)})
                    for arrival in group:
                        await self._announce_alone(session, arrival)
                    continue
                log.exception(
                    "cannot store the call; handing it to the dialplan fallback", extra={"channel": group[0].channel_id}
                )
                group[0].stored.set_result(None)
                return
            await self._announced_now(group, stored)

    async def _announce_alone(self, session: AsyncSession, arrival: _Arrival) -> None:
        try:
            stored = await self._store_calls(session, [arrival])
        except Exception:
            log.exception(
                "cannot store the call; handing it to the dialplan fallback", extra={"channel": arrival.channel_id}
            )
            arrival.stored.set_result(None)
            return
        await self._announced_now([arrival], stored)

    async def _announced_now(
        self, group: list[_Arrival], stored: list[tuple[Call, CallContext, Registering | None]]
    ) -> None:
        leaving = []
        in_burst = len(group) > 1 or bool(self._arrivals)  # others arrived with it
        for arrival, (call, ctx, registering) in zip(group, stored, strict=True):
            log.info(
                "whatsapp call",
                extra={
                    "call": call.id,
                    "caller": arrival.caller,
                    "called": arrival.called,
                    "channel": arrival.channel_id,
                },
            )
            arrival.stored.set_result((call, ctx, registering.result if registering else None, in_burst))
            if registering is not None:
                leaving.append(registering.leaving)
                self._registrations.add(registering.result)
                registering.result.add_done_callback(self._registrations.discard)
        if leaving:
            # resumes once the registers' jobs have taken their first step: the requests are on the
            # wire, or queued behind the ones out (or the portal's rate limit) to leave as a batch
            await asyncio.wait(leaving)

    async def _store_calls(
        self, session: AsyncSession, arrivals: list[_Arrival]
    ) -> list[tuple[Call, CallContext, Registering | None]]:
        """Each call's row and its register job, in one transaction; the commit sends the registers."""
        stored = []
        async with session.begin():
            for arrival in arrivals:
                phone_id, ctx = await self._context_for(arrival.called)
                values: dict[str, Any] = {
                    "linkedid": arrival.linkedid,
                    "channel_id": arrival.channel_id,
                    "phone_id": phone_id,
                    "app_instance_id": ctx.app_instance_id,
                    "caller": arrival.caller,
                    "called": arrival.called or "unknown",
                    "wacid": arrival.wacid,
                    "state": "ringing",
                    "started_at": utcnow(),
                    "detail": {},
                    "customer_id": (
                        await _customer_id(session, ctx, arrival.identity) if _identify_first(arrival.caller) else None
                    ),
                    "asterisk": self.asterisk,
                }
                call = Call(**values)
                # the hot path of every call: a compiled INSERT, not the ORM's flush (fast_insert.py)
                call.id = await insert_returning_id(session, CALLS, values)
                stored.append((call, ctx, await self.notifier.registered(session, call, ctx)))
        return stored

    async def _route_and_talk(
        self,
        state: cf.CallState,
        ctx: CallContext,
        queue: asyncio.Queue[AriEvent],
        registration: Registration | None = None,
    ) -> None:
        responsible = await self._safe_responsible(ctx, state, registration)
        if responsible is not None and responsible.user_id is not None:
            # a missed call is logged on the caller's CRM owner (finish USER_ID)
            async with self.sessions() as session, session.begin():
                call = await session.get(Call, state.call_id)
                assert call is not None
                call.detail = {**call.detail, "responsible_user_id": responsible.user_id}
        for stage in cf.plan_route(responsible, ctx.settings):
            operator = await self._ring_stage(state, ctx, stage, queue)
            if operator is not None:
                await self._talk(state, ctx, operator, queue)
                return
        # nobody answered: end the WhatsApp leg ourselves
        await self._hangup(state.channel_id)

    async def _ring_stage(
        self, state: cf.CallState, ctx: CallContext, stage: cf.RingStage, queue: asyncio.Queue[AriEvent]
    ) -> Operator | None:
        legs: dict[str, cf.Leg] = {}
        for operator in stage.operators:
            leg_id = await self._originate_leg(state, ctx, operator, stage.seconds)
            if leg_id is None:
                state.legs[f"failed-{operator.extension}-{len(state.legs)}"] = cf.Leg(operator, "", "CHANUNAVAIL")
                continue
            leg = cf.Leg(operator, leg_id)
            legs[leg_id] = leg
            state.legs[leg_id] = leg
            self._queues[leg_id] = queue
        if not legs:
            return None
        async with self.sessions() as session, session.begin():
            call = await session.get(Call, state.call_id)
            assert call is not None
            await self.notifier.ringing(session, call, ctx, [leg.operator for leg in legs.values()])
        deadline = asyncio.get_running_loop().time() + stage.seconds
        winner: cf.Leg | None = None
        try:
            while winner is None and any(leg.result is None for leg in legs.values()):
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    async with asyncio.timeout(timeout):
                        event = await queue.get()
                except TimeoutError:
                    break
                winner = self._leg_event(state, legs, event)
        finally:
            # also when the caller hung up (cf.CallEnded): no operator phone may keep ringing
            for leg in legs.values():
                if leg is winner:
                    continue
                if leg.result is None:
                    leg.result = "NOANSWER"
                await self._hangup(leg.channel_id)  # a leg that already ended answers 404: ignored
                self._queues.pop(leg.channel_id, None)
        if winner is None:
            return None
        state.answered_by = winner.operator
        state.answered_at = utcnow()
        others = [leg.operator for leg in legs.values() if leg is not winner]
        async with self.sessions() as session, session.begin():
            call = await session.get(Call, state.call_id)
            assert call is not None
            call.state = "connected"
            call.answered_at = state.answered_at
            call.answered_by_extension = winner.operator.extension
            call.answered_by_user_id = winner.operator.user_id
            call.detail = {**call.detail, "operator_channel": winner.channel_id}
            await self.notifier.answered(session, call, ctx, winner.operator, others)
        return winner.operator

    def _leg_event(self, state: cf.CallState, legs: dict[str, cf.Leg], event: AriEvent) -> cf.Leg | None:
        """Apply one event during ringing; returns the leg that answered, if any."""
        kind = event.type
        channel_id = event.channel_id
        if channel_id == state.channel_id and kind in (*HANG_UP, EventType.CHANNEL_HANGUP_REQUEST):
            state.caller_hung_up = True
            for ringing in legs.values():
                if ringing.result is None:
                    ringing.result = "CANCEL"
            raise cf.CallEnded
        if kind == EventType.DIAL:
            leg = legs.get(event.peer.id if event.peer else "")
            status = event.dialstatus
            if leg is not None and leg.result is None and status in FINAL_DIAL_STATUSES:
                leg.result = str(status)
                if status == DialStatus.ANSWER:
                    return leg
            return None
        leg = legs.get(channel_id or "")
        if leg is None:
            return None
        if (
            kind == EventType.CHANNEL_STATE_CHANGE
            and event.channel is not None
            and event.channel.state == ChannelState.UP
            and leg.result is None
        ):
            leg.result = "ANSWER"
            return leg
        if kind == EventType.CHANNEL_HANGUP_REQUEST and event.cause is not None:
            leg.cause = event.cause  # StasisEnd that follows carries no cause
        if kind in HANG_UP and leg.result is None:
            leg.result = cf.dial_result_from_cause(event.cause or leg.cause)
        return None

    async def _talk(
        self, state: cf.CallState, ctx: CallContext, operator: Operator, queue: asyncio.Queue[AriEvent]
    ) -> None:
        assert state.answered_by is not None
        leg_id = next(cid for cid, leg in state.legs.items() if leg.result == "ANSWER")
        await self._stop_early_media(state.channel_id)
        try:
            await self.ari.request("POST", f"/channels/{state.channel_id}/answer")
        except AriError as exc:  # the caller hung up just as the operator answered: a normal race
            log.info("caller left as the operator answered", extra={"call": state.call_id, "error": str(exc)})
            await self._hangup(leg_id)
            return
        bridge = await self.ari.request(
            "POST", "/bridges", params={"type": "mixing", "name": f"thoth-{state.linkedid}"}
        )
        state.bridge_id = bridge["id"]
        await self.ari.request(
            "POST",
            f"/bridges/{state.bridge_id}/addChannel",
            params={"channel": f"{state.channel_id},{leg_id}", "inhibitConnectedLineUpdates": True},
        )
        if ctx.settings.record:
            await self.recorder.start(state)
        await self._wait_for_hangup(state, {state.channel_id, leg_id}, queue)
        await self._end_bridge(state)
        for channel_id in (state.channel_id, leg_id):
            await self._hangup(channel_id)

    async def _end_bridge(self, state: cf.CallState) -> None:
        """Stop the recording (so the file is complete), end its snoop, destroy the bridge."""
        await self.recorder.stop(state)
        if state.recorder_channel:
            await self._hangup(state.recorder_channel)
        if state.bridge_id:
            try:
                await self.ari.request("DELETE", f"/bridges/{state.bridge_id}")
            except AriError:
                pass

    async def _wait_for_hangup(self, state: cf.CallState, channels: set[str], queue: asyncio.Queue[AriEvent]) -> None:
        while True:
            event = await queue.get()
            if event.channel_id in channels and event.type in HANG_UP:
                return

    async def _finish(self, state: cf.CallState, ctx: CallContext) -> None:
        ended = utcnow()
        recording_path = await self.recorder.fetch(state) if state.recording else None
        async with self.sessions() as session, session.begin():
            call = await session.get(Call, state.call_id)
            assert call is not None
            if call.state == "ended":
                return
            call.state = "ended"
            call.ended_at = ended
            call.status_code = cf.finish_status(
                answered=state.answered_at is not None,
                caller_hung_up_first=state.caller_hung_up,
                dial_results=state.dial_results(),
            )
            call.recording_path = str(recording_path) if recording_path else None
            call.detail = {
                **call.detail,
                "dial_results": state.dial_results(),
                "duration": cf.talk_seconds(state.answered_at, ended),
            }
            await self.notifier.finished(session, call, ctx)
        log.info("whatsapp call ended", extra={"call": state.call_id, "status_code": call.status_code})

    # ------------------------------------------------------------------ restart recovery

    # ------------------------------------------------------------------ ARI helpers

    async def _context_for(self, called: str | None) -> tuple[int | None, CallContext]:
        """Phone id and portal context of a business number; cached (the hot path of every call)."""

        async def load() -> tuple[int | None, CallContext]:
            async with self.sessions() as session:
                phone = await self._phone_for(session, called)
                ctx = await self.notifier.context(session, phone)
            return (phone.id if phone else None), ctx

        return await self._contexts.get(called, load)

    async def _phone_for(self, session: AsyncSession, number: str | None) -> Phone | None:
        if number is None:
            return None
        return await session.scalar(select(Phone).where(Phone.number == number))

    async def _safe_responsible(
        self, ctx: CallContext, state: cf.CallState, registration: Registration | None
    ) -> Operator | None:
        try:
            async with asyncio.timeout(3.0):
                return await self.notifier.responsible(ctx, state.caller, state.linkedid, registration)
        except Exception as exc:  # Bitrix down or slow: route to the group
            log.warning("responsible lookup failed", extra={"error": str(exc) or type(exc).__name__})
            return None

    async def _originate_leg(
        self, state: cf.CallState, ctx: CallContext, operator: Operator, seconds: int
    ) -> str | None:
        if not is_extension(operator.extension):  # defence in depth: every source is validated before
            log.warning(
                "refused to dial a value that is not an extension", extra={"extension": operator.extension[:80]}
            )
            return None
        endpoint = ctx.settings.operator_endpoint.format(extension=operator.extension)
        leg_id = f"{state.channel_id}-{operator.extension}-{uuid.uuid4().hex[:8]}"
        self._queues[leg_id] = self._queues[state.channel_id]
        async with self._entering.expect(leg_id) as entered:
            return await self._create_and_dial(state, operator, endpoint, leg_id, entered, seconds)

    async def _create_and_dial(
        self,
        state: cf.CallState,
        operator: Operator,
        endpoint: str,
        leg_id: str,
        entered: asyncio.Future[None],
        seconds: int,
    ) -> str | None:
        try:
            await self.ari.request(
                "POST",
                "/channels/create",
                params={
                    "endpoint": endpoint,
                    "app": self.ari.app,
                    "appArgs": f"{LEG_ARG},{state.call_id}",
                    "originator": state.channel_id,
                    "channelId": leg_id,
                },
            )
            async with asyncio.timeout(5.0):
                await entered
            await self.ari.request(
                "POST", f"/channels/{leg_id}/dial", params={"caller": state.channel_id, "timeout": seconds + 1}
            )
            return leg_id
        except (TimeoutError, AriError) as exc:
            log.warning(
                "cannot ring operator", extra={"extension": operator.extension, "error": str(exc) or "no StasisStart"}
            )
            self._queues.pop(leg_id, None)
            await self._hangup(leg_id)
            return None

    async def _early_media(self, channel_id: str) -> None:
        try:
            await self.ari.request(
                "POST", f"/channels/{channel_id}/play/thoth-ringback-{channel_id}", params={"media": "tone:ring"}
            )
        except AriError as exc:
            log.warning("ringback failed", extra={"channel": channel_id, "error": str(exc)})

    async def _stop_early_media(self, channel_id: str) -> None:
        try:
            await self.ari.request("DELETE", f"/playbacks/thoth-ringback-{channel_id}")
        except AriError:
            pass  # already finished

    async def _to_fallback(self, channel_id: str) -> None:
        """Leave Stasis for the dialplan's `fallback` label (fallback_dial, as when we are down)."""
        try:
            await self.ari.request("POST", f"/channels/{channel_id}/continue", params={"label": "fallback"})
        except AriError as exc:
            log.warning("dialplan fallback failed", extra={"channel": channel_id, "error": str(exc)})

    async def _variable(self, channel_id: str, name: str) -> str | None:
        try:
            reply = await self.ari.request("GET", f"/channels/{channel_id}/variable", params={"variable": name})
        except AriError:
            return None
        value = (reply or {}).get("value")
        return value or None

    async def _hangup(self, channel_id: str) -> None:
        try:
            await self.ari.request("DELETE", f"/channels/{channel_id}")
        except AriError:
            pass  # already gone
