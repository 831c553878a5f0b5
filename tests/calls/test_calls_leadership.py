"""Two `thoth-pbx serve` processes on one PostgreSQL and one Asterisk (issue 16): exactly one owns
the Stasis app, so a WhatsApp call is taken once; when the owner is SIGKILLed during live calls,
the standby takes over, re-attaches to the calls as a restart does, finishes each once, and
answers the next call. bench/takeover.py measures how long the takeover takes.

What the call flow hands Bitrix24 is checked where it is decided: the outbox jobs it stores in the
call's own transactions (one register, one finish per call, the finish's status and operator).
Their delivery once each by two instances' outboxes is the outbox's part of issue 16 (claims that
skip and expire across instances), tested with the outbox.

Asterisk gives an application to one websocket at a time (ApplicationReplaced):
https://github.com/asterisk/asterisk/blob/master/rest-api/api-docs/events.json (model ApplicationReplaced)
PostgreSQL advisory locks: https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.calls.cluster import JOB_FINISH, JOB_REGISTER, Cluster, start_call_lab
from tests.calls.conftest import BUSINESS
from tests.calls.lab import CallLab, stop_lab
from tests.calls.service import ServeProcess
from tests.support.bitrix import wait_until
from tests.support.postgres import PostgresServer
from tests.support.tcp_proxy import FreezableProxy
from thoth_pbx.features.calls.models import Call

LIVE_CALLS = 10


@pytest.fixture(scope="module")
def leader_lab() -> Iterator[CallLab]:
    lab = start_call_lab("leadership")
    yield lab
    stop_lab(lab)


@pytest.fixture
async def cluster(tmp_path: Path, leader_lab: CallLab, postgres_server: PostgresServer) -> AsyncIterator[Cluster]:
    name, url = postgres_server.create_database()
    two = await Cluster.start(tmp_path, leader_lab, url)
    yield two
    await two.stop()
    postgres_server.drop_database(name)


async def stasis_owner_gauge(server: ServeProcess) -> float | None:
    auth = {"Authorization": aiohttp.encode_basic_auth("admin", "correct-horse-battery")}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{server.port}/metrics", headers=auth) as resp:
            text = await resp.text()
    for family in text_string_to_metric_families(text):
        if family.name == "thoth_stasis_owner":
            return sum(sample.value for sample in family.samples)
    return None


async def panel_stasis_role(server: ServeProcess) -> tuple[str, str]:
    """(Stasis role, ARI badge) on the instance's panel dashboard, signed in as an admin would."""
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(base + "/panel/login") as resp:
            token = re.search(r'name="_csrf" value="([^"]+)"', await resp.text())
        assert token is not None
        form = {"_csrf": token.group(1), "user": "admin", "password": "correct-horse-battery", "next": "/panel/"}
        async with http.post(base + "/panel/login", data=form) as resp:
            page = await resp.text()
    role = re.search(r'<tr id="stasis-role">.*?data-state="([a-z]+)"', page, re.S)
    ari = re.search(r"<th>ARI</th><td><span[^>]*data-state=\"([a-z_]+)\"", page)
    assert role is not None and ari is not None, page[:2000]
    return role.group(1), ari.group(1)


async def _talk(seconds: float) -> None:
    await asyncio.sleep(seconds)  # the conversation itself: a scenario duration, not a synchronisation


async def logged_once(cluster: Cluster, call: Call) -> dict:
    """The call's jobs: one register and one finish; returns the finish's parameters."""
    jobs = await cluster.jobs_of(call.linkedid)
    counts = Counter(kind for kind, _ in jobs)
    assert counts[JOB_REGISTER] == 1 and counts[JOB_FINISH] == 1, (call.linkedid, counts)
    return next(payload for kind, payload in jobs if kind == JOB_FINISH)


async def delivered_once(cluster: Cluster, call: Call) -> None:
    """Bitrix24 has one call log for the call, finished once, whichever instance's outbox sent
    its jobs (claims that skip each other across instances, issue 16). A register may be sent
    again after an instance died mid-request: Bitrix24 answers an identical register with the
    same CALL_ID (features/calls/jobs.py), so that is still one call log."""

    await wait_until(
        lambda: cluster.finishes(call.linkedid) >= 1, timeout=60, what=f"the finish of {call.caller} in Bitrix24"
    )
    assert len(cluster.call_ids(call.linkedid)) == 1, call.caller
    assert cluster.finishes(call.linkedid) == 1, call.caller


async def test_one_owner_takes_each_call_once(cluster: Cluster, leader_lab: CallLab) -> None:
    owner = await cluster.settled_owner()
    (standby,) = [s for s in cluster.servers if s is not owner]
    assert await stasis_owner_gauge(owner) == 1.0 and await stasis_owner_gauge(standby) == 0.0
    standby_health = await standby.health()
    assert standby_health["status"] == "ok" and standby_health["ari"]["state"] != "connected"
    # the panel says which instance holds the app; a standby's closed ARI is not shown as down
    assert await panel_stasis_role(owner) == ("owner", "connected")
    assert await panel_stasis_role(standby) == ("standby", "standby")
    caller = "+79990002001"
    placed = leader_lab.whatsapp_call(BUSINESS, caller)
    await wait_until(lambda: cluster.row(caller, "connected"), timeout=20, what="call connected")
    await _talk(0.5)
    leader_lab.hangup_meta(placed["meta_channel"])
    ended = await wait_until(lambda: cluster.row(caller, "ended"), timeout=20, what="call ended")
    assert ended.status_code == "200" and len(await cluster.calls_of(caller)) == 1
    assert (await logged_once(cluster, ended))["STATUS_CODE"] == "200"
    assert "whatsapp call" in owner.log.read_text()
    assert "whatsapp call" not in standby.log.read_text()


