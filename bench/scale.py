"""Several thoth-pbx instances on one PostgreSQL: WhatsApp webhook deliveries per second and
WhatsApp call logs per second with 1, 2 and 3 instances, and the CPU each costs.

    python bench/scale.py [--scenario deliveries|calls|all] [--instances 1,2,3]
                          [--deliveries 1200] [--customers 100] [--in-flight 16]
                          [--calls 300] [--concurrent 40] [--talk 1.0]

Deliveries: everything runs on this machine (loopback): a private PostgreSQL (tests/support/postgres.py), N
`thoth-pbx serve` processes on it (tests/support/cluster.py), the Meta and Bitrix24 simulators
in this process. The portal allows 50 requests/s with a burst of 1000 (so the portal's limit is
not what is measured; on a standard portal, 2 requests/s x 50 messages a batch is the ceiling
whatever the number of instances: docs/benchmarks-messages.md).

Each round posts `--deliveries` webhook deliveries (one customer message each, `--customers`
chats) spread round-robin over the instances, `--in-flight` at a time, as Meta would from
several of its servers. Reported per N:

- `accepted_per_s`: deliveries answered 200 per second (stored in the inbox: what Meta sees);
- `delivered_per_s`: messages executed at the Bitrix24 simulator per second, from the first
  post to the last message (inbox -> dispatch -> outbox job -> imconnector.send.messages);
- `cpu_ms_per_delivery`: user + system CPU of all serve processes over the round, per delivery;
- `lost` / `duplicated`: messages never or twice in Bitrix24; `out_of_order_chats`: chats whose
  messages arrived in another order than posted.

Calls (needs root: the call lab): one call lab for all rounds (tests/calls/lab.py: our Asterisk
and a second one playing Meta and the operators' phones, our trunk applied), N serve processes on
a fresh PostgreSQL database per round (tests/calls/cluster.py), the Bitrix24 simulator in this
process (50 requests/s, burst 500). One instance owns the Stasis app (it handles every call's
Asterisk side and its commits start the call's Bitrix24 jobs at once); a call job that has to
wait (its chain busy, its instance dead) is run by any instance's worker. `--calls` WhatsApp
calls, each from a new customer, `--concurrent` at a time: each of `--concurrent` callers takes
the next call of one queue, places it, waits until an operator (101, whose phone answers with
Echo: signalling, no media) has answered it, lets it talk `--talk` seconds, and has the Meta side
hang up, then takes the next call. A call log is a
call Bitrix24 registered and was told finished (telephony.externalcall.register +
telephony.externalcall.finish, one CALL_ID, one finish: as bench/takeover.py counts them).
Reported per N:

- `call_logs_per_s`: call logs completed at the Bitrix24 simulator per second, from the first
  call placed to the last finish; `calls_placed_per_s`: the load offered (it is bounded by
  `--concurrent` / (answer time + `--talk` + hang-up), so compare the two);
- `cpu_ms_per_call_log`: user + system CPU of all serve processes over the round, per call log
  (and `cpu_ms_per_call_log_by_process`: our Asterisk, Meta's Asterisk, PostgreSQL, this
  process with the simulator; `cores_busy`: each of them and the whole machine, in cores);
- `call_logs_lost` / `call_logs_duplicated`: calls that reached thoth-pbx and were never logged
  whole / logged with two CALL_IDs or two finishes; `calls_not_answered`: calls no operator
  answered within 30 s (Asterisk's side);
- `answer_s_p50`/`_p99` (placed -> answered) and `finish_after_hangup_s_p50`/`_p99` (Meta hangs
  up -> the finish at the simulator).

The machine has 2 cores that also run PostgreSQL, the simulators, this client and (calls) both
Asterisks: more instances cannot add cores here, so the figures show what an instance costs and
that nothing breaks, not how far a bigger machine scales. The Stasis app's takeover time is
measured by bench/takeover.py. Prints one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.calls.cluster import FINISH, REGISTER  # noqa: E402
from tests.calls.cluster import Cluster as CallCluster  # noqa: E402
from tests.calls.conftest import BUSINESS, start_own_lab  # noqa: E402
from tests.calls.lab import CallLab, stop_lab  # noqa: E402
from tests.support.bitrix import wait_until  # noqa: E402
from tests.support.cluster import Cluster  # noqa: E402
from tests.support.postgres import PostgresServer, start_postgres  # noqa: E402
from thoth_pbx.features.calls.models import Call  # noqa: E402
from thoth_pbx.outbox.models import OutboxJob  # noqa: E402
from thoth_pbx.sandbox.bitrix import Portal, Recorded  # noqa: E402
from thoth_pbx.store import db  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ANSWER_TIMEOUT_S = 30.0  # a call no operator answered by then is counted as not answered
LOGS_TIMEOUT_S = 180.0  # after the last hang-up: every call log finished, the call jobs drained
WATCH_EVERY_S = 0.05  # how often the one watcher asks the database which calls were answered


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def round_of(tmp: Path, url: str, instances: int, args: argparse.Namespace) -> dict[str, Any]:
    cluster = Cluster(tmp, url, size=instances)
    await cluster.open(rate=50, burst=1000)
    try:
        members = cluster.members
        pids = [m.proc.pid for m in members if m.proc is not None]
        customers = [f"4915{n:09d}" for n in range(args.customers)]
        posted: dict[str, list[str]] = defaultdict(list)  # chat -> texts in posting order
        # a chat's messages go one after the other (each posted once the previous one got its
        # 200, as Meta does per chat), to any instance; chats go in parallel
        work: list[list[int]] = [[] for _ in range(args.in_flight)]
        for i in range(args.deliveries):
            work[(i % len(customers)) % args.in_flight].append(i)

        async def poster(mine: list[int]) -> None:
            for i in mine:
                customer = customers[i % len(customers)]
                text = f"s{instances}-{i}"
                posted[customer].append(text)
                await cluster.post(members[i % len(members)], [(customer, text, f"wamid.s{instances}.{i}")])

        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        began = time.monotonic()
        await asyncio.gather(*(poster(mine) for mine in work))
        accepted_s = time.monotonic() - began
        total = args.deliveries

        def arrived() -> bool:
            return sum(1 for _, text in cluster.in_bitrix() if text.startswith(f"s{instances}-")) >= int(total)

        await wait_until(arrived, timeout=600, what="every message in Bitrix24")
        delivered_s = time.monotonic() - began
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        seen: dict[str, list[str]] = defaultdict(list)
        for chat, text in cluster.in_bitrix():
            if text.startswith(f"s{instances}-"):
                seen[chat].append(text)
        counts = Counter(text for texts in seen.values() for text in texts)
        everything = [text for texts in posted.values() for text in texts]
        return {
            "instances": instances,
            "deliveries": total,
            "accepted_per_s": round(total / accepted_s, 1),
            "delivered_per_s": round(total / delivered_s, 1),
            "cpu_ms_per_delivery": round(cpu * 1000 / total, 2),
            "cpu_cores_busy": round(cpu / delivered_s, 2),
            "lost": sum(1 for text in everything if counts[text] == 0),
            "duplicated": sum(1 for text in everything if counts[text] > 1),
            "out_of_order_chats": sum(1 for chat, texts in posted.items() if seen.get(chat) != texts),
        }
    finally:
        await cluster.close()


# ------------------------------------------------------------------ call logs


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """utime + stime of one thread (the main thread of a serve process runs its event loop)."""
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def threads_cpu_seconds(pid: int) -> dict[int, float]:
    """Thread id -> utime + stime, for every thread of one process."""
    out = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def busiest_thread(before: dict[int, float], after: dict[int, float], wall: float) -> float:
    """The busiest thread's share of one core between two `threads_cpu_seconds` (a thread that
    started meanwhile counts from zero): near 1.0 means one thread is what limits."""
    return round(max((after[t] - before.get(t, 0.0) for t in after), default=0.0) / wall, 2)


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a server that forks a process per connection (PostgreSQL): the parent's own, its
    reaped children's (cutime + cstime) and its live children's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15])
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            child = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone meanwhile: its time is in the parent's cutime once reaped
        if int(child[1]) == pid:
            total += int(child[11]) + int(child[12])
    return total / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot: cores x uptime - idle (as bench/calls.py)."""
    uptime, idle = (float(x) for x in Path("/proc/uptime").read_text().split())
    return (os.cpu_count() or 1) * uptime - idle


