"""Several thoth-pbx instances on one PostgreSQL: WhatsApp webhook deliveries per second with
1, 2 and 3 instances, and the CPU each delivery costs.

    python bench/scale.py [--instances 1,2,3] [--deliveries 1200] [--customers 100] [--in-flight 16]

Everything runs on this machine (loopback): a private PostgreSQL (tests/support/postgres.py), N
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

The machine has 2 cores that also run PostgreSQL, the simulators and this client: more
instances cannot add cores here, so the figures show what an instance costs and that nothing
breaks, not how far a bigger machine scales. The Stasis app's takeover time is measured by
bench/takeover.py. Prints one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.bitrix import wait_until  # noqa: E402
from tests.support.cluster import Cluster  # noqa: E402
from tests.support.postgres import start_postgres  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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
            return sum(1 for _, text in cluster.in_bitrix() if text.startswith(f"s{instances}-")) >= total

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


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    postgres = start_postgres()
    rounds = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            for n in args.instances:
                name, url = postgres.create_database()
                where = Path(tmp) / f"n{n}"
                where.mkdir()
                try:
                    rounds.append(await round_of(where, url, n, args))
                finally:
                    postgres.drop_database(name)
    finally:
        postgres.stop()
    one = rounds[0]
    return {
        "benchmark": "scale",
        "rounds": rounds,
        "delivered_per_s_ratio_to_1": {
            str(r["instances"]): round(r["delivered_per_s"] / one["delivered_per_s"], 2) for r in rounds
        },
        "lost": sum(r["lost"] for r in rounds),
        "duplicated": sum(r["duplicated"] for r in rounds),
        "portal_limit": {"rate_per_s": 50, "burst": 1000},
        "takeover": "bench/takeover.py",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    parser.add_argument("--deliveries", type=int, default=1200)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=16)
    print(json.dumps(asyncio.run(bench(parser.parse_args()))))


if __name__ == "__main__":
    main()
