"""Several real `thoth-pbx serve` processes on one PostgreSQL and one call lab's Asterisk, for the
Stasis ownership tests and bench/takeover.py (docs/scaling.md "Stasis ownership")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.calls.conftest import (
    start_own_lab,
)
from tests.calls.lab import CallLab
from tests.calls.service import ServeProcess, new_simulator, seed, thoth_environ
from tests.support.bitrix import free_port, wait_until
from thoth_pbx.app import close_services, open_services
from thoth_pbx.core.settings import load_settings
from thoth_pbx.features.calls.models import Call
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.sandbox.bitrix import BitrixSimulator
from thoth_pbx.store import db

REGISTER, FINISH = "telephony.externalcall.register", "telephony.externalcall.finish"
JOB_REGISTER, JOB_FINISH = "bitrix.call.register", "bitrix.call.finish"


def start_call_lab(name: str) -> CallLab:
    """A call lab of its own (a unique name: other tests' labs run at the same time), our trunk applied."""
    return start_own_lab(name)


@dataclass
class Cluster:
    sim: BitrixSimulator
    servers: list[ServeProcess]
    engine: AsyncEngine

    @classmethod
    async def start(
        cls,
        workdir: Path,
        lab: CallLab,
        database_url: str,
        *,
        instances: int = 2,
        reach: dict[int, str] | None = None,
        first_owns: bool = False,
    ) -> Cluster:
        """Migrate and seed `database_url` once, then start `instances` serve processes on it.
        `reach`: instance number -> the URL it uses for that database (through a relay, say);
        `first_owns`: the others start once the first owns the Stasis app."""
        sim, portal = await new_simulator()
        environ = {**thoth_environ(workdir, lab, sim), "THOTH_DATABASE_URL": database_url}
        settings = load_settings(None, environ=environ)
        services = await open_services(settings)
        await seed(services, sim, portal, record=False)
        await close_services(services)
        servers = [
            ServeProcess(
                {
                    **environ,
                    "THOTH_LISTEN": f"127.0.0.1:{free_port()}",
                    "THOTH_DATABASE_URL": (reach or {}).get(n, database_url),
                },
                workdir / f"serve-{n}.log",
            )
            for n in range(instances)
        ]
        cluster = cls(sim, servers, db.create_engine(settings.database_url))
        servers[0].start()
        if first_owns:
            await cluster.settled_owner()
        for server in servers[1:]:
            server.start()
        return cluster

    @property
    def alive(self) -> list[ServeProcess]:
        return [s for s in self.servers if s.proc is not None and s.proc.poll() is None]

    async def roles(self) -> dict[int, dict[str, Any]]:
        """Port -> the `stasis` and `ari` parts of each living instance's /healthz."""
        out = {}
        for server in self.alive:
            health = await server.health()
            out[server.port] = {"stasis": health.get("stasis", {}), "ari": health.get("ari", {})}
        return out

    async def settled_owner(self, timeout: float = 30.0) -> ServeProcess:
        """Wait until exactly one living instance owns the Stasis app with ARI connected and every
        other one reports standby; return the owner."""

        async def settled() -> ServeProcess | None:
            roles = await self.roles()
            owners = [p for p, r in roles.items() if r["stasis"].get("role") == "owner"]
            standby = [p for p, r in roles.items() if r["stasis"].get("role") == "standby"]
            if len(owners) != 1 or len(owners) + len(standby) != len(roles):
                return None
            if roles[owners[0]]["ari"].get("state") != "connected":
                return None
            return next(s for s in self.alive if s.port == owners[0])

        owner: ServeProcess = await wait_until(settled, timeout=timeout, what="one Stasis owner, the others standby")
        return owner

    @staticmethod
    def logged_at(server: ServeProcess, message: str) -> str | None:
        """The `ts` of the last log line of `server` with this message (ISO UTC, sorts as text)."""
        found = None
        for line in server.log.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("msg") == message:
                    found = entry.get("ts")
        return found

    async def row(self, caller: str, state: str | None = None) -> Call | None:
        async with db.session_factory(self.engine)() as session:
            call = (await session.scalars(select(Call).where(Call.caller == caller).order_by(Call.id.desc()))).first()
            return call if call is not None and (state is None or call.state == state) else None

    async def calls_of(self, caller: str) -> list[Call]:
        async with db.session_factory(self.engine)() as session:
            return list((await session.scalars(select(Call).where(Call.caller == caller))).all())

    async def jobs_of(self, linkedid: str) -> list[tuple[str, dict[str, Any]]]:
        """(kind, payload) of the Bitrix24 jobs the call flow stored for one call, in order."""
        async with db.session_factory(self.engine)() as session:
            rows = await session.execute(
                select(OutboxJob.kind, OutboxJob.payload)
                .where(OutboxJob.chain.like(f"bitrix-call:%:{linkedid}"))
                .order_by(OutboxJob.id)
            )
            return [(str(kind), dict(payload or {})) for kind, payload in rows.all()]

    def bitrix(self, linkedid: str) -> list[tuple[str, dict[str, Any]]]:
        """(method, params) Bitrix24 received for one call (its register and what used its CALL_ID)."""
        ids = self.call_ids(linkedid)
        return [
            (e.method, e.params)
            for e in self.sim.recorder.entries
            if e.ok and (e.params.get("EXTERNAL_CALL_ID") == linkedid or str(e.params.get("CALL_ID")) in ids)
        ]

    def call_ids(self, linkedid: str) -> set[str]:
        """The CALL_IDs Bitrix24 answered the call's registers with: one call log is one CALL_ID
        (a register re-sent after an instance died gets the same one, features/calls/jobs.py)."""
        return {
            str(e.result.get("CALL_ID"))
            for e in self.sim.recorder.calls(REGISTER, ok=True)
            if e.params.get("EXTERNAL_CALL_ID") == linkedid
        }

    def finishes(self, linkedid: str) -> int:
        """How many times Bitrix24 was told the call finished."""
        return sum(1 for method, _ in self.bitrix(linkedid) if method == FINISH)

    async def stop(self) -> None:
        for server in self.servers:
            server.stop()
        await self.engine.dispose()
        await self.sim.stop()