def postmaster_pid(postgres: PostgresServer) -> int | None:
    """The private server's postmaster (None for THOTH_TEST_POSTGRES_URL: not ours to measure)."""
    if postgres._proc_dir is None:
        return None
    return int((postgres._proc_dir / "data" / "postmaster.pid").read_text().split()[0])


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)


@dataclass
class CallTally:
    """What the Bitrix24 simulator executed for the calls, as it happens (its `on_processed` hook)."""

    call_ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # linkedid -> CALL_IDs
    finishes: Counter[str] = field(default_factory=Counter)  # linkedid -> finishes
    finished_at: dict[str, float] = field(default_factory=dict)  # linkedid -> first finish (monotonic)
    methods: Counter[str] = field(default_factory=Counter)
    requests: set[int] = field(default_factory=set)  # HTTP requests (a batch is one)
    _linkedid_of: dict[str, str] = field(default_factory=dict)  # CALL_ID -> linkedid

    def on_method(self, _portal: Portal, entry: Recorded) -> None:
        self.methods[entry.method] += 1
        self.requests.add(entry.batch if entry.batch is not None else entry.seq)
        if not entry.ok:
            return
        if entry.method == REGISTER:
            linkedid, call_id = str(entry.params.get("EXTERNAL_CALL_ID")), str((entry.result or {}).get("CALL_ID"))
            self.call_ids[linkedid].add(call_id)
            self._linkedid_of[call_id] = linkedid
        elif entry.method == FINISH:
            linkedid = self._linkedid_of.get(str(entry.params.get("CALL_ID")), "")
            self.finishes[linkedid] += 1
            self.finished_at.setdefault(linkedid, time.monotonic())

    def logged_once(self, linkedid: str) -> bool:
        return len(self.call_ids.get(linkedid, ())) == 1 and self.finishes[linkedid] == 1

    def duplicated(self, linkedid: str) -> bool:
        return len(self.call_ids.get(linkedid, ())) > 1 or self.finishes[linkedid] > 1


