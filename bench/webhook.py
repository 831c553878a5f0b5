"""Webhook throughput: signed Meta deliveries against `thoth-pbx serve` on SQLite, durable.

    python bench/webhook.py [--deliveries 20000] [--concurrency 32] [--seconds 60]

Starts the real service (`python -m thoth_pbx.cli serve`, SQLite, every delivery committed
before its 200) and, in the same run, a bare aiohttp app whose handler only reads the body
and answers 200 (the ceiling). A separate load-generator process (aiohttp client, bounded
concurrency, loopback only, bounded in count and time) posts unique signed message
deliveries to each. Prints one JSON object: deliveries_per_s, p50_ms, p99_ms, bare_per_s,
ratio, plus the rows found in the database afterwards and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP_SECRET = "bench-app-secret-0123456789"
PNID = "106540352242922"
WABA_ID = "102290129340398"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), including all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ load generator (own process)


def delivery(i: int) -> bytes:
    doc = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA_ID,
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550100001", "phone_number_id": PNID},
                            "contacts": [{"profile": {"name": "Bench"}, "wa_id": "15551234567"}],
                            "messages": [
                                {
                                    "from": "15551234567",
                                    "id": f"wamid.bench{i:08d}",
                                    "timestamp": str(int(time.time())),
                                    "type": "text",
                                    "text": {"body": f"benchmark message {i}"},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(doc).encode()


async def load(url: str, count: int, concurrency: int, seconds: float, offset: int = 0) -> dict[str, float]:
    import aiohttp

    bodies = [
        (b, "sha256=" + hmac.new(APP_SECRET.encode(), b, hashlib.sha256).hexdigest())
        for b in (delivery(offset + i) for i in range(count))
    ]
    latencies: list[float] = []
    errors = 0
    next_index = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # warm-up: open the connections, fill caches
        for body, sig in bodies[:concurrency]:
            async with session.post(
                url, data=body, headers={"X-Hub-Signature-256": sig, "Content-Type": "application/json"}
            ) as r:
                await r.read()

        async def worker() -> None:
            nonlocal next_index, errors
            while next_index < count and time.monotonic() < deadline:
                body, sig = bodies[next_index]
                next_index += 1
                started = time.perf_counter()
                async with session.post(
                    url, data=body, headers={"X-Hub-Signature-256": sig, "Content-Type": "application/json"}
                ) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        next_index = concurrency  # the warm-up bodies are already stored
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "per_s": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def run_load(url: str, count: int, concurrency: int, seconds: float, offset: int = 0) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            url,
            "--deliveries",
            str(count),
            "--concurrency",
            str(concurrency),
            "--seconds",
            str(seconds),
            "--offset",
            str(offset),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    return json.loads(out.stdout)


# ------------------------------------------------------------------ bare ceiling (own process)


def bare(port: int) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"received": 1})

    app = web.Application()
    app.router.add_post("/api/waba/", handler)
    app.router.add_get("/healthz", lambda r: web.json_response({"status": "ok"}))  # type: ignore[arg-type,return-value]
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ------------------------------------------------------------------ orchestration


def serve(tmp: str, port: int, password: str, log_level: str) -> subprocess.Popen[bytes]:
    """`thoth-pbx serve` on SQLite in `tmp`, its log in tmp/serve.log."""
    env = {
        **os.environ,
        "THOTH_LISTEN": f"127.0.0.1:{port}",
        "THOTH_DATABASE_URL": f"sqlite:///{Path(tmp) / 'thoth.sqlite3'}",
        "THOTH_SECRET_KEY_FILE": f"{tmp}/secret.key",
        "THOTH_ADMIN_PASSWORD": password,
        "THOTH_ADMIN_PASSWORD_FILE": f"{tmp}/admin-password",
        "THOTH_ASTERISK_CONFIG_DIR": f"{tmp}/asterisk",
        "THOTH_LOG_LEVEL": log_level,
        "THOTH_CONFIG": "",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "thoth_pbx.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(Path(tmp) / "serve.log", "w"),
    )


async def wait_http(url: str, timeout: float = 60) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up in {timeout}s")
            await asyncio.sleep(0.1)  # polling a starting process


async def setup_account(base: str, password: str) -> str:
    import base64

    import aiohttp

    token = base64.b64encode(f"admin:{password}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as session:
        async with session.post(
            f"{base}/api/admin/wabas",
            json={"name": "Bench", "waba_id": WABA_ID, "access_token": "EAAG" + "b" * 40, "app_secret": APP_SECRET},
        ) as r:
            waba = await r.json()
            assert r.status == 201, waba
        async with session.post(
            f"{base}/api/admin/phones",
            json={"number": "+15550100001", "phone_number_id": PNID, "waba_account_id": waba["id"]},
        ) as r:
            assert r.status == 201, await r.text()
    return f"{base}/api/waba/?api-key={waba['api_key']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0, help="time bound of each load round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/real rounds (medians reported)")
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(load(args.load, args.deliveries, args.concurrency, args.seconds, args.offset))))
        return
    if args.bare:
        bare(args.bare)
        return

    with tempfile.TemporaryDirectory(prefix="thoth-bench-") as tmp:
        port, bare_port = free_port(), free_port()
        password = "bench-password-123"
        database = Path(tmp) / "thoth.sqlite3"
        server = serve(tmp, port, password, "warning")
        bare_server = subprocess.Popen([sys.executable, __file__, "--bare", str(bare_port)])
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_http(f"{base}/healthz"))
            asyncio.run(wait_http(f"http://127.0.0.1:{bare_port}/healthz"))
            url = asyncio.run(setup_account(base, password))
            # Alternate bare and real rounds so a noisy neighbour hurts both alike; report medians.
            per_round = args.deliveries // args.rounds
            rounds = []
            for i in range(args.rounds):
                before = cpu_seconds(bare_server.pid)
                bare_result = run_load(
                    f"http://127.0.0.1:{bare_port}/api/waba/", per_round, args.concurrency, args.seconds
                )
                bare_cpu = cpu_seconds(bare_server.pid) - before
                before = cpu_seconds(server.pid)
                result = run_load(url, per_round, args.concurrency, args.seconds, offset=i * per_round)
                server_cpu = cpu_seconds(server.pid) - before
                rounds.append(
                    {
                        "bare_per_s": bare_result["per_s"],
                        **result,
                        # CPU the server process spent per request: robust to noisy neighbours
                        "cpu_us_per_delivery": server_cpu / (result["requests"] + args.concurrency) * 1e6,
                        "bare_cpu_us_per_request": bare_cpu / (bare_result["requests"] + args.concurrency) * 1e6,
                    }
                )
        finally:
            for proc in (server, bare_server):
                proc.terminate()
                proc.wait(30)
        with sqlite3.connect(database) as db:
            stored = db.execute("SELECT count(*) FROM webhook_inbox").fetchone()[0]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    print(
        json.dumps(
            {
                "benchmark": "webhook",
                "deliveries_per_s": round(median("per_s"), 1),
                "p50_ms": round(median("p50_ms"), 2),
                "p99_ms": round(median("p99_ms"), 2),
                "bare_per_s": round(median("bare_per_s"), 1),
                "ratio": round(statistics.median(r["per_s"] / r["bare_per_s"] for r in rounds), 3),
                "cpu_us_per_delivery": round(median("cpu_us_per_delivery"), 1),
                "bare_cpu_us_per_request": round(median("bare_cpu_us_per_request"), 1),
                "rounds": [{k: round(v, 2) for k, v in r.items()} for r in rounds],
                "deliveries": sum(int(r["requests"]) for r in rounds),
                "errors": sum(int(r["errors"]) for r in rounds),
                "rows_stored": stored,  # == rows_sent: every 200 was a committed row
                "rows_sent": sum(int(r["requests"]) for r in rounds) + args.rounds * args.concurrency,
                "concurrency": args.concurrency,
                "database": "sqlite (WAL), committed before 200",
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
