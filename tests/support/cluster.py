"""Several `thoth-pbx serve` processes on one PostgreSQL between the Meta and Bitrix24
simulators: the first is the bridge of bridge_process.py (it installs the portal and links the
number), the others start on the same settings with a port and an instance name of their own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.support.bitrix import free_port, wait_until
from tests.support.bridge_process import BridgeProcess
from tests.support.messaging import SEED
from thoth_pbx.sandbox import meta as meta_sim


@dataclass
class Member:
    """One more `serve` process of the cluster."""

    name: str
    environ: dict[str, str]
    log: Path
    proc: asyncio.subprocess.Process | None = None
    http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        out = self.log.open("ab")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("THOTH_")}, **self.environ}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "thoth_pbx.cli", "serve", env=env, stdout=out, stderr=out, cwd=str(self.log.parent)
        )
        if self.http is None:
            self.http = aiohttp.ClientSession(base_url="http://" + self.environ["THOTH_LISTEN"])

        async def up() -> bool:
            assert self.http is not None
            try:
                async with self.http.get("/healthz") as resp:
                    return resp.status < 500
            except aiohttp.ClientError:
                return False

        await wait_until(up, timeout=30, what=f"instance {self.name}")

    async def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.http is not None:
            await self.http.close()


@dataclass
class Cluster:
    """`size` instances; `members[0]` is the bridge's own process (named "i0")."""

    tmp_path: Path
    database_url: str
    size: int = 3
    settings: dict[str, str] = field(default_factory=dict)  # THOTH_* for every instance
    bridge: BridgeProcess = field(init=False)
    members: list[Member] = field(default_factory=list)

    async def open(self, *, rate: int = 2, burst: int = 50) -> None:
        self.bridge = BridgeProcess(self.tmp_path, self.database_url, rate=rate, burst=burst)
        await self.bridge.open()  # installs the portal and links the number
        await self.bridge.portal_limit(rate, burst)  # ours and the simulated portal's
        first = Member("i0", {}, self.tmp_path / "service.log")
        await self.bridge.stop()  # restarted as a member, with the cluster's settings
        self.bridge.proc = None
        base = dict(self.bridge.environ)
        for n in range(self.size):
            environ = {**base, **self.settings, "THOTH_INSTANCE_NAME": f"i{n}"}
            if n:
                environ["THOTH_LISTEN"] = f"127.0.0.1:{free_port()}"
            member = first if n == 0 else Member(f"i{n}", {}, self.tmp_path / f"service-i{n}.log")
            member.environ = environ
            self.members.append(member)
        await asyncio.gather(*(member.start() for member in self.members))

    async def close(self) -> None:
        for member in self.members:
            await member.close()
        runner = self.bridge.sim._runner
        if runner is not None:
            # requests held by `sim.latency` whose sender is gone: aiohttp would wait 60 s for them
            runner._shutdown_timeout = 1.0
        await self.bridge.close()

    async def post(self, member: Member, messages: list[tuple[str, str, str]]) -> None:
        """One webhook delivery of (customer, text, wamid) messages, to one instance."""
        changes = [
            meta_sim.message_change(SEED.phone_number_id, SEED.display_phone_number, customer, text, wamid=wamid)
            for customer, text, wamid in messages
        ]
        doc = meta_sim.delivery(SEED.waba_id, changes)
        self.bridge.meta.announce(doc)
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": meta_sim.sign(body, SEED.app_secret)}
        assert member.http is not None
        async with member.http.post(self.bridge.webhook, data=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()

    def in_bitrix(self) -> list[tuple[str, str]]:
        """(chat, text) of every message the portal accepted, in the order it executed them."""
        return [(m["chat"]["id"], m["message"]["text"]) for m in self.bridge.in_bitrix()]