class AnswerWatcher:
    """One task tells the callers when their call was answered (its row `connected`), with one
    query for all waiting calls: a query per caller would load PostgreSQL more than the calls."""

    def __init__(self, cluster: CallCluster) -> None:
        self.cluster = cluster
        self.waiting: dict[str, asyncio.Future[str]] = {}  # caller -> linkedid once answered
        self.task: asyncio.Task[None] | None = None

    def answered(self, caller: str) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting[caller] = future
        if self.task is None:
            self.task = asyncio.create_task(self._watch())
        return future

    async def _watch(self) -> None:
        sessions = db.session_factory(self.cluster.engine)
        while True:
            callers = [c for c, f in self.waiting.items() if not f.done()]
            if callers:
                async with sessions() as session:
                    rows = await session.execute(
                        select(Call.caller, Call.linkedid).where(
                            Call.caller.in_(callers), Call.answered_at.is_not(None)
                        )
                    )
                    for caller, linkedid in rows.all():
                        future = self.waiting.pop(caller, None)
                        if future is not None and not future.done():  # not given up meanwhile
                            future.set_result(str(linkedid))
            await asyncio.sleep(WATCH_EVERY_S)  # the watcher's polling pace

    async def linkedids(self, callers: list[str]) -> dict[str, str]:
        """caller -> linkedid of every call that reached thoth-pbx (answered or not)."""
        async with db.session_factory(self.cluster.engine)() as session:
            rows = await session.execute(select(Call.caller, Call.linkedid).where(Call.caller.in_(callers)))
            return {str(caller): str(linkedid) for caller, linkedid in rows.all()}

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass


