"""WhatsApp calls under load: announce latency and the concurrency ceiling, end to end (needs root).

    python bench/calls.py [--levels 10,20,50,100,150,200,250,300] [--talk 3] [--probes 30]
                          [--media tone|echo] [--record] [--budget 420] [--workdir DIR]
                          [--scenario levels|burst|all] [--pin-thoth]

Everything is real except Meta and Bitrix24: the call lab (tests/calls/lab.py) starts our
Asterisk and a second Asterisk playing Meta (TLS + SDES-SRTP + Opus + digest auth, and the
operators' phones, which answer with Echo); the trunk is applied by thoth-pbx's own
Applier; `thoth-pbx serve` runs as its own process (SQLite) so its CPU is its own; the
Bitrix24 simulator runs in this process. Loopback only. docs/benchmarks-calls.md has the
method, the figures and what limits them.

Each level N: N calls arrive (10 per second), each rings operator 200, is answered and
bridged; once all N are bridged they talk for `--talk` seconds (media both ways: the
caller side plays a tone, the operator's phone echoes it); then `--probes` new calls
arrive one every 0.25 s, each hung up as soon as it is announced; then everyone hangs up.
A level passes when every call reached Stasis, all N were bridged at once with media both
ways, and the simulator got exactly one register and one finish for every call (200 for
the N; 603-S or 200 for a probe). The ramp stops at the first failed level or when the
next level would overrun the time budget.

Announce latency = the register arriving at the simulator (its `on_processed` hook, wall
clock) minus the moment our Asterisk put the call into Stasis (the ARI `ChannelDialplan`
event for app `Stasis`, seen by a passive observer app subscribed to the trunk endpoint;
Asterisk stamps events in whole milliseconds, so 0.5 ms is added). The headline figures
are the probes of the 50-call level: new calls arriving while 50 calls talk. Prints one
JSON object; targets p50 < 5 ms, p99 < 25 ms at 50 calls.

Absolute times swing about twofold on shared machines from one hour to the next, so each probe
is paired with the floor of its own path, measured at the same moment: the probe's Stasis event
received by a bare websocket client (aiohttp, no ARI client code), one SQLite insert + commit
(WAL, synchronous=NORMAL, on the same disk), one loopback POST to the simulator.
`announce_floor_ms_p50` is their sum (p50 over the probes) and `announce_ratio_p50` ours / floor.

`--pin-thoth` gives `thoth-pbx serve` the last CPU of the box to itself and puts both Asterisks
and this process (the load generator, the simulator, the observers) on the others, for the
whole run: what thoth-pbx does with a core of its own, as on a PBX box with a core to spare,
instead of sharing two cores with the remote parties' stand-ins.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import re
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.calls.conftest import (  # noqa: E402
    BUSINESS,
    BUSINESS_NO_PORTAL,
    BUSINESS_NO_PORTAL_PASSWORD,
    BUSINESS_PASSWORD,
    apply_trunk,
)
from tests.calls.lab import CallLab, start_lab, stop_lab  # noqa: E402
from tests.calls.service import ServeProcess, new_simulator, seed, thoth_environ  # noqa: E402
from tests.support.bitrix import chain_order, free_port  # noqa: E402
from thoth_pbx.app import close_services, open_services  # noqa: E402
from thoth_pbx.clients.asterisk.ari import AriClient, AriError, basic_auth_header  # noqa: E402
from thoth_pbx.core.settings import AriTarget, load_settings  # noqa: E402
from thoth_pbx.features.directory.models import AppInstance  # noqa: E402
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Recorded  # noqa: E402

REGISTER = "telephony.externalcall.register"
OPERATOR = "200"  # an always-answering phone of the lab's pool; it takes any number of calls
TRUNK_ENDPOINT = "PJSIP/wa.meta.vc"
OBSERVER_APP = "bench-observer"
BARE_APP = "bench-bare"  # the floor's websocket: a bare aiohttp client, no ARI client code
# ARI's per-application event filter (PUT /applications/{app}/eventFilter, Asterisk 13.26+)
ONLY_DIALPLAN = {"allowed": [{"type": "ChannelDialplan"}]}
RAMP_PER_S = 10.0  # new calls per second while a level builds up
PROBE_EVERY_S = 0.25
# The WhatsApp user's side: the lab's `caller` context answers with Echo, and so do the
# operators' phones, so after the bridge nothing ever sends a packet. `tone` makes the
# caller side talk (a generated tone, encoded to Opus once per call on the Meta side) and
# the operator's Echo answers it: media then flows both ways through our Asterisk.
MEDIA_CONTEXT = """
[bench-caller]
exten => s,1,Answer()
 same => n,Playtones(440/300,0/200)
 same => n,Wait(600)
"""


def cpu_seconds(stat: str) -> float:
    """User + system CPU time from /proc/<pid>/stat (a process, all threads) or /proc/<pid>/task/<tid>/stat."""
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wacid_of(dialplan: dict[str, Any]) -> str:
    """Meta's call id from our Stasis line: Stasis(<app>,${EXTEN},<wacid>,<user id>,<name>,<country>)
    (dialplan/from-meta.conf.j2)."""
    args = str(dialplan.get("app_data", "")).split(",")
    return args[2] if len(args) > 2 else ""


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile: p99 of fewer than 100 samples is the largest one."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 2)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot: cores x uptime - idle (/proc/uptime; its idle
    figure is measured, unlike the tick-sampled busy fields of /proc/stat, which undercount in a VM)."""
    uptime, idle = (float(x) for x in Path("/proc/uptime").read_text().split())
    return (os.cpu_count() or 1) * uptime - idle


LOOP_RUNNING = "thoth_loop_running"  # schedstat of thoth-pbx's event loop thread
LOOP_WAITING = "thoth_loop_waiting_for_a_core"


def sched_seconds(schedstat: str) -> tuple[float, float]:
    """(running, runnable but waiting for a core) in seconds, from /proc/<pid>/task/<tid>/schedstat
    (nanoseconds: the scheduler's own accounting, not the 10 ms ticks of stat)."""
    running, waiting, _slices = Path(schedstat).read_text().split()
    return int(running) / 1e9, int(waiting) / 1e9


