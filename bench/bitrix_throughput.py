"""Call logs per second into one Bitrix24 portal limited to 2 requests/s (burst 50).

    python bench/bitrix_throughput.py [--window 10] [--database-url sqlite+thoth:///...]

Everything real but Bitrix: the outbox (SQLite by default) delivers register + finish
job pairs through the per-portal REST client to the strict simulator over loopback HTTP.
Each mode gets its own portal (a fresh bucket) and a backlog larger than the burst; the
rate is measured over `--window` seconds starting 3 s after our client's bucket filled up
(the burst's replies have landed), i.e. sustained and not the first burst. A call log is
one register and one finish job, so the rate is half the jobs completed per second. `naive` is the same client with batching off (one request per
method call). Prints one JSON object; target: call_logs_per_s >= 20, naive <= 1,
query_limit_errors == 0.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from thoth_pbx.clients.bitrix.telephony import INCOMING, FinishCall, RegisterCall  # noqa: E402
from thoth_pbx.core.secrets import SecretBox  # noqa: E402
from thoth_pbx.core.settings import load_settings  # noqa: E402
from thoth_pbx.features.calls.jobs import KIND_FINISH, KIND_REGISTER, CallJobs, register_call_jobs  # noqa: E402
from thoth_pbx.features.directory.models import AppInstance  # noqa: E402
from thoth_pbx.features.portal.service import BitrixService  # noqa: E402
from thoth_pbx.outbox.models import OutboxJob  # noqa: E402
from thoth_pbx.outbox.queue import Outbox  # noqa: E402
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Portal, SimUser  # noqa: E402
from thoth_pbx.store import db  # noqa: E402
from thoth_pbx.store.types import install_secret_box  # noqa: E402

RATE, BURST = 2.0, 50
SETTLE_S = 3.0


async def seed(sessions: Any, sim: BitrixSimulator, portal: Portal) -> int:
    portal.installed = True
    tokens = sim.issue_tokens(portal)
    async with sessions() as session, session.begin():
        row = AppInstance(
            member_id=portal.member_id,
            domain="127.0.0.1",
            client_endpoint=portal.client_endpoint,
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            application_token="bench",
            rate_per_s=RATE,
            rate_burst=BURST,
            settings={},
        )
        session.add(row)
        await session.flush()
        return row.id


async def enqueue(jobs: CallJobs, sessions: Any, instance_id: int, start: int, count: int) -> None:
    async with sessions() as session, session.begin():
        for i in range(start, start + count):
            request = RegisterCall(
                f"+1415{i:07d}", INCOMING, f"bench-{instance_id}-{i}", user_id=1, line_number="14155550123"
            )
            await jobs.register(session, instance_id, request)
            await jobs.finish(
                session, instance_id, request.external_call_id, FinishCall(user_id=1, duration=30, status_code="200")
            )


async def measure(
    settings: Any, sessions: Any, sim: BitrixSimulator, *, batched: bool, window: float, backlog: int
) -> dict[str, Any]:
    """One mode on its own portal, outbox and client; stopped and cleaned up afterwards."""
    portal = sim.add_portal(users=[SimUser(1, "Bench", "Agent", "101")], rate=RATE, burst=BURST)
    instance_id = await seed(sessions, sim, portal)
    outbox = Outbox(sessions, stop_grace=0.5)
    bitrix = BitrixService(sessions, outbox, settings, client_options={"max_batch": 50 if batched else 1})
    jobs = CallJobs(outbox)
    register_call_jobs(outbox, bitrix.portals)
    started = time.monotonic()
    await enqueue(jobs, sessions, instance_id, 0, backlog)
    outbox.start()
    try:
        client = await bitrix.portals.client(instance_id)
        while client.bucket.level < client.bucket.capacity - 1:  # the burst is spent: steady state from here
            await asyncio.sleep(0.05)
        burst_phase = time.monotonic() - started
        await asyncio.sleep(SETTLE_S)  # replies to the burst's requests land before the window opens
        t0 = dt.datetime.now(dt.UTC)
        requests_before = client.stats.requests
        await asyncio.sleep(window)
        t1 = dt.datetime.now(dt.UTC)
        requests = client.stats.requests - requests_before
    finally:
        await outbox.stop()
        await bitrix.stop()
    async with sessions() as session, session.begin():
        done = dict(
            (
                await session.execute(
                    select(OutboxJob.kind, func.count())
                    .where(
                        OutboxJob.app_instance_id == instance_id,
                        OutboxJob.status == "done",
                        OutboxJob.done_at >= t0,
                        OutboxJob.done_at < t1,
                    )
                    .group_by(OutboxJob.kind)
                )
            ).all()
        )
        left = await session.scalar(
            select(func.count())
            .select_from(OutboxJob)
            .where(OutboxJob.app_instance_id == instance_id, OutboxJob.status != "done")
        )
        await session.execute(OutboxJob.__table__.delete().where(OutboxJob.app_instance_id == instance_id))
    if not left:
        raise SystemExit("the backlog ran out inside the window; it must outlast the measurement")
    registers, finishes = done.get(KIND_REGISTER, 0), done.get(KIND_FINISH, 0)
    return {
        # a call log is exactly one register and one finish job: half the jobs per second
        "call_logs_per_s": round((registers + finishes) / 2 / window, 2),
        "register_jobs_in_window": registers,
        "finish_jobs_in_window": finishes,
        "requests_in_window": requests,
        "requests_per_s": round(requests / window, 2),
        "burst_phase_s": round(burst_phase, 2),
        "backlog_call_logs": backlog,
    }


async def run(window: float, database_url: str | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="thoth-bench-"))
    install_secret_box(SecretBox(Fernet.generate_key()))
    url = database_url or f"sqlite+thoth:///{tmp / 'bench.sqlite3'}"
    sim = BitrixSimulator()
    await sim.start()
    settings = load_settings(
        None,
        environ={
            "THOTH_DATABASE_URL": url,
            "THOTH_SECRET_KEY_FILE": str(tmp / "key"),
            "THOTH_ADMIN_PASSWORD": "bench-password",
            "THOTH_BITRIX_CLIENT_ID": sim.client_id,
            "THOTH_BITRIX_CLIENT_SECRET": sim.client_secret,
            "THOTH_BITRIX_OAUTH_URL": sim.oauth_url,
        },
    )
    engine = db.create_engine(settings.database_url)
    await db.upgrade(engine)
    sessions = db.session_factory(engine)
    try:
        # backlogs outlast the burst (45 requests), the settling and the window at 2 requests/s
        batched = await measure(settings, sessions, sim, batched=True, window=window, backlog=int(1500 + 80 * window))
        naive = await measure(settings, sessions, sim, batched=False, window=window, backlog=int(60 + 4 * window))
    finally:
        await engine.dispose()
        await sim.stop()
    return {
        "call_logs_per_s": batched["call_logs_per_s"],
        "naive_call_logs_per_s": naive["call_logs_per_s"],
        "query_limit_errors": sim.recorder.errors("QUERY_LIMIT_EXCEEDED"),
        "portal_limit": {"rate_per_s": RATE, "burst": BURST},
        "window_s": window,
        "batched": batched,
        "naive": naive,
        "database": url.split(":", 1)[0],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured after the burst (default 10)")
    parser.add_argument("--database-url", help="default: a temporary SQLite file")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.window, args.database_url))))


if __name__ == "__main__":
    main()
