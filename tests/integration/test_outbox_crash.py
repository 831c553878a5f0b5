"""kill -9 of the service in the middle of a delivery, twice, then a clean run: nothing lost or doubled.

The worker runs in a real `thoth-pbx serve` process against the simulator running in this
test. The simulator kills that process from inside a batch it is executing: the portal has
done the work, the service never sees the answer and never marks the jobs done -- exactly
the window between the HTTP reply and the commit. The first kill lands among registers,
the second among finishes. The restarted service must resend those jobs and recognise
what Bitrix already did (register: same CALL_ID within 30 minutes; finish: "Call is not found").
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from tests.support.bitrix import (
    USERS,
    all_done,
    enqueue_call_logs,
    free_port,
    jobs,
    seed_instance,
    wait_until,
)
from tests.support.bridge_process import serve_environ
from thoth_pbx.app import close_services, open_services
from thoth_pbx.core.settings import load_settings
from thoth_pbx.features.calls.jobs import KIND_FINISH
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Recorded
from thoth_pbx.store import db

CALLS = 120
REGISTER, FINISH = "telephony.externalcall.register", "telephony.externalcall.finish"


async def start_service(environ: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    out = log.open("ab")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("THOTH_")}, **environ}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "thoth_pbx.cli", "serve", env=env, stdout=out, stderr=out, cwd=str(log.parent)
    )


async def test_sigkill_mid_delivery_loses_nothing_and_duplicates_nothing(tmp_path: Path, database_url: str) -> None:
    sim = BitrixSimulator()
    await sim.start()
    # a small, fast bucket: a restarted service first waits for what the killed one may have used
    portal = sim.add_portal(users=USERS, rate=5.0, burst=20)
    environ = serve_environ(tmp_path, database_url, sim, free_port())
    services = await open_services(load_settings(None, environ=environ))
    try:
        instance_id = await seed_instance(services.sessions, sim, portal)
        await enqueue_call_logs(services.call_jobs, services.sessions, instance_id, CALLS)
    finally:
        await close_services(services)
    engine = db.create_engine(database_url)
    sessions = db.session_factory(engine)
    log = tmp_path / "service.log"
    proc: asyncio.subprocess.Process | None = None
    try:
        for method, after in ((REGISTER, 70), (FINISH, 70)):
            killed = asyncio.Event()
            proc = await start_service(environ, log)

            def kill_inside_the_batch(
                _portal: object,
                entry: Recorded,
                method: str = method,
                after: int = after,
                proc: asyncio.subprocess.Process = proc,
                killed: asyncio.Event = killed,
            ) -> None:
                if not killed.is_set() and entry.method == method and sim.recorder.count(method, ok=True) >= after:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.set()

            sim.on_processed = kill_inside_the_batch
            await wait_until(killed.is_set, timeout=60, what=f"the kill among {method} calls")
            assert await proc.wait() == -signal.SIGKILL
        sim.on_processed = None
        async with sessions() as session:
            unconfirmed = await session.scalar(
                select(func.count()).select_from(OutboxJob).where(OutboxJob.status == "running")
            )
        assert unconfirmed, "the kills should have left jobs running (sent, never confirmed)"

        proc = await start_service(environ, log)
        await wait_until(lambda: all_done(sessions, CALLS * 2), timeout=60, what="every job done after the restarts")
        finish_jobs = await jobs(sessions, kind=KIND_FINISH)
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    finally:
        sim.on_processed = None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.dispose()
        await sim.stop()

    # Nothing lost: every call is in Bitrix's statistics, none left half-registered.
    assert len(portal.statistics) == CALLS and not portal.active_calls
    # Nothing duplicated: one CALL_ID per physical call, however often register was sent ...
    call_ids: dict[str, set[str]] = {}
    for entry in sim.recorder.calls(REGISTER, ok=True):
        call_ids.setdefault(entry.params["EXTERNAL_CALL_ID"], set()).add(entry.result["CALL_ID"])
    assert len(call_ids) == CALLS and all(len(ids) == 1 for ids in call_ids.values())
    assert sim.recorder.count(REGISTER) > CALLS, "the first kill should have forced register resends"
    # ... and one successful finish per call; repeats got Bitrix's "Call is not found" and were recognised.
    finished = Counter(e.params["CALL_ID"] for e in sim.recorder.calls(FINISH, ok=True))
    assert set(finished.values()) == {1} and len(finished) == CALLS
    repeats = sim.recorder.calls(FINISH, ok=False)
    assert repeats and all(e.result.startswith("Call is not found") for e in repeats)
    recognised = [j for j in finish_jobs if (j.result or {}).get("already_finished")]
    assert len(recognised) == len(repeats) and all(j.maybe_delivered for j in recognised)