class CpuMeter:
    """CPU seconds of the processes that do the work, read from /proc before and after; with
    `loop_schedstat`, also how long thoth-pbx's event loop ran and waited for a core."""

    def __init__(self, stats: dict[str, str], loop_schedstat: str | None = None) -> None:
        self.stats = stats  # name -> /proc stat file
        self.loop_schedstat = loop_schedstat

    def snapshot(self) -> dict[str, float]:
        taken = {
            "wall": time.monotonic(),
            "machine_total": machine_busy_seconds(),
            **{name: cpu_seconds(stat) for name, stat in self.stats.items()},
        }
        if self.loop_schedstat is not None:
            taken[LOOP_RUNNING], taken[LOOP_WAITING] = sched_seconds(self.loop_schedstat)
        return taken

    @staticmethod
    def between(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
        wall = b["wall"] - a["wall"]
        sched = {k: b[k] - a[k] for k in (LOOP_RUNNING, LOOP_WAITING) if k in a}
        used = {k: b[k] - a[k] for k in a if k != "wall" and k not in sched}
        ours = sum(v for k, v in used.items() if k not in ("machine_total", "thoth_pbx_event_loop"))
        used["other_processes"] = used["machine_total"] - ours  # neighbours: whatever else runs on the box
        out: dict[str, Any] = {"wall_s": round(wall, 2)}
        for name, seconds in used.items():
            share = round(100 * seconds / wall, 1) if wall else None
            out[name] = {"seconds": round(seconds, 2), "percent_of_one_core": share}
        for name, seconds in sched.items():
            out[name] = {"ms": round(seconds * 1000, 2)}
        return out


# ------------------------------------------------------------------ what the bench observes


@dataclass
class Observed:
    """Per-call facts gathered from the two sides: our Asterisk and the simulator."""

    stasis_at: dict[str, float] = field(default_factory=dict)  # wacid -> when Asterisk entered Stasis
    linkedid: dict[str, str] = field(default_factory=dict)  # wacid -> EXTERNAL_CALL_ID
    channel: dict[str, str] = field(default_factory=dict)  # wacid -> our WhatsApp channel
    register_at: dict[str, float] = field(default_factory=dict)  # EXTERNAL_CALL_ID -> arrival at the simulator

    def on_ari_event(self, event: dict[str, Any]) -> None:
        channel = event.get("channel") or {}
        dialplan = channel.get("dialplan") or {}
        if event.get("type") != "ChannelDialplan" or dialplan.get("app_name") != "Stasis":
            return
        wacid = _wacid_of(dialplan)
        stamp = dt.datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        self.stasis_at[wacid] = stamp + 0.0005  # Asterisk truncates to the millisecond
        self.linkedid[wacid] = channel.get("linkedid") or channel["id"]
        self.channel[wacid] = channel["id"]

    def on_bitrix_method(self, _portal: Any, entry: Recorded) -> None:
        if entry.ok and entry.method == REGISTER:
            self.register_at.setdefault(str(entry.params.get("EXTERNAL_CALL_ID")), time.time())

    def announced(self, wacid: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return self.announce_ms(wacid) is not None

        return check

    def announce_ms(self, wacid: str) -> float | None:
        linkedid = self.linkedid.get(wacid)
        if linkedid is None or linkedid not in self.register_at:
            return None
        return (self.register_at[linkedid] - self.stasis_at[wacid]) * 1000


@dataclass
class Placed:
    wacid: str
    meta_channel: str
    probe: bool


class Lab:
    """The call lab plus what the bench needs around it: placing calls, watching both Asterisks."""

    def __init__(self, lab: CallLab, media: str) -> None:
        self.lab = lab
        self.media = media
        b = lab.business
        self.ari = AriClient(AriTarget(b.ari_base, b.ari_user, b.ari_password), OBSERVER_APP, heartbeat=30)
        self._serial = 0
        self._http: aiohttp.ClientSession | None = None  # Meta's ARI, for calls placed at once

    def prepare_media(self) -> None:
        if self.media == "tone":
            meta = self.lab.meta
            (meta.config_dir / "extensions_bench.conf").write_text(MEDIA_CONTEXT)
            with (meta.config_dir / "extensions.conf").open("a") as fh:
                fh.write("\n#tryinclude extensions_bench.conf\n")
            meta.cli("dialplan reload")

    def place(self, probe: bool) -> Placed:
        """One WhatsApp call from Meta (blocking: run it in a thread)."""
        params, body, wacid = self._originate()
        channel = self.lab._meta_ari("POST", "/channels", params=params, body=body)
        return Placed(wacid, channel["id"], probe)

    def _originate(self) -> tuple[dict[str, str], dict[str, Any], str]:
        """Meta's ARI request for one WhatsApp call (lab.whatsapp_call's, in the talking context with `tone`)."""
        self._serial += 1
        wacid = f"wacid.bench{self._serial:07d}"
        params = {
            "endpoint": f"PJSIP/{BUSINESS}@biz{BUSINESS.lstrip('+')}",
            "context": "bench-caller" if self.media == "tone" else "caller",
            "extension": "s",
            "priority": "1",
            "callerId": f"+7999{self._serial:07d}",
            "timeout": "60",
        }
        return params, {"variables": {"PJSIP_HEADER(add,X-WA-Meta-WACID)": wacid}}, wacid

    def _meta_http(self) -> aiohttp.ClientSession:
        if self._http is None:
            meta = self.lab.meta
            self._http = aiohttp.ClientSession(
                base_url=meta.ari_base,
                headers={"Authorization": basic_auth_header(meta.ari_user, meta.ari_password)},
                timeout=aiohttp.ClientTimeout(total=15),
            )
        return self._http

    async def place_at_once(self, n: int) -> list[Placed]:
        """N WhatsApp calls from Meta at the same instant: N originate requests sent together, each on
        its own connection (kept alive between bursts); the spread of their arrival is reported."""
        http = self._meta_http()

        async def one(params: dict[str, str], body: dict[str, Any], wacid: str) -> Placed:
            async with http.post("/ari/channels", params=params, json=body) as resp:
                resp.raise_for_status()
                channel = await resp.json()
            return Placed(wacid, channel["id"], False)

        return list(await asyncio.gather(*(one(*self._originate()) for _ in range(n))))

    async def hang_up_at_once(self, calls: list[Placed]) -> int:
        """Meta ends these calls together; returns how many hangup requests failed."""
        http = self._meta_http()

        async def one(call: Placed) -> None:
            async with http.delete(f"/ari/channels/{call.meta_channel}") as resp:
                if resp.status not in (204, 404):
                    resp.raise_for_status()

        results = await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)
        return sum(isinstance(r, Exception) for r in results)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def hang_up(self, calls: list[Placed]) -> int:
        """Meta ends these calls; returns how many hangup requests failed (Meta's ARI too slow)."""
        results = await asyncio.gather(
            *(asyncio.to_thread(self.lab.hangup_meta, c.meta_channel) for c in calls), return_exceptions=True
        )
        return sum(isinstance(r, Exception) for r in results)

    async def bridged(self) -> int:
        """Calls our Asterisk has bridged right now (WhatsApp leg + operator leg)."""
        return sum(1 for b in await self.ari.request("GET", "/bridges") or [] if len(b.get("channels", [])) == 2)

    async def channels(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Live channels on our Asterisk and on Meta's."""
        ours = await self.ari.request("GET", "/channels") or []
        return ours, await asyncio.to_thread(self.lab.meta_channels)

    async def clear(self) -> list[str]:
        """Hang up whatever is still up on either side (so one level cannot spill into the next);
        returns the names of our channels that were left."""
        try:
            ours, theirs = await self.channels()
        except (AriError, OSError) as exc:
            return [f"unknown: {exc}"]
        for channel in ours:
            try:
                await self.ari.request("DELETE", f"/channels/{channel['id']}")
            except AriError:
                pass  # gone meanwhile
        await self.hang_up([Placed("", channel["id"], False) for channel in theirs])
        return [c["name"] for c in ours]

    def media_stats(self) -> dict[str, Any]:
        """RTP packet counters of every bridged leg (`pjsip show channelstats` on our Asterisk)."""
        out = self.lab.business.cli("pjsip show channelstats")
        legs = {"whatsapp": [0, 0, 0], "operator": [0, 0, 0]}  # legs, legs receiving and sending, packets
        codecs: set[str] = set()
        for line in out.splitlines():
            cols = line.split()
            if len(cols) < 12 or not re.fullmatch(r"\d\d:\d\d:\d\d", cols[2]):
                continue
            kind = "whatsapp" if cols[1].startswith("wa.meta.vc") else "operator"
            rx, tx = int(cols[4]), int(cols[8])
            legs[kind][0] += 1
            legs[kind][1] += int(rx > 0 and tx > 0)
            legs[kind][2] += rx + tx
            codecs.add(cols[3])
        stats = {kind: {"legs": v[0], "legs_with_media_both_ways": v[1], "packets": v[2]} for kind, v in legs.items()}
        return {**stats, "codecs": sorted(codecs)}

    async def secure(self, wacid: str, observed: Observed) -> bool:
        """SRTP really negotiated on the WhatsApp leg of this call."""
        reply = await self.ari.request(
            "GET", f"/channels/{observed.channel[wacid]}/variable", params={"variable": "CHANNEL(rtp,secure)"}
        )
        return (reply or {}).get("value") == "1"


class Floor:
    """The floor of the announce path, sampled next to each probe (see the module docstring)."""

    def __init__(self, lab: CallLab, sim: BitrixSimulator, portal: Any, tmp: Path) -> None:
        b = lab.business
        self.base, self.auth = b.ari_base, {"Authorization": basic_auth_header(b.ari_user, b.ari_password)}
        self.sim, self.portal = sim, portal
        self.event_ms: dict[str, float] = {}  # wacid -> Asterisk stamp to receipt on the bare socket
        self.samples: list[dict[str, float]] = []
        self._db = sqlite3.connect(tmp / "floor.sqlite3", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, linkedid TEXT, at REAL)")
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._token = ""

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        self._token = self.sim.issue_tokens(self.portal)["access_token"]
        ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._listen(ready))
        await asyncio.wait_for(ready, 15)
        async with self._http.post(
            f"{self.base}/ari/applications/{BARE_APP}/subscription",
            headers=self.auth,
            params={"eventSource": f"endpoint:{TRUNK_ENDPOINT}"},
        ) as resp:
            resp.raise_for_status()
        async with self._http.put(
            f"{self.base}/ari/applications/{BARE_APP}/eventFilter", headers=self.auth, json=ONLY_DIALPLAN
        ) as resp:
            resp.raise_for_status()

    async def _listen(self, ready: asyncio.Future[None]) -> None:
        assert self._http is not None
        async with self._http.ws_connect(
            f"{self.base}/ari/events", headers=self.auth, params={"app": BARE_APP, "subscribeAll": "false"}
        ) as ws:
            ready.set_result(None)
            async for msg in ws:
                received = time.time()
                event = json.loads(msg.data)
                dialplan = (event.get("channel") or {}).get("dialplan") or {}
                if event.get("type") == "ChannelDialplan" and dialplan.get("app_name") == "Stasis":
                    stamp = dt.datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
                    wacid = _wacid_of(dialplan)
                    self.event_ms[wacid] = (received - (stamp + 0.0005)) * 1000

    async def sample(self, wacid: str) -> None:
        """One floor sample for this probe (its event delay was seen by the bare socket)."""
        assert self._http is not None
        t0 = time.perf_counter()
        self._db.execute("BEGIN")
        self._db.execute("INSERT INTO t (linkedid, at) VALUES (?, ?)", (wacid, time.time()))
        self._db.execute("COMMIT")
        t1 = time.perf_counter()
        async with self._http.post(f"{self.sim.base_url}/rest/app.info", data={"auth": self._token}) as resp:
            await resp.read()
        t2 = time.perf_counter()
        event = self.event_ms.get(wacid)
        if event is not None:
            self.samples.append({"event_ms": event, "sqlite_ms": (t1 - t0) * 1000, "post_ms": (t2 - t1) * 1000})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        self._db.close()

    def summary(self, since: int) -> dict[str, float | None]:
        taken = self.samples[since:]
        total = [s["event_ms"] + s["sqlite_ms"] + s["post_ms"] for s in taken]
        return {
            "announce_floor_ms_p50": pct(total, 0.5),
            "floor_event_ms_p50": pct([s["event_ms"] for s in taken], 0.5),
            "floor_sqlite_ms_p50": pct([s["sqlite_ms"] for s in taken], 0.5),
            "floor_post_ms_p50": pct([s["post_ms"] for s in taken], 0.5),
            "floor_samples": len(taken),
        }


async def until(check: Callable[[], Awaitable[bool]], *, timeout: float, every: float = 0.25) -> bool:
    """Poll a condition that costs a request (so not too often); False once `timeout` passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await check():
                return True
        except (AriError, OSError):
            pass  # Asterisk too busy to answer this time (HTTP session limit, timeout): ask again
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)


def service_times(database: Path, serve_log: Path) -> tuple[dict[str, float], dict[str, float]]:
    """When the service stored each call: the row's `started_at` (by linkedid) and its `whatsapp
    call` log line, written right after the commit of the row and its register job (by channel)."""
    started = {
        lid: dt.datetime.fromisoformat(at).replace(tzinfo=dt.UTC).timestamp()
        for lid, at in db_rows(database, "SELECT linkedid, started_at FROM call")
    }
    committed = {}
    for line in serve_log.read_text(errors="replace").splitlines():
        if '"whatsapp call"' in line:
            entry = json.loads(line)
            committed[entry["channel"]] = dt.datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    return started, committed


def announce_stages(
    calls: list[Placed], observed: Observed, database: Path, serve_log: Path, q: float = 0.5
) -> dict[str, Any]:
    """Where the announce time goes: Stasis -> the call row's started_at (the service took the
    event and read phone + portal) -> the `whatsapp call` log line (row and register job
    committed) -> the register at the simulator (outbox job + Bitrix24 client + HTTP).
    Percentile `q` of each stage."""
    started, committed = service_times(database, serve_log)
    spans: dict[str, list[float]] = {"stasis_to_row": [], "row_to_committed": [], "committed_to_register": []}
    for p in calls:
        lid, channel = observed.linkedid.get(p.wacid), observed.channel.get(p.wacid)
        if lid in started and channel in committed and lid in observed.register_at:
            spans["stasis_to_row"].append((started[lid] - observed.stasis_at[p.wacid]) * 1000)
            spans["row_to_committed"].append((committed[channel] - started[lid]) * 1000)
            spans["committed_to_register"].append((observed.register_at[lid] - committed[channel]) * 1000)
    return {name: pct(values, q) for name, values in spans.items()}


def log_counts(path: Path, offset: int, patterns: dict[str, str]) -> tuple[dict[str, int], int]:
    """Lines matching each pattern written to `path` since `offset`; returns the new offset."""
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read().decode(errors="replace")
    counts = {name: len(re.findall(p, data)) for name, p in patterns.items()}
    return counts, offset + len(data.encode())


# ------------------------------------------------------------------ the service under test


async def prepare_service(tmp: Path, lab: CallLab, sim: BitrixSimulator, portal: Any, record: bool) -> ServeProcess:
    """The database as an install and the admin would leave it (portal, users, numbers), then
    `thoth-pbx serve` on it; every call rings operator 200."""
    environ = thoth_environ(tmp, lab, sim, calls={"ring_group": [OPERATOR]})
    # loopback only: the seeded WhatsApp account's token checks must not reach graph.facebook.com
    environ["THOTH_META_GRAPH_URL"] = f"http://127.0.0.1:{free_port()}"
    services = await open_services(load_settings(None, environ=environ))
    try:
        instance_id = await seed(services, sim, portal, record=record)
        async with services.sessions() as session, session.begin():
            inst = await session.get(AppInstance, instance_id)
            assert inst is not None
            inst.settings = {"calls": {"ring_group": [OPERATOR], "record": record, "group_ring_seconds": 20}}
    finally:
        await close_services(services)
    return ServeProcess(environ, tmp / "serve.log")


def db_rows(database: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(query).fetchall()


# ------------------------------------------------------------------ one level


async def run_level(
    n: int,
    args: argparse.Namespace,
    lab: Lab,
    observed: Observed,
    sim: BitrixSimulator,
    cpu: CpuMeter,
    database: Path,
    logs: dict[str, list[Any]],
    floor: Floor,
) -> dict[str, Any]:
    problems: list[str] = []
    floor_from = len(floor.samples)
    lab_warnings: list[str] = []  # the Meta side (our load generator) struggled; judged by the calls' outcome
    before = cpu.snapshot()
    started = time.monotonic()
    placed: list[Placed] = []
    # 1. ramp: N calls at RAMP_PER_S, each rings operator 200 and is bridged
    for i in range(n):
        await asyncio.sleep(max(0.0, started + i / RAMP_PER_S - time.monotonic()))  # pacing, not synchronisation
        try:
            placed.append(await asyncio.to_thread(lab.place, False))
        except OSError as exc:
            problems.append(f"Meta side refused call {i + 1}: {exc}")
            break
    peak = 0

    async def all_bridged() -> bool:
        nonlocal peak
        peak = max(peak, await lab.bridged())
        return peak >= n

    if not await until(all_bridged, timeout=20 + n / 10):
        problems.append(f"only {peak} of {n} calls bridged at once within {20 + n / 10:.0f} s")
    phases = {"all_bridged": time.monotonic()}  # when each phase ended
    # 2. the N calls talk: media only, no signalling (what each talking call costs)
    media_before = await asyncio.to_thread(lab.media_stats)
    talking = cpu.snapshot()
    await asyncio.sleep(args.talk)  # the conversation itself: a scenario duration, not a synchronisation
    talked = cpu.snapshot()
    media = await asyncio.to_thread(lab.media_stats)
    try:
        srtp = await lab.secure(placed[0].wacid, observed) if placed and placed[0].wacid in observed.channel else False
    except (AriError, OSError):
        srtp = False
    # 3. probes: new calls, one every PROBE_EVERY_S, each hung up once announced, while the N talk
    for i in range(args.probes if not problems else 0):
        await asyncio.sleep(max(0.0, talked["wall"] + i * PROBE_EVERY_S - time.monotonic()))  # pacing
        try:
            probe = await asyncio.to_thread(lab.place, True)
        except OSError as exc:
            problems.append(f"Meta side could not place probe {i + 1}: {exc}")
            break
        placed.append(probe)
        if not await until(observed.announced(probe.wacid), timeout=10, every=0.001):
            problems.append(f"probe {probe.wacid} not announced within 10 s")
        await floor.sample(probe.wacid)
        if await lab.hang_up([probe]):
            lab_warnings.append(f"Meta's ARI did not confirm the hangup of probe {probe.wacid}")
    probed = cpu.snapshot()
    phases["talked_and_probed"] = time.monotonic()
    await until(all_bridged, timeout=0)  # one more look at the peak
    # 4. everyone hangs up; wait for the finishes and an idle outbox
    failed_hangups = await lab.hang_up([p for p in placed if not p.probe])
    phases["hung_up_by_meta"] = time.monotonic()
    if failed_hangups:
        lab_warnings.append(f"Meta's ARI did not confirm {failed_hangups} hangups within 10 s")
    linked = [observed.linkedid[p.wacid] for p in placed if p.wacid in observed.linkedid]
    not_reached = [p.wacid for p in placed if p.wacid not in observed.linkedid]
    if not_reached:
        problems.append(f"{len(not_reached)} calls never reached Stasis on our Asterisk")

    async def settled() -> bool:
        order = chain_order(sim)
        pending = db_rows(database, "SELECT count(*) FROM outbox_job WHERE status IN ('pending', 'running')")[0][0]
        return pending == 0 and all(order.get(lid, []).count("finish") >= 1 for lid in linked)

    if not await until(settled, timeout=60):
        problems.append("not every call was finished in Bitrix24 within 60 s")

    async def no_channels() -> bool:
        ours, theirs = await lab.channels()
        return not ours and not theirs

    phases["finished_in_bitrix"] = time.monotonic()
    leftover = [] if await until(no_channels, timeout=5) else await lab.clear()
    phases["no_channels_left"] = time.monotonic()
    after = cpu.snapshot()
    # 5. what Bitrix24 saw, call by call
    lost, dup, statuses, wrong_status = judge_logs(placed, observed, sim, args.record)
    if lost or dup:
        problems.append(f"{lost} call logs lost, {dup} duplicated")
    if wrong_status:
        problems.append(f"{wrong_status} calls finished with an unexpected status ({statuses})")
    failed_jobs = db_rows(database, "SELECT count(*) FROM outbox_job WHERE status = 'failed'")[0][0]
    if failed_jobs:
        problems.append(f"{failed_jobs} outbox jobs failed")
    for kind in ("whatsapp", "operator"):
        both = media[kind]["legs_with_media_both_ways"]
        if args.media == "tone" and both < n:
            problems.append(f"media both ways on only {both} of {n} {kind} legs")
    if media["codecs"] not in ([], ["opus"]):
        problems.append(f"codecs on the bridged legs: {media['codecs']} (expected Opus only)")
    if not srtp:
        problems.append("the WhatsApp leg of the first call is not SRTP (CHANNEL(rtp,secure) != 1)")
    # announce latency: ramp calls (arriving in a burst) and probes (arriving while N talk)
    ramp_ms = [ms for p in placed if not p.probe and (ms := observed.announce_ms(p.wacid)) is not None]
    probe_ms = [ms for p in placed if p.probe and (ms := observed.announce_ms(p.wacid)) is not None]
    stages = announce_stages([p for p in placed if p.probe], observed, database, logs["thoth_pbx"][0])
    errors = {name: log_counts(path, offset, patterns) for name, (path, offset, patterns) in logs.items()}
    for name, (_counts, offset) in errors.items():
        logs[name][1] = offset
    return {
        "calls": n,
        "passed": not problems,
        "problems": problems,
        "lab_warnings": lab_warnings,
        "peak_bridged": peak,
        "phases_s": {
            name: round(end - begin, 2)
            for (name, end), begin in zip(phases.items(), [started, *phases.values()], strict=False)
        },
        "probes": len(probe_ms),
        "announce_ms_probe_p50": pct(probe_ms, 0.5),
        "announce_ms_probe_p99": pct(probe_ms, 0.99),
        "announce_ms_ramp_p50": pct(ramp_ms, 0.5),
        "announce_ms_ramp_p99": pct(ramp_ms, 0.99),
        "announce_stages_ms_probe_p50": stages,
        **floor.summary(floor_from),
        "lost_logs": lost,
        "duplicate_logs": dup,
        "channels_left_up": {
            "count": len(leftover),
            "names": sorted({re.sub(r"-[0-9a-f]+$", "-*", name) for name in leftover}),
        },
        "finish_status": statuses,
        "srtp_on_whatsapp_leg": srtp,
        "media": {"after_ramp": media_before, "after_talk": media},
        "cpu_while_talking": CpuMeter.between(talking, talked),
        "cpu_while_probing": CpuMeter.between(talked, probed),
        "cpu_whole_level": CpuMeter.between(before, after),
        "thoth_cpu_ms_per_call": round(1000 * (after["thoth_pbx"] - before["thoth_pbx"]) / max(1, len(placed)), 2),
        "log_lines": {name: counts for name, (counts, _) in errors.items()},
        "seconds": round(time.monotonic() - started, 1),
    }


def judge_logs(
    placed: list[Placed], observed: Observed, sim: BitrixSimulator, record: bool
) -> tuple[int, int, dict[str, int], int]:
    """Exactly one register and one finish per call that reached us (and one attachRecord per
    answered call when recording): (lost, duplicated, finish statuses, unexpected statuses)."""
    order = chain_order(sim)
    finishes = {
        str(e.params.get("CALL_ID")): e.params.get("STATUS_CODE")
        for e in sim.recorder.calls("telephony.externalcall.finish", ok=True)
    }
    call_ids = {
        str(e.params.get("EXTERNAL_CALL_ID")): str((e.result or {}).get("CALL_ID"))
        for e in sim.recorder.calls(REGISTER, ok=True)
    }
    lost = dup = wrong_status = 0
    statuses: dict[str, int] = {}
    for p in placed:
        lid = observed.linkedid.get(p.wacid)
        if lid is None:
            continue  # never reached us: reported on its own
        methods = order.get(lid, [])
        for method in ("register", "finish", *(("attachrecord",) if record and not p.probe else ())):
            count = methods.count(method)
            lost += count == 0
            dup += max(0, count - 1)
        status = str(finishes.get(call_ids.get(lid, ""), "none"))
        statuses[status] = statuses.get(status, 0) + 1
        # a probe hung up while ringing is 603-S; one the operator picked up first is 200
        wrong_status += status not in (("603-S", "200") if p.probe else ("200",))
    return lost, dup, statuses, wrong_status


def limit_of(failed: dict[str, Any] | None, last: dict[str, Any] | None, stopped_by: str) -> str:
    """A plain sentence: what stopped the ramp, and which process was busiest when it did."""
    run = failed if failed and "cpu_while_talking" in failed else last
    if run is None or "cpu_while_talking" not in run:
        return f"{'; '.join(failed['problems'])} at {failed['calls']} calls" if failed else stopped_by
    cpu = run["cpu_while_talking"]
    busiest = sorted(
        (
            (v["percent_of_one_core"] or 0, k)
            for k, v in cpu.items()
            if isinstance(v, dict) and "percent_of_one_core" in v and k not in ("thoth_pbx_event_loop", "machine_total")
        ),
        reverse=True,
    )
    total = sum(p for p, _ in busiest)
    load = ", ".join(f"{k} {p:.0f}%" for p, k in busiest)
    head = f"{'; '.join(failed['problems'])} at {failed['calls']} calls" if failed else stopped_by
    machine = f" of {(os.cpu_count() or 1) * 100}% ({load})"
    strain = f"; Meta side (load generator): {'; '.join(run['lab_warnings'])}" if run.get("lab_warnings") else ""
    return f"{head}; CPU while talking at {run['calls']} calls: {total:.0f}%{machine}{strain}"


def per_call(run: dict[str, Any]) -> dict[str, Any]:
    """What one call costs, from a level that passed: media per talking call, thoth per call handled."""
    talking = run["cpu_while_talking"]
    return {
        "calls": run["calls"],
        "percent_of_one_core_per_talking_call": {
            name: round(talking[name]["percent_of_one_core"] / run["calls"], 3)
            for name in ("asterisk_business", "asterisk_meta", "thoth_pbx")
        },
        "thoth_pbx_cpu_ms_per_call": run["thoth_cpu_ms_per_call"],
        "machine_busy_while_talking_percent": talking["machine_total"]["percent_of_one_core"],
    }


# ------------------------------------------------------------------ bursts (issue 19)

# at N simultaneous calls: burst p50 / p99 at most this many times the same run's single call
BURST_TARGETS = {20: (2.0, 3.0), 50: (3.0, 4.0)}


@dataclass
class Scene:
    """What a burst or a block of single calls needs from the bench."""

    lab: Lab
    observed: Observed
    sim: BitrixSimulator
    database: Path
    serve_log: Path
    floor: Floor
    cpu: CpuMeter


async def settle(scene: Scene, placed: list[Placed]) -> list[str]:
    """Wait until every call that reached us is finished in Bitrix24, the outbox is idle and no
    channel is left on either side; returns what did not happen."""
    problems = []
    linked = [scene.observed.linkedid[p.wacid] for p in placed if p.wacid in scene.observed.linkedid]
    if len(linked) < len(placed):
        problems.append(f"{len(placed) - len(linked)} calls never reached Stasis on our Asterisk")

    async def settled() -> bool:
        order = chain_order(scene.sim)
        pending = db_rows(scene.database, "SELECT count(*) FROM outbox_job WHERE status IN ('pending', 'running')")
        return pending[0][0] == 0 and all(order.get(lid, []).count("finish") >= 1 for lid in linked)

    if not await until(settled, timeout=60):
        problems.append("not every call was finished in Bitrix24 within 60 s")

    async def no_channels() -> bool:
        ours, theirs = await scene.lab.channels()
        return not ours and not theirs

    if not await until(no_channels, timeout=10):
        left = await scene.lab.clear()
        problems.append(f"{len(left)} channels left up on our Asterisk")
    return problems


async def run_singles(scene: Scene, count: int) -> tuple[list[Placed], list[str]]:
    """`count` calls one at a time on an otherwise idle service, each hung up once announced."""
    placed: list[Placed] = []
    problems: list[str] = []
    start = time.monotonic()
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i * PROBE_EVERY_S - time.monotonic()))  # pacing
        call = await asyncio.to_thread(scene.lab.place, True)
        placed.append(call)
        if not await until(scene.observed.announced(call.wacid), timeout=10, every=0.001):
            problems.append(f"single call {call.wacid} not announced within 10 s")
        await scene.lab.hang_up_at_once([call])
    return placed, problems + await settle(scene, placed)


async def run_burst(scene: Scene, n: int) -> dict[str, Any]:
    """N calls at the same instant; each rings the operator (who answers after 0.2 s) until all N
    are announced, then Meta hangs them all up. Per call: Stasis -> register at the simulator."""
    observed, sim = scene.observed, scene.sim
    first_seq = max((e.seq for e in sim.recorder.entries), default=0)
    before = scene.cpu.snapshot()
    placed = await scene.lab.place_at_once(n)

    async def all_announced() -> bool:
        return all(observed.announce_ms(p.wacid) is not None for p in placed)

    problems = [] if await until(all_announced, timeout=30, every=0.002) else ["not all announced within 30 s"]
    window = CpuMeter.between(before, scene.cpu.snapshot())  # from placing the burst to its last register
    if await scene.lab.hang_up_at_once(placed):
        problems.append("Meta's ARI refused some hangups")
    problems += await settle(scene, placed)
    ms = [v for p in placed if (v := observed.announce_ms(p.wacid)) is not None]
    # Asterisk's side of the first stage: its Stasis event reaching a bare websocket in this process
    event_ms = [scene.floor.event_ms[p.wacid] for p in placed if p.wacid in scene.floor.event_ms]
    stasis = [observed.stasis_at[p.wacid] for p in placed if p.wacid in observed.stasis_at]
    earliest = min(
        (p for p in placed if p.wacid in observed.stasis_at), key=lambda p: observed.stasis_at[p.wacid], default=None
    )
    # how the registers left: the size of each request that carried some (1 = alone, else a batch)
    sizes: dict[int, int] = {}
    for e in sim.recorder.entries:
        if e.seq > first_seq and e.ok and e.method == REGISTER:
            sizes[e.batch if e.batch is not None else -e.seq] = (
                sizes.get(e.batch if e.batch is not None else -e.seq, 0) + 1
            )
    _, committed = service_times(scene.database, scene.serve_log)
    stored = [committed[observed.channel[p.wacid]] for p in placed if observed.channel.get(p.wacid) in committed]
    registers = sorted(
        observed.register_at[observed.linkedid[p.wacid]] for p in placed if observed.announce_ms(p.wacid) is not None
    )
    last_stored = max(stored, default=0.0)
    return {
        "calls": n,
        "placed": placed,
        "ms": ms,
        "problems": problems,
        "event_ms": event_ms,
        "arrival_spread_ms": round((max(stasis) - min(stasis)) * 1000, 2) if stasis else None,
        "store_spread_ms": round((max(stored) - min(stored)) * 1000, 2) if stored else None,
        "register_requests": list(sizes.values()),
        # the first register reached Bitrix24 before the last call of the burst was stored
        "registers_before_last_stored": sum(1 for at in registers if at < last_stored),
        # what the box did while the burst was announced (percent of one core; the box has 200)
        "while_announcing": {
            "wall_ms": round(window["wall_s"] * 1000, 1),
            "thoth_loop_cpu_ms_per_call": round(window["thoth_pbx_event_loop"]["seconds"] * 1000 / n, 2),
            # the scheduler's view of the loop thread over the window (ns precision): work done,
            # and time it was ready to run while the box's cores ran something else
            "thoth_loop_running_ms": window[LOOP_RUNNING]["ms"],
            "thoth_loop_waiting_for_a_core_ms": window[LOOP_WAITING]["ms"],
            **{
                name: window[name]["percent_of_one_core"]
                for name in ("machine_total", "asterisk_business", "asterisk_meta", "thoth_pbx")
                + ("bench_and_bitrix_simulator", "other_processes")
            },
        },
        # the caller who came first (earliest Stasis): how long they waited for the others
        "first_caller_ms": round(first_ms, 2)
        if earliest and (first_ms := observed.announce_ms(earliest.wacid))
        else None,
        "first_register_ms_after_first_stasis": round((registers[0] - min(stasis)) * 1000, 2)
        if registers and stasis
        else None,
    }


async def run_bursts(args: argparse.Namespace, scene: Scene, cpu: CpuMeter) -> dict[str, Any]:
    """Single calls and bursts of each size, interleaved round by round so that both see the same
    machine; the ratios burst / single are the result (absolute times move with the host)."""
    load_before = os.getloadavg()
    _, warm_problems = await run_singles(scene, 5)  # a fresh service's first calls are cold
    before = cpu.snapshot()
    singles: list[Placed] = []
    problems: list[str] = list(warm_problems)
    bursts: dict[int, list[dict[str, Any]]] = {n: [] for n in args.bursts}
    for _ in range(args.burst_rounds):
        for n in args.bursts:
            placed, trouble = await run_singles(scene, args.singles)
            singles += placed
            problems += trouble
            bursts[n].append(await run_burst(scene, n))
            problems += bursts[n][-1]["problems"]
            print(
                json.dumps({k: v for k, v in bursts[n][-1].items() if k not in ("placed", "ms", "event_ms")}),
                file=sys.stderr,
            )
    after = cpu.snapshot()
    observed = scene.observed
    single_ms = [v for p in singles if (v := observed.announce_ms(p.wacid)) is not None]
    s50, s99 = pct(single_ms, 0.5), pct(single_ms, 0.99)
    everyone = singles + [p for runs in bursts.values() for r in runs for p in r["placed"]]
    lost, dup, statuses, _wrong = judge_logs(everyone, observed, scene.sim, False)
    at: dict[str, Any] = {}
    for n, runs in bursts.items():
        ms = [v for r in runs for v in r["ms"]]
        placed = [p for r in runs for p in r["placed"]]
        events = [v for r in runs for v in r["event_ms"]]
        b50, b99 = pct(ms, 0.5), pct(ms, 0.99)
        r50 = round(b50 / s50, 2) if b50 and s50 else None
        r99 = round(b99 / s99, 2) if b99 and s99 else None
        target = BURST_TARGETS.get(n)
        at[str(n)] = {
            "burst_ms_p50": b50,
            "burst_ms_p99": b99,
            "ratio_p50": r50,
            "ratio_p99": r99,
            "target_ratio_p50_p99": target,
            "target_met": target is not None
            and r50 is not None
            and r99 is not None
            and r50 <= target[0]
            and r99 <= target[1],
            "samples": len(ms),
            "stages_ms_p50": announce_stages(placed, observed, scene.database, scene.serve_log, 0.5),
            "stages_ms_p99": announce_stages(placed, observed, scene.database, scene.serve_log, 0.99),
            "first_caller_ms": [r["first_caller_ms"] for r in runs],
            "while_announcing_p50": {
                key: pct([r["while_announcing"][key] for r in runs], 0.5) for key in runs[0]["while_announcing"]
            },
            "bare_websocket_event_ms_p50_p99": (pct(events, 0.5), pct(events, 0.99)),
            "bursts": [{k: v for k, v in r.items() if k not in ("placed", "ms", "calls", "event_ms")} for r in runs],
        }
    return {
        "single_ms_p50": s50,
        "single_ms_p99": s99,
        "single_samples": len(single_ms),
        "single_stages_ms_p50": announce_stages(singles, observed, scene.database, scene.serve_log, 0.5),
        "single_bare_websocket_event_ms_p50": pct(
            [scene.floor.event_ms[p.wacid] for p in singles if p.wacid in scene.floor.event_ms], 0.5
        ),
        "at": at,
        "lost_logs": lost,
        "duplicate_logs": dup,
        "finish_status": statuses,
        "problems": problems,
        "load_average_1_5_15": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "cpu": CpuMeter.between(before, after),
        "thoth_cpu_ms_per_call": round(1000 * (after["thoth_pbx"] - before["thoth_pbx"]) / max(1, len(everyone)), 2),
    }


# ------------------------------------------------------------------ orchestration


def pin_thoth_apart(thoth_pid: int, others: list[int]) -> dict[str, list[int]]:
    """`thoth-pbx serve` alone on the last CPU, the other processes on the rest (every thread
    now; threads they start later inherit it)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit(f"--pin-thoth needs at least 2 CPUs; this process may use {cpus}")
    own, rest = {cpus[-1]}, set(cpus[:-1])
    for pid, cpuset in [(thoth_pid, own), *((p, rest) for p in others)]:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(tid), cpuset)
            except ProcessLookupError:  # a thread that ended meanwhile
                pass
    return {"thoth_pbx": sorted(own), "asterisks_and_bench": sorted(rest)}


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    call_lab = start_lab("bench")
    server: ServeProcess | None = None
    sim: BitrixSimulator | None = None
    floor: Floor | None = None
    lab = Lab(call_lab, args.media)
    try:
        call_lab.add_business_number(BUSINESS, BUSINESS_PASSWORD)
        call_lab.add_business_number(BUSINESS_NO_PORTAL, BUSINESS_NO_PORTAL_PASSWORD)
        await apply_trunk(call_lab)
        call_lab.business.restart()  # the TLS transport is new: Asterisk creates transports at start
        lab.prepare_media()
        sim, portal = await new_simulator()
        server = await prepare_service(tmp, call_lab, sim, portal, args.record)
        observed = Observed()
        sim.on_processed = observed.on_bitrix_method
        lab.ari.on_event = observed.on_ari_event

        async def subscribe() -> None:
            await lab.ari.request(
                "POST",
                f"/applications/{OBSERVER_APP}/subscription",
                params={"eventSource": f"endpoint:{TRUNK_ENDPOINT}"},
            )
            # only what the bench reads: every other event of every channel would cost this
            # process (which also runs the simulator that stamps the registers) CPU in a burst
            await lab.ari.request("PUT", f"/applications/{OBSERVER_APP}/eventFilter", json_body=ONLY_DIALPLAN)

        lab.ari.on_connect = subscribe
        lab.ari.start()
        await lab.ari.wait_connected(15)
        floor = Floor(call_lab, sim, portal, tmp)
        await floor.start()
        server.start()
        await server.wait_ari()
        assert server.proc is not None
        pid = server.proc.pid
        placement: Any = "shared: every process may run on every CPU"
        if args.pin_thoth:
            assert call_lab.business.pid is not None and call_lab.meta.pid is not None
            placement = pin_thoth_apart(pid, [call_lab.business.pid, call_lab.meta.pid, os.getpid()])
        cpu = CpuMeter(
            {
                "thoth_pbx": f"/proc/{pid}/stat",
                # its asyncio thread alone (SQLite runs on it too; the rest is the WAL checkpointer and executor threads)
                "thoth_pbx_event_loop": f"/proc/{pid}/task/{pid}/stat",
                "asterisk_business": f"/proc/{call_lab.business.pid}/stat",
                "asterisk_meta": f"/proc/{call_lab.meta.pid}/stat",
                "bench_and_bitrix_simulator": f"/proc/{os.getpid()}/stat",
            },
            loop_schedstat=f"/proc/{pid}/task/{pid}/schedstat",
        )
        asterisk_patterns = {"errors": r" ERROR\[", "warnings": r" WARNING\["}
        logs: dict[str, list[Any]] = {
            "thoth_pbx": [server.log, 0, {"errors": r'"level": "error"', "warnings": r'"level": "warning"'}],
            "asterisk_business": [call_lab.business.log_file, 0, asterisk_patterns],
            "asterisk_meta": [call_lab.meta.log_file, 0, asterisk_patterns],
        }
        for entry in logs.values():
            entry[1] = entry[0].stat().st_size
        setup_s = time.monotonic() - t0
        runs: list[dict[str, Any]] = []
        first = cpu.snapshot()
        burst = None
        if args.scenario in ("burst", "all"):
            burst = await run_bursts(
                args, Scene(lab, observed, sim, tmp / "thoth.sqlite3", server.log, floor, cpu), cpu
            )
        stopped_by = "every level passed"
        for n in args.levels if args.scenario in ("levels", "all") else []:
            # a level lasts about as long as the last one, scaled by its size (or a first guess)
            expected = (
                runs[-1].get("seconds", 0) * n / runs[-1]["calls"]
                if runs
                else n / RAMP_PER_S + args.talk + args.probes * PROBE_EVERY_S + 15
            )
            if time.monotonic() - t0 + expected > args.budget:
                stopped_by = f"time budget ({args.budget:.0f} s) reached before the {n}-call level"
                break
            try:
                runs.append(await run_level(n, args, lab, observed, sim, cpu, tmp / "thoth.sqlite3", logs, floor))
            except Exception as exc:  # the JSON must still come out, with what broke
                traceback.print_exc()
                runs.append({"calls": n, "passed": False, "problems": [f"bench error: {type(exc).__name__}: {exc}"]})
                await lab.clear()
            run = runs[-1]
            progress = (
                "calls",
                "passed",
                "problems",
                "lab_warnings",
                "seconds",
                "announce_ms_probe_p50",
                "announce_ms_probe_p99",
                "cpu_while_talking",
            )
            print(json.dumps({k: run.get(k) for k in progress}), file=sys.stderr)
            if not runs[-1]["passed"]:
                break
        last = cpu.snapshot()
    finally:
        if floor is not None:
            await floor.stop()
        if server is not None:
            server.stop()
        await lab.ari.stop()
        await lab.close()
        if sim is not None:
            await sim.stop()
        stop_lab(call_lab)
    passed = [r for r in runs if r["passed"]]
    failed = next((r for r in runs if not r["passed"]), None)
    headline = next((r for r in runs if r["calls"] == 50), None)
    totals = CpuMeter.between(first, last)
    return {
        "benchmark": "calls",
        "scenario": args.scenario,
        **(burst_headline(burst) if burst else {}),
        "announce_ms_p50": headline and headline["announce_ms_probe_p50"],
        "announce_ms_p99": headline and headline["announce_ms_probe_p99"],
        "announce_floor_ms_p50": headline and headline["announce_floor_ms_p50"],
        "announce_ratio_p50": headline
        and headline["announce_floor_ms_p50"]
        and headline["announce_ms_probe_p50"]
        and round(headline["announce_ms_probe_p50"] / headline["announce_floor_ms_p50"], 2),
        "announce_samples": headline and headline["probes"],
        "announce_at_calls": 50,
        "concurrent_calls": passed[-1]["calls"] if passed else 0,
        "lost_logs": sum(r.get("lost_logs", 0) for r in runs),
        "duplicate_logs": sum(r.get("duplicate_logs", 0) for r in runs),
        "cpu": {"whole_run": totals, "at_50_calls_while_talking": headline and headline["cpu_while_talking"]},
        "ceiling": {
            "calls": passed[-1]["calls"] if passed else 0,
            "first_failed_level": failed and failed["calls"],
            "limited_by": limit_of(failed, runs[-1] if runs else None, stopped_by),
            "at_the_ceiling": passed and per_call(passed[-1]),
        },
        "setup": {
            "media": args.media,
            "record": args.record,
            "ring_group": [OPERATOR],
            "ramp_calls_per_s": RAMP_PER_S,
            "talk_s": args.talk,
            "database": "sqlite",
            "thoth_pbx": "separate `thoth-pbx serve` process",
            "bitrix_simulator": "in the bench process",
            "cpu_placement": placement,
            "setup_s": round(setup_s, 1),
            "total_s": round(time.monotonic() - t0, 1),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "asterisk": call_lab.business.version,
        },
        "runs": runs,
        "burst": burst,
    }


def burst_headline(burst: dict[str, Any]) -> dict[str, Any]:
    """The figures issue 19 asks for, per burst size, at the top of the JSON."""
    out: dict[str, Any] = {"single_ms_p50": burst["single_ms_p50"], "single_ms_p99": burst["single_ms_p99"]}
    for n, at in burst["at"].items():
        for key in ("burst_ms_p50", "burst_ms_p99", "ratio_p50", "ratio_p99", "target_met"):
            out[f"{key}_at_{n}"] = at[key]
    out["burst_lost_logs"] = burst["lost_logs"]
    out["burst_duplicate_logs"] = burst["duplicate_logs"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--levels", type=lambda s: [int(x) for x in s.split(",")], default=[10, 20, 50, 100, 150, 200, 250, 300]
    )
    parser.add_argument("--talk", type=float, default=3.0, help="seconds every level's calls talk once all are up")
    parser.add_argument("--probes", type=int, default=30, help="calls announced one by one while a level talks")
    parser.add_argument("--media", choices=("tone", "echo"), default="tone")
    parser.add_argument(
        "--scenario",
        choices=("levels", "burst", "all"),
        default="all",
        help="levels: the concurrency ramp; burst: N calls at the same instant against single calls",
    )
    parser.add_argument("--bursts", type=lambda s: [int(x) for x in s.split(",")], default=[20, 50])
    parser.add_argument("--burst-rounds", type=int, default=3, help="bursts of each size, interleaved with singles")
    parser.add_argument("--singles", type=int, default=10, help="single calls before each burst")
    parser.add_argument("--record", action="store_true", help="record every bridge (wav) and attach it in Bitrix24")
    parser.add_argument("--workdir", type=Path, help="keep the service's database and log here (default: a temp dir)")
    parser.add_argument(
        "--pin-thoth", action="store_true", help="thoth-pbx alone on the last CPU, everything else on the others"
    )
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; no level starts that would end later")
    args = parser.parse_args()
    if args.workdir:
        if args.workdir.exists() and any(args.workdir.iterdir()):
            parser.error(f"--workdir {args.workdir} is not empty; the bench seeds a fresh database there")
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(asyncio.run(bench(args, args.workdir))))
        return
    with tempfile.TemporaryDirectory(prefix="thoth-bench-calls-") as tmp:
        print(json.dumps(asyncio.run(bench(args, Path(tmp)))))


if __name__ == "__main__":
    main()