class MetaSide:
    """Meta's side of the lab over its ARI (aiohttp, so many calls can be placed at once):
    the same request as CallLab.whatsapp_call."""

    def __init__(self, lab: CallLab) -> None:
        meta = lab.meta
        token = base64.b64encode(f"{meta.ari_user}:{meta.ari_password}".encode()).decode()
        self.http = aiohttp.ClientSession(
            base_url=meta.ari_base,
            headers={"Authorization": f"Basic {token}"},
            timeout=aiohttp.ClientTimeout(total=15),
        )

    async def call(self, caller: str, wacid: str) -> str:
        params = {
            "endpoint": f"PJSIP/{BUSINESS}@biz{BUSINESS.lstrip('+')}",
            "context": "caller",
            "extension": "s",
            "priority": "1",
            "callerId": f'"{caller}" <{caller}>',
            "timeout": "60",
        }
        body = {"variables": {"PJSIP_HEADER(add,X-WA-Meta-WACID)": wacid}}
        async with self.http.post("/ari/channels", params=params, json=body) as resp:
            resp.raise_for_status()
            return str((await resp.json())["id"])

    async def hangup(self, channel: str) -> None:
        async with self.http.delete(f"/ari/channels/{channel}") as resp:
            if resp.status not in (204, 404):
                resp.raise_for_status()

    async def close(self) -> None:
        await self.http.close()


