"""Hostile bodies vs. the webhook: does an unauthenticated attacker move Meta's p99?

    python bench/hostile.py [--deliveries 6000] [--concurrency 16] [--seconds 60]

Starts the real service (`thoth-pbx serve`, SQLite) once, then, in the same run, measures a
signed Meta webhook load (bench/webhook.py's generator, own process) alone and while a second
process keeps posting the worst Bitrix bodies we know of (a 25 kB and a 200 kB body of `[]`
keys, a key nested 1,200 deep, a 1.3 MB chunked body) to /api/bitrix/events and /install.
Rounds alternate quiet / hostile so a noisy neighbour hurts both alike; medians are reported.
Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import webhook  # noqa: E402  (the same load generator and set-up as bench/webhook.py)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def hostile_bodies() -> list[tuple[str, object]]:
    token = "event=ONCRMDEALUPDATE&auth[member_id]=x&auth[application_token]=guess&"
    return [
        ("events", token + "&".join(["x[]=1"] * 4200)),  # 25 kB of [] keys
        ("events", token + "&".join(["x[]=1"] * 34000)),  # 200 kB
        ("install", "a" + "[b]" * 1200 + "=1"),  # deep nesting
        ("events", "a" + "[b]" * 1200 + "=1"),  # no token, deep
        ("events", None),  # chunked, over the size limit
    ]


async def oversize() -> AsyncIterator[bytes]:
    for _ in range(20):
        yield b"a=" + b"x" * 65533 + b"&"


async def attack(base: str, seconds: float, max_requests: int) -> dict[str, object]:
    import signal

    import aiohttp

    stop = asyncio.Event()  # SIGTERM at the end of the round: report, then exit
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    statuses: dict[str, int] = {}
    sent = 0
    deadline = time.monotonic() + seconds
    bodies = hostile_bodies()
    async with aiohttp.ClientSession() as session:
        while not stop.is_set() and time.monotonic() < deadline and sent < max_requests:
            route, body = bodies[sent % len(bodies)]
            data = oversize() if body is None else body
            try:
                async with session.post(f"{base}/api/bitrix/{route}", data=data, headers=FORM) as r:
                    await r.read()
                    statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
            except aiohttp.ClientError as exc:  # the server may close an oversize upload early
                statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
            sent += 1
    return {"requests": sent, "statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--attack", metavar="BASE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        print(json.dumps(asyncio.run(attack(args.attack, args.seconds, 100_000))))
        return

    with tempfile.TemporaryDirectory(prefix="thoth-bench-") as tmp:
        port = webhook.free_port()
        password = "bench-password-123"
        server = webhook.serve(tmp, port, password, "error")
        base = f"http://127.0.0.1:{port}"
        quiet, loud, attacks = [], [], []
        try:
            asyncio.run(webhook.wait_http(f"{base}/healthz"))
            url = asyncio.run(webhook.setup_account(base, password))
            per_round = args.deliveries // (2 * args.rounds)
            offset = 0
            for _ in range(args.rounds):
                quiet.append(webhook.run_load(url, per_round, args.concurrency, args.seconds, offset=offset))
                offset += per_round + args.concurrency
                attacker = subprocess.Popen(
                    [sys.executable, __file__, "--attack", base, "--seconds", str(args.seconds)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                try:
                    loud.append(webhook.run_load(url, per_round, args.concurrency, args.seconds, offset=offset))
                finally:
                    attacker.terminate()
                    out, _ = attacker.communicate(timeout=30)
                offset += per_round + args.concurrency
                if out.strip():
                    attacks.append(json.loads(out))
        finally:
            server.terminate()
            server.wait(30)

    def median(rows: list[dict[str, float]], key: str) -> float:
        return round(statistics.median(r[key] for r in rows), 2)

    statuses: dict[str, int] = {}
    for a in attacks:
        for k, n in a["statuses"].items():
            statuses[k] = statuses.get(k, 0) + n
    print(
        json.dumps(
            {
                "benchmark": "hostile",
                "webhook_p50_ms_quiet": median(quiet, "p50_ms"),
                "webhook_p99_ms_quiet": median(quiet, "p99_ms"),
                "webhook_p50_ms_hostile": median(loud, "p50_ms"),
                "webhook_p99_ms_hostile": median(loud, "p99_ms"),
                "p99_delta_ms": round(median(loud, "p99_ms") - median(quiet, "p99_ms"), 2),
                "webhook_errors": sum(int(r["errors"]) for r in quiet + loud),
                "hostile_requests": sum(int(a["requests"]) for a in attacks),
                "hostile_statuses": statuses,
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
