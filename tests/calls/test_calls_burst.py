"""A burst of WhatsApp calls arriving together (issue 19): the first caller reaches Bitrix24 first,
alone, without waiting for the later calls to be stored; the later calls follow in batches behind
it; every call is still logged once, in order.

Real parts: Meta's Asterisk places the calls (TLS, SDES-SRTP, Opus) all at once, our Asterisk
puts them into Stasis, the service runs in this process with the Bitrix24 simulator, whose hook
records each register as it is executed (and whether it came in a `batch`). The test asserts
the order of events, never a duration.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.calls.conftest import BUSINESS
from tests.calls.lab import CallLab
from tests.calls.service import Thoth, start_thoth, stop_thoth
from tests.support.bitrix import chain_order, wait_until
from thoth_pbx.clients.asterisk.ari import basic_auth_header
from thoth_pbx.clients.asterisk.events import EventType
from thoth_pbx.sandbox.bitrix import Recorded

REGISTER = "telephony.externalcall.register"
BURST = 20


@pytest.fixture
async def thoth(tmp_path: Path, lab: CallLab) -> AsyncIterator[Thoth]:
    t = await start_thoth(tmp_path, lab, record=False)
    yield t
    await stop_thoth(t)


async def _place_at_once(lab: CallLab, callers: list[str]) -> list[str]:
    """Meta's ARI originates every call in one go (one connection each); returns Meta's channel ids."""
    meta = lab.meta
    digits = BUSINESS.lstrip("+")
    auth = {"Authorization": basic_auth_header(meta.ari_user, meta.ari_password)}
    async with aiohttp.ClientSession(base_url=meta.ari_base, headers=auth) as http:

        async def one(i: int, caller: str) -> str:
            params = {
                "endpoint": f"PJSIP/{BUSINESS}@biz{digits}",
                "context": "caller",
                "extension": "s",
                "priority": "1",
                "callerId": caller,
                "timeout": "60",
            }
            body = {"variables": {"PJSIP_HEADER(add,X-WA-Meta-WACID)": f"wacid.burst{i:03d}"}}
            async with http.post("/ari/channels", params=params, json=body) as resp:
                resp.raise_for_status()
                return str((await resp.json())["id"])

        return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(callers))))


async def test_a_burst_announces_the_first_caller_at_once_alone_and_batches_the_rest_behind_it(
    thoth: Thoth, lab: CallLab
) -> None:
    await thoth.set_calls(ring_group=["101"], group_ring_seconds=20, responsible_first_seconds=0)
    database = Path(thoth.services.settings.database_url.split("///", 1)[1])
    callers = [f"+7999100{i:04d}" for i in range(BURST)]
    seen: list[tuple[str, int | None]] = []  # (EXTERNAL_CALL_ID, the batch request it came in) per register

    def on_processed(_portal: Any, entry: Recorded) -> None:
        if entry.method == REGISTER and entry.ok:
            seen.append((str(entry.params["EXTERNAL_CALL_ID"]), entry.batch))

    thoth.sim.on_processed = on_processed
    meta_channels = await _place_at_once(lab, callers)
    try:
        await wait_until(lambda: len(seen) >= BURST, timeout=30, what=f"{BURST} registers")
    finally:
        for channel in meta_channels:
            await asyncio.to_thread(lab.hangup_meta, channel)
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        marks = ",".join("?" * BURST)
        rows = db.execute(f"SELECT linkedid FROM call WHERE caller IN ({marks}) ORDER BY id", callers).fetchall()
    stored_order = [linkedid for (linkedid,) in rows]
    assert len(stored_order) == BURST and sorted(lid for lid, _ in seen) == sorted(stored_order)
    # the first call stored is announced first, in a request of its own: it waited for no other
    # call of the burst (before issue 19 it left inside a batch with the calls stored after it)
    assert seen[0] == (stored_order[0], None), seen
    # the later calls follow behind it, batched: far fewer requests than calls
    requests = {batch if batch is not None else f"alone-{lid}" for lid, batch in seen}
    assert len(requests) <= BURST // 2, seen
    # and each call is still logged exactly once: one register and one finish
    await wait_until(
        lambda: all(chain_order(thoth.sim).get(lid, []).count("finish") == 1 for lid in stored_order),
        timeout=30,
        what="every call of the burst finished in Bitrix24",
    )
    order = chain_order(thoth.sim)
    assert all(order[lid].count("register") == 1 and order[lid][0] == "register" for lid in stored_order), order


async def test_asterisk_sends_our_app_only_the_events_the_call_flow_reads(thoth: Thoth) -> None:
    """Each call brought ~19 ARI events, 11 of them (ChannelVarset, ChannelDialplan, Playback*)
    parsed for nothing while a burst waits to be announced; the app's event filter (ARI
    `PUT /applications/{app}/eventFilter`, https://www.asterisk.org/filtering-event-types-ari/)
    keeps them in Asterisk. Set on connect; the Application model lists it in `events_allowed`."""
    ari = thoth.services.ari
    await thoth.services.calls.resync()  # what every (re)connect runs; waits for the start-up one
    app = await ari.request("GET", f"/applications/{ari.app}")
    allowed = {entry["type"] for entry in app.get("events_allowed", [])}
    assert allowed == {kind.value for kind in EventType if kind is not EventType.UNKNOWN}, app