async def test_owner_killed_during_live_calls_the_standby_finishes_them_and_takes_the_next(
    cluster: Cluster, leader_lab: CallLab
) -> None:
    owner = await cluster.settled_owner()
    callers = [f"+7999000{3000 + n}" for n in range(LIVE_CALLS)]
    placed = {caller: leader_lab.whatsapp_call(BUSINESS, caller) for caller in callers}
    for caller in callers:
        await wait_until(lambda c=caller: cluster.row(c, "connected"), timeout=40, what=f"{caller} connected")
    meta_up = {p["meta_channel"] for p in placed.values()}
    await wait_until(
        lambda: meta_up <= {c["id"] for c in leader_lab.meta_channels() if c["state"] == "Up"},
        timeout=20,
        what="every WhatsApp leg answered",
    )
    owner.kill()
    new_owner = await cluster.settled_owner(timeout=30)
    assert new_owner is not owner
    await _talk(1.0)
    # the calls kept talking through the takeover: Asterisk holds the bridges
    assert meta_up <= {c["id"] for c in leader_lab.meta_channels() if c["state"] == "Up"}
    for caller in callers:
        leader_lab.hangup_meta(placed[caller]["meta_channel"])
    for caller in callers:
        ended = await wait_until(lambda c=caller: cluster.row(c, "ended"), timeout=40, what=f"{caller} finished")
        assert ended.status_code == "200" and ended.answered_by_extension == "101"
        assert len(await cluster.calls_of(caller)) == 1
        finish = await logged_once(cluster, ended)
        assert finish["STATUS_CODE"] == "200" and finish["USER_ID"] == 2 and finish["DURATION"] >= 1
        await delivered_once(cluster, ended)
    # the new owner answers the next call
    caller = "+79990003999"
    next_call = leader_lab.whatsapp_call(BUSINESS, caller)
    await wait_until(lambda: cluster.row(caller, "connected"), timeout=20, what="next call answered")
    leader_lab.hangup_meta(next_call["meta_channel"])
    ended = await wait_until(lambda: cluster.row(caller, "ended"), timeout=20, what="next call ended")
    assert ended.status_code == "200"
    await logged_once(cluster, ended)
    await delivered_once(cluster, ended)
    assert "whatsapp call" in new_owner.log.read_text()


async def test_an_owner_cut_off_from_the_database_steps_down_before_the_standby_takes_the_calls(
    tmp_path: Path, leader_lab: CallLab, postgres_server: PostgresServer
) -> None:
    """The owner reaches PostgreSQL through a relay that goes silent (a network cut: no FIN, no
    RST). It steps down (3 s without an answer) before the server ends its silent session (10 s,
    idle_session_timeout) and frees the lock; the standby then takes the live calls over."""
    name, url = postgres_server.create_database()
    parts = urlsplit(url)
    relay = FreezableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    relay_port = await relay.start()
    through_relay = url.replace(f":{parts.port}/", f":{relay_port}/")
    cluster = await Cluster.start(tmp_path, leader_lab, url, reach={0: through_relay}, first_owns=True)
    cut_off, standby = cluster.servers
    try:
        assert await cluster.settled_owner() is cut_off
        callers = [f"+7999000{4000 + n}" for n in range(3)]
        placed = {caller: leader_lab.whatsapp_call(BUSINESS, caller) for caller in callers}
        for caller in callers:
            await wait_until(lambda c=caller: cluster.row(c, "connected"), timeout=40, what=f"{caller} connected")
        relay.frozen.set()

        async def standby_owns() -> bool:
            health = await standby.health()
            return health.get("stasis", {}).get("role") == "owner" and health.get("ari", {}).get("state") == "connected"

        await wait_until(standby_owns, timeout=40, what="the standby owns the Stasis app")
        gave_up = cluster.logged_at(cut_off, "this instance gives up the Stasis app")
        took = cluster.logged_at(standby, "this instance owns the Stasis app")
        assert gave_up is not None and took is not None and gave_up < took, (gave_up, took)
        meta_up = {p["meta_channel"] for p in placed.values()}
        assert meta_up <= {c["id"] for c in leader_lab.meta_channels() if c["state"] == "Up"}
        for caller in callers:
            leader_lab.hangup_meta(placed[caller]["meta_channel"])
        for caller in callers:
            ended = await wait_until(lambda c=caller: cluster.row(c, "ended"), timeout=40, what=f"{caller} finished")
            assert ended.status_code == "200"
            assert (await logged_once(cluster, ended))["STATUS_CODE"] == "200"
        caller = "+79990004999"
        next_call = leader_lab.whatsapp_call(BUSINESS, caller)
        await wait_until(lambda: cluster.row(caller, "connected"), timeout=20, what="next call answered")
        leader_lab.hangup_meta(next_call["meta_channel"])
        await wait_until(lambda: cluster.row(caller, "ended"), timeout=20, what="next call ended")
    finally:
        await relay.stop()  # the cut-off instance's connections end: it can stop
        await cluster.stop()
        postgres_server.drop_database(name)
