"""The messaging bridge as users run it: `thoth-pbx serve` as its own process between the
Meta simulator and the Bitrix24 simulator (both in this process, loopback only), a WhatsApp
number linked to the portal with a green line. Used by the crash test and bench/messages.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.bitrix import USERS, bitrix_env, free_port, wait_until
from tests.support.messaging import SEED, link_seed_number
from thoth_pbx.sandbox import meta as meta_sim
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Portal
from thoth_pbx.sandbox.meta import MetaSimulator

ADMIN = {"Authorization": "Basic " + base64.b64encode(b"admin:correct-horse-battery").decode()}


def serve_environ(
    tmp_path: Path, database_url: str, sim: BitrixSimulator, port: int, graph_url: str | None = None
) -> dict[str, str]:
    """THOTH_* settings of a `serve` process on `port`, pointed at the simulators."""
    environ = {
        "THOTH_DATABASE_URL": database_url,
        "THOTH_LISTEN": f"127.0.0.1:{port}",
        "THOTH_SECRET_KEY_FILE": str(tmp_path / "secret.key"),
        "THOTH_ADMIN_PASSWORD": "correct-horse-battery",
        "THOTH_ADMIN_PASSWORD_FILE": str(tmp_path / "admin-password"),
        "THOTH_ASTERISK_CONFIG_DIR": str(tmp_path / "asterisk"),
        "THOTH_MEDIA_DIR": str(tmp_path / "media"),
        "THOTH_LOG_LEVEL": "warning",
        **bitrix_env(sim, f"http://127.0.0.1:{port}"),
    }
    if graph_url:
        environ["THOTH_META_GRAPH_URL"] = graph_url
    return environ


@dataclass
class BridgeProcess:
    tmp_path: Path
    database_url: str
    rate: float = 5.0
    burst: int = 100
    meta: MetaSimulator = field(default_factory=lambda: meta_sim.seeded(SEED))
    sim: BitrixSimulator = field(default_factory=BitrixSimulator)
    portal: Portal | None = None
    proc: asyncio.subprocess.Process | None = None
    webhook: str = ""
    line_id: int = 0
    phone_id: int = 0
    instance_id: int = 0
    _meta_runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None
    environ: dict[str, str] = field(default_factory=dict)
    meta_url: str = ""

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None
        return self._http

    @property
    def sent(self) -> list[dict[str, Any]]:
        """What the number sent through Meta, in order."""
        return list(self.meta.phones[SEED.phone_number_id].sent)

    def in_bitrix(self) -> list[dict[str, Any]]:
        calls = self.sim.recorder.calls("imconnector.send.messages", ok=True)
        return [m for call in calls for m in call.params["MESSAGES"]]

    async def open(self) -> None:
        self._meta_runner = web.AppRunner(self.meta.app(), access_log=None)
        await self._meta_runner.setup()
        meta_port = free_port()
        await web.TCPSite(self._meta_runner, "127.0.0.1", meta_port).start()
        self.meta_url = f"http://127.0.0.1:{meta_port}"
        await self.sim.start()
        self.portal = self.sim.add_portal(users=USERS, rate=self.rate, burst=self.burst)
        port = free_port()
        self.public = f"http://127.0.0.1:{port}"
        self.environ = serve_environ(self.tmp_path, self.database_url, self.sim, port, f"http://127.0.0.1:{meta_port}")
        self._http = aiohttp.ClientSession(base_url=self.public)
        await self.start_service()
        await self._link()

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._http is not None:
            await self._http.close()
        await self.sim.stop()
        if self._meta_runner is not None:
            await self._meta_runner.cleanup()

    async def start_service(self) -> None:
        out = (self.tmp_path / "service.log").open("ab")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("THOTH_")}, **self.environ}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "thoth_pbx.cli", "serve", env=env, stdout=out, stderr=out, cwd=str(self.tmp_path)
        )

        async def up() -> bool:
            try:
                async with self.http.get("/healthz") as resp:
                    return resp.status < 500
            except aiohttp.ClientError:
                return False

        await wait_until(up, timeout=30, what="the service")

    async def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL

    async def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await self.proc.wait()

    async def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.http.request(method, path, json=body, headers=ADMIN) as resp:
            assert resp.status < 300, await resp.text()
            return await resp.json()

    async def _link(self) -> None:
        assert self.portal is not None
        status, body = await self.sim.install(self.portal, self.public + "/api/bitrix/install")
        assert status == 200, body
        self.instance_id = int(body["instance_id"])
        self.webhook, self.phone_id, self.line_id = await link_seed_number(self._admin, self.instance_id, timeout=30)
        self.meta.apps[SEED.app_id].callback_url = self.public + self.webhook

    async def portal_limit(self, rate: int, burst: int) -> None:
        """Tell our service the portal's request limit (an Enterprise plan, say) and give the
        simulated portal the same one."""
        assert self.portal is not None
        await self._admin(
            "PATCH", f"/api/admin/instances/{self.instance_id}", {"rate_per_s": rate, "rate_burst": burst}
        )
        self.portal.rate, self.portal.burst = float(rate), burst

    async def customers_write(self, messages: list[tuple[str, str, str]]) -> None:
        """One webhook delivery (as Meta batches them) of (customer, text, wamid) messages."""
        changes = [
            meta_sim.message_change(SEED.phone_number_id, SEED.display_phone_number, customer, text, wamid=wamid)
            for customer, text, wamid in messages
        ]
        doc = meta_sim.delivery(SEED.waba_id, changes)
        self.meta.announce(doc)
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": meta_sim.sign(body, SEED.app_secret)}
        async with self.http.post(self.webhook, data=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()

    async def operator_writes(self, customer: str, text: str) -> None:
        assert self.portal is not None
        sent = await self.sim.operator_writes(self.portal, self.line_id, customer, text)
        assert sent["status"] == 200, sent