async def calls_round(
    tmp: Path, url: str, lab: CallLab, postmaster: int | None, instances: int, args: argparse.Namespace
) -> dict[str, Any]:
    async def quiet() -> bool:  # nothing of an earlier round left on either Asterisk
        return not await asyncio.to_thread(lab.business_channels) and not await asyncio.to_thread(lab.meta_channels)

    await wait_until(quiet, timeout=60, what="both Asterisks without channels")
    cluster = await CallCluster.start(tmp, lab, url, instances=instances)
    meta = MetaSide(lab)
    watcher = AnswerWatcher(cluster)
    try:
        owner = await cluster.settled_owner(timeout=60)
        tally = CallTally()
        cluster.sim.on_processed = tally.on_method
        pids = [s.proc.pid for s in cluster.servers if s.proc is not None]
        meters: dict[str, Callable[[], float]] = {
            "thoth_pbx": lambda: sum(cpu_seconds(pid) for pid in pids),
            "asterisk_ours": lambda: cpu_seconds(lab.business.pid or 0),
            "asterisk_meta": lambda: cpu_seconds(lab.meta.pid or 0),
            "bench_and_simulators": lambda: cpu_seconds(os.getpid()),
            "machine": machine_busy_seconds,
        }
        if postmaster is not None:
            meters["postgresql"] = lambda: tree_cpu_seconds(postmaster)
        if owner.proc is not None:  # the Stasis owner's event loop: one thread, at most one core
            owner_pid = owner.proc.pid
            meters["thoth_pbx_owner_event_loop"] = lambda: thread_cpu_seconds(owner_pid, owner_pid)
        server_pids = {s.port: s.proc.pid for s in cluster.servers if s.proc is not None}
        callers = [f"+7996{instances}{i:06d}" for i in range(args.calls)]
        placed_at: dict[str, float] = {}
        answer_s: dict[str, float] = {}
        hung_up_at: dict[str, float] = {}
        not_answered: list[str] = []
        # one queue for all callers: a call Asterisk drops (30 s lost) holds up one caller, not a
        # share of the round's calls that would then trail behind the others
        queue = iter(callers)

        async def caller_loop() -> None:
            for caller in queue:
                answered = watcher.answered(caller)
                placed_at[caller] = time.monotonic()
                channel = await meta.call(caller, f"wacid.scale{caller.lstrip('+')}")
                try:
                    await asyncio.wait_for(answered, ANSWER_TIMEOUT_S)
                    answer_s[caller] = time.monotonic() - placed_at[caller]
                    await asyncio.sleep(args.talk)  # the call's talk time: the shape of the load, not a wait
                except TimeoutError:
                    not_answered.append(caller)
                    watcher.waiting.pop(caller, None)
                hung_up_at[caller] = time.monotonic()
                await meta.hangup(channel)

        threads = {"asterisk_ours": lab.business.pid or 0, "asterisk_meta": lab.meta.pid or 0}
        threads_before = {name: threads_cpu_seconds(pid) for name, pid in threads.items()}
        before = {name: read() for name, read in meters.items()}
        before_server = {port: cpu_seconds(pid) for port, pid in server_pids.items()}
        began = time.monotonic()
        await asyncio.gather(*(caller_loop() for _ in range(args.concurrent)))
        last_placed = max(placed_at.values())
        linkedid = await watcher.linkedids(callers)  # every call that reached thoth-pbx

        sessions = db.session_factory(cluster.engine)

        async def settled() -> bool:
            if not all(tally.finishes[lid] >= 1 and tally.call_ids.get(lid) for lid in linkedid.values()):
                return False
            async with sessions() as session:  # and no call job left to run (a late duplicate)
                left = await session.scalar(
                    select(func.count())
                    .select_from(OutboxJob)
                    .where(OutboxJob.chain.like("bitrix-call:%"), OutboxJob.status.in_(("pending", "running")))
                )
            return left == 0

        complete = True
        try:
            await wait_until(settled, timeout=LOGS_TIMEOUT_S, what="every call logged in Bitrix24")
        except AssertionError:
            complete = False
        ended = time.monotonic()
        used = {name: read() - before[name] for name, read in meters.items()}
        wall = ended - began
        busiest = {
            name: busiest_thread(threads_before[name], threads_cpu_seconds(pid), wall) for name, pid in threads.items()
        }
        used_server = {port: cpu_seconds(pid) - before_server[port] for port, pid in server_pids.items()}
        linkedid = await watcher.linkedids(callers)
        logged = [lid for lid in linkedid.values() if tally.logged_once(lid)]
        finished = [tally.finished_at[lid] for lid in logged]
        last_log = max(finished, default=ended)
        window = last_log - began
        n_logged = len(logged)
        async with sessions() as session:
            stored = await session.execute(
                select(OutboxJob.kind, OutboxJob.status, func.count())
                .where(OutboxJob.chain.like("bitrix-call:%"))
                .group_by(OutboxJob.kind, OutboxJob.status)
            )
            jobs_by: dict[str, dict[str, int]] = defaultdict(dict)
            for kind, status, count in stored.all():
                jobs_by[str(kind)][str(status)] = int(count)
        return {
            "instances": instances,
            "calls": args.calls,
            "concurrent": args.concurrent,
            "talk_s": args.talk,
            "call_logs": n_logged,
            "call_logs_per_s": round(n_logged / window, 2) if window > 0 else None,
            "calls_placed_per_s": round(len(placed_at) / (last_placed - began), 2) if last_placed > began else None,
            "cpu_ms_per_call_log": round(used["thoth_pbx"] * 1000 / max(1, n_logged), 1),
            "cpu_ms_per_call_log_by_process": {
                name: round(seconds * 1000 / max(1, n_logged), 1)
                for name, seconds in used.items()
                if name not in ("machine", "thoth_pbx_owner_event_loop")
            },
            "cores_busy": {name: round(seconds / wall, 2) for name, seconds in used.items()},
            "busiest_thread_cores": busiest,
            "thoth_pbx_cpu_s_by_instance": {
                ("owner" if port == owner.port else f"standby:{port}"): round(s, 2) for port, s in used_server.items()
            },
            "call_logs_lost": sum(
                1 for lid in linkedid.values() if not tally.logged_once(lid) and not tally.duplicated(lid)
            ),
            "call_logs_duplicated": sum(1 for lid in linkedid.values() if tally.duplicated(lid)),
            "calls_not_answered": len(not_answered),
            "calls_never_reached_thoth": len(callers) - len(linkedid),
            "all_logged_and_drained": complete,
            "answer_s_p50": pct(list(answer_s.values()), 0.5),
            "answer_s_p99": pct(list(answer_s.values()), 0.99),
            "finish_after_hangup_s_p50": pct(
                [tally.finished_at[linkedid[c]] - hung_up_at[c] for c in linkedid if linkedid[c] in tally.finished_at],
                0.5,
            ),
            "finish_after_hangup_s_p99": pct(
                [tally.finished_at[linkedid[c]] - hung_up_at[c] for c in linkedid if linkedid[c] in tally.finished_at],
                0.99,
            ),
            "round_s": round(wall, 1),
            "bitrix_methods_per_call_log": {
                m: round(n / max(1, n_logged), 2) for m, n in sorted(tally.methods.items())
            },
            "bitrix_requests_per_s": round(len(tally.requests) / window, 1) if window > 0 else None,
            "call_jobs_by_kind_and_status": jobs_by,
        }
    finally:
        await watcher.close()
        await meta.close()
        await cluster.stop()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    postgres = start_postgres()
    # a lab of its own (instance names no other run uses); its start runs its own event loop
    lab = await asyncio.to_thread(start_own_lab, "scale-calls") if "calls" in args.scenarios else None
    rounds = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            for n in args.instances:
                result: dict[str, Any] = {"instances": n}
                if "deliveries" in args.scenarios:
                    name, url = postgres.create_database()
                    where = Path(tmp) / f"n{n}"
                    where.mkdir()
                    try:
                        result.update(await round_of(where, url, n, args))
                    finally:
                        postgres.drop_database(name)
                if lab is not None:
                    name, url = postgres.create_database()
                    where = Path(tmp) / f"calls-n{n}"
                    where.mkdir()
                    try:
                        calls = await calls_round(where, url, lab, postmaster_pid(postgres), n, args)
                        result.update({k: v for k, v in calls.items() if k != "instances"})
                    finally:
                        postgres.drop_database(name)
                rounds.append(result)
                print(json.dumps(result), file=sys.stderr)  # progress
    finally:
        if lab is not None:
            stop_lab(lab)
        postgres.stop()
    one = rounds[0]
    out: dict[str, Any] = {"benchmark": "scale", "scenario": args.scenario, "rounds": rounds}
    if "deliveries" in args.scenarios:
        out.update(
            {
                "delivered_per_s_ratio_to_1": {
                    str(r["instances"]): round(r["delivered_per_s"] / one["delivered_per_s"], 2) for r in rounds
                },
                "lost": sum(r["lost"] for r in rounds),
                "duplicated": sum(r["duplicated"] for r in rounds),
                "portal_limit": {"rate_per_s": 50, "burst": 1000},
            }
        )
    if lab is not None:
        out.update(
            {
                "call_logs_per_s_ratio_to_1": {
                    str(r["instances"]): round(r["call_logs_per_s"] / one["call_logs_per_s"], 2)
                    if r["call_logs_per_s"] and one["call_logs_per_s"]
                    else None
                    for r in rounds
                },
                "call_logs_lost": sum(r["call_logs_lost"] for r in rounds),
                "call_logs_duplicated": sum(r["call_logs_duplicated"] for r in rounds),
                "calls_portal_limit": {"rate_per_s": 50, "burst": 500},
            }
        )
    out.update(
        {
            "takeover": "bench/takeover.py",
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
            },
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["deliveries", "calls", "all"], default="all")
    parser.add_argument("--instances", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    parser.add_argument("--deliveries", type=int, default=1200)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--calls", type=int, default=300, help="WhatsApp calls per round")
    parser.add_argument("--concurrent", type=int, default=40, help="calls under way at a time")
    parser.add_argument("--talk", type=float, default=1.0, help="seconds each answered call talks")
    args = parser.parse_args()
    args.scenarios = ["deliveries", "calls"] if args.scenario == "all" else [args.scenario]
    print(json.dumps(asyncio.run(bench(args))))


if __name__ == "__main__":
    main()
