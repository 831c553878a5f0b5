"""Calls survive what production throws at them: a killed service, a restarted Asterisk,
a Bitrix24 outage, and many calls at once -- and every call is logged exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.calls.conftest import BUSINESS
from tests.calls.lab import CallLab
from tests.calls.service import ServeProcess, Thoth, new_simulator, seed, start_thoth, stop_thoth, thoth_environ
from tests.support.bitrix import wait_until
from thoth_pbx.app import close_services, open_services
from thoth_pbx.core.settings import load_settings
from thoth_pbx.features.calls.models import Call
from thoth_pbx.sandbox.bitrix import BitrixSimulator
from thoth_pbx.store import db

REGISTER, SHOW, FINISH = (
    "telephony.externalcall.register",
    "telephony.externalcall.show",
    "telephony.externalcall.finish",
)


@dataclass
class Served:
    """A seeded database handed to a real `thoth-pbx serve` process (so it can be SIGKILLed)."""

    sim: BitrixSimulator
    serve: ServeProcess
    engine: AsyncEngine

    @classmethod
    async def start(cls, tmp_path: Path, lab: CallLab) -> Served:
        sim, portal = await new_simulator()
        environ = thoth_environ(tmp_path, lab, sim)
        settings = load_settings(None, environ=environ)
        services = await open_services(settings)  # migrate and seed, then hand the database to the process
        await seed(services, sim, portal, record=False)
        await close_services(services)
        served = cls(sim, ServeProcess(environ, tmp_path / "serve.log"), db.create_engine(settings.database_url))
        served.serve.start()
        return served

    async def row(self, caller: str, state: str) -> Call | None:
        async with db.session_factory(self.engine)() as session:
            call = (await session.scalars(select(Call).where(Call.caller == caller))).first()
            return call if call is not None and call.state == state else None

    async def connect_then_kill(self, lab: CallLab, caller: str) -> tuple[dict, Call]:
        """A WhatsApp call answered by an operator, then `serve` SIGKILLed mid-call."""
        await self.serve.wait_ari()
        placed = lab.whatsapp_call(BUSINESS, caller)
        call = await wait_until(lambda: self.row(caller, "connected"), timeout=20, what="call connected")
        # the answer reaches the WhatsApp side over SIP a moment after our row says connected
        await wait_until(lambda: self.meta_leg_up(lab, placed), timeout=10, what="WhatsApp leg answered")
        self.serve.kill()
        return placed, call

    @staticmethod
    async def meta_leg_up(lab: CallLab, placed: dict) -> bool:
        return any(c["id"] == placed["meta_channel"] and c["state"] == "Up" for c in lab.meta_channels())

    async def stop(self) -> None:
        self.serve.stop()
        await self.engine.dispose()
        await self.sim.stop()


@pytest.fixture
async def thoth(tmp_path: Path, lab: CallLab) -> AsyncIterator[Thoth]:
    t = await start_thoth(tmp_path, lab, record=False)
    yield t
    await stop_thoth(t)


async def _talk(seconds: float) -> None:
    await asyncio.sleep(seconds)  # the conversation itself: a scenario duration, not a synchronisation


def _methods(thoth_or_sim_calls: list[tuple[str, dict]]) -> list[str]:
    return [m for m, _ in thoth_or_sim_calls]


async def test_killed_service_call_keeps_working_and_is_finished_after_restart(tmp_path: Path, lab: CallLab) -> None:
    served = await Served.start(tmp_path, lab)
    sim, serve, row = served.sim, served.serve, served.row
    try:
        caller = "+79990000101"
        placed, call = await served.connect_then_kill(lab, caller)
        await _talk(1.2)
        # Asterisk keeps the bridge: the WhatsApp leg is still up while thoth-pbx is dead
        assert await served.meta_leg_up(lab, placed)
        serve.start()
        await serve.wait_ari()
        await _talk(0.5)
        lab.hangup_meta(placed["meta_channel"])
        ended = await wait_until(lambda: row(caller, "ended"), timeout=20, what="call finished after restart")
        assert ended.status_code == "200" and ended.answered_by_extension == "101"

        def seen() -> list[tuple[str, dict]]:
            ids = {
                str(e.result.get("CALL_ID"))
                for e in sim.recorder.calls(REGISTER, ok=True)
                if e.params.get("EXTERNAL_CALL_ID") == call.linkedid
            }
            return [
                (e.method, e.params)
                for e in sim.recorder.entries
                if e.ok and (e.params.get("EXTERNAL_CALL_ID") == call.linkedid or str(e.params.get("CALL_ID")) in ids)
            ]

        await wait_until(lambda: FINISH in _methods(seen()), timeout=20, what="finish delivered")
        counts = Counter(_methods(seen()))
        assert counts[REGISTER] == 1 and counts[FINISH] == 1
        finish = next(p for m, p in seen() if m == FINISH)
        assert finish["STATUS_CODE"] == "200" and finish["USER_ID"] == 2 and finish["DURATION"] >= 2
    finally:
        await served.stop()


async def test_call_that_ended_while_the_service_was_dead_is_finished_on_restart(tmp_path: Path, lab: CallLab) -> None:
    served = await Served.start(tmp_path, lab)
    sim, serve, row = served.sim, served.serve, served.row
    try:
        caller = "+79990000104"
        placed, call = await served.connect_then_kill(lab, caller)
        await _talk(1.5)
        lab.hangup_meta(placed["meta_channel"])  # the call ends while nobody watches
        await wait_until(
            lambda: not any(c["id"] == call.channel_id for c in lab.business_channels()),
            timeout=10,
            what="WhatsApp leg gone on our Asterisk",
        )
        serve.start()
        ended = await wait_until(lambda: row(caller, "ended"), timeout=30, what="orphan finished on restart")
        assert ended.status_code == "200" and ended.answered_by_user_id == 2
        await wait_until(lambda: sim.recorder.count(FINISH, ok=True) == 1, timeout=20, what="finish delivered")
        finish = sim.recorder.calls(FINISH, ok=True)[0].params
        assert finish["STATUS_CODE"] == "200" and finish["DURATION"] >= 1
    finally:
        await served.stop()


async def test_dialplan_fallback_rings_an_operator_while_thoth_is_down(lab: CallLab) -> None:
    caller = "+79990000105"
    placed = lab.whatsapp_call(BUSINESS, caller)  # no thoth-pbx running: the Stasis app is not registered

    def answered_by_fallback() -> bool:
        return any(c["name"].startswith("PJSIP/102-") and c["state"] == "Up" for c in lab.business_channels())

    await wait_until(answered_by_fallback, timeout=20, what="operator 102 answered through the fallback Dial")
    lab.hangup_meta(placed["meta_channel"])


async def test_asterisk_restart_ari_reconnects_and_next_call_works(thoth: Thoth, lab: CallLab) -> None:
    before = thoth.services.ari.connections
    lab.business.restart()
    await wait_until(
        lambda: thoth.services.ari.connections > before and thoth.services.ari.connected,
        timeout=30,
        what="ARI reconnected",
    )
    caller = "+79990000102"
    placed = lab.whatsapp_call(BUSINESS, caller)
    call = await thoth.wait_call(caller, "connected")
    lab.hangup_meta(placed["meta_channel"])
    ended = await thoth.wait_call(caller, "ended")
    assert ended.status_code == "200"
    await wait_until(lambda: FINISH in _methods(thoth.bitrix_calls(call.linkedid)), what="finish delivered")


async def test_bitrix_down_during_the_call_everything_delivered_after(thoth: Thoth, lab: CallLab) -> None:
    thoth.sim.outage = True
    caller = "+79990000103"
    placed = lab.whatsapp_call(BUSINESS, caller)
    call = await thoth.wait_call(caller, "connected")  # the operator is reached without Bitrix
    lab.hangup_meta(placed["meta_channel"])
    ended = await thoth.wait_call(caller, "ended")
    assert ended.status_code == "200"
    assert thoth.bitrix_calls(call.linkedid) == []
    thoth.sim.outage = False
    thoth.services.outbox.wake()
    await wait_until(
        lambda: FINISH in _methods(thoth.bitrix_calls(call.linkedid)),
        timeout=60,
        what="jobs delivered after the outage",
    )
    assert _methods(thoth.bitrix_calls(call.linkedid)) == [REGISTER, SHOW, FINISH]


async def test_twenty_simultaneous_calls_each_logged_exactly_once(thoth: Thoth, lab: CallLab) -> None:
    callers = [f"+7999100{n:04d}" for n in range(20)]
    for n, caller in enumerate(callers):  # every caller's CRM owner is a different operator
        thoth.portal.crm[caller.lstrip("+")] = [
            {"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": 500 + n, "NAME": f"Client {n}", "ASSIGNED_BY_ID": 100 + n}
        ]
    await thoth.set_calls(ring_group=["101"], responsible_first_seconds=15, group_ring_seconds=5)
    placed = [lab.whatsapp_call(BUSINESS, caller) for caller in callers]
    connected = [await thoth.wait_call(caller, "connected", timeout=40) for caller in callers]
    assert sorted(c.answered_by_extension for c in connected) == sorted(str(200 + n) for n in range(20))
    await _talk(1.0)
    for p in placed:
        lab.hangup_meta(p["meta_channel"])
    for caller in callers:
        assert (await thoth.wait_call(caller, "ended", timeout=40)).status_code == "200"
    linkedids = {c.linkedid for c in connected}
    assert len(linkedids) == 20
    await wait_until(
        lambda: all(FINISH in _methods(thoth.bitrix_calls(lid)) for lid in linkedids), timeout=60, what="20 finishes"
    )
    for lid in linkedids:
        counts = Counter(_methods(thoth.bitrix_calls(lid)))
        assert counts[REGISTER] == 1 and counts[FINISH] == 1, (lid, counts)
    registered_ids = [
        e.result["CALL_ID"]
        for e in thoth.sim.recorder.calls(REGISTER, ok=True)
        if e.params["EXTERNAL_CALL_ID"] in linkedids
    ]
    assert len(set(registered_ids)) == 20


async def test_a_call_whose_stasisstart_was_lost_is_picked_up_by_the_resync(thoth: Thoth, lab: CallLab) -> None:
    """thoth-pbx went away between a call's StasisStart and its row: the next (re)connect adopts it."""
    await thoth.set_calls(ring_group=["101"], responsible_first_seconds=0, group_ring_seconds=10)
    ari, calls = thoth.services.ari, thoth.services.calls
    # the start-up resync done first (same lock): run late, it would adopt the call itself
    await calls.resync()
    lost: list[dict] = []

    def lossy(event: dict) -> None:  # the crash window, made exact: this StasisStart is never handled
        if event.get("type") == "StasisStart" and not lost:
            lost.append(event)
            return
        calls.on_event(event)

    ari.on_event = lossy
    caller = "+79990000110"
    placed = lab.whatsapp_call(BUSINESS, caller)
    await wait_until(lambda: lost, what="the StasisStart")
    assert await thoth.call_row(caller=caller) is None
    ari.on_event = calls.on_event
    await calls.resync()  # what every ARI (re)connect runs
    call = await thoth.wait_call(caller, "connected")
    assert call.channel_id == lost[0]["channel"]["id"] and call.wacid == placed["wacid"]
    lab.hangup_meta(placed["meta_channel"])
    assert (await thoth.wait_call(caller, "ended")).status_code == "200"
    await wait_until(lambda: FINISH in _methods(thoth.bitrix_calls(call.linkedid)), what="finish delivered")
    assert _methods(thoth.bitrix_calls(call.linkedid)).count(REGISTER) == 1


async def test_a_call_that_cannot_be_stored_goes_to_the_dialplan_fallback(thoth: Thoth, lab: CallLab) -> None:
    from sqlalchemy import text

    calls = thoth.services.calls
    await calls.resync()  # waits for the start-up resync (same lock) so it does not meet the rename
    async with thoth.services.engine.begin() as conn:  # the database refuses the call row
        await conn.execute(text("ALTER TABLE call RENAME TO call_away"))
    try:
        await calls.resync()  # a resync that cannot read the calls reports it and returns
        assert thoth.services.ari.connected
        placed = lab.whatsapp_call(BUSINESS, "+79990000111")

        def answered_by_fallback() -> bool:
            return any(c["name"].startswith("PJSIP/102-") and c["state"] == "Up" for c in lab.business_channels())

        await wait_until(answered_by_fallback, timeout=20, what="operator 102 answered through the fallback Dial")
        lab.hangup_meta(placed["meta_channel"])
    finally:
        async with thoth.services.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE call_away RENAME TO call"))
