"""The real thoth-pbx service wired to the call lab's Asterisk and the Bitrix24 simulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.calls.conftest import BUSINESS, BUSINESS_NO_PORTAL
from tests.calls.lab import CallLab
from tests.support.bitrix import bitrix_env, free_port, seed_instance, wait_until
from thoth_pbx.app import Services, build_app, open_services
from thoth_pbx.core.settings import load_settings
from thoth_pbx.features.calls.models import Call
from thoth_pbx.features.directory.models import AppInstance, Phone, WabaAccount
from thoth_pbx.features.portal.install import EVENTS_PATH
from thoth_pbx.features.portal.users import fetch_users, store_users
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Portal, SimUser

OPERATORS = [
    SimUser(1, "Anna", "Admin", "100"),
    SimUser(2, "Boris", "Agent", "101"),
    SimUser(3, "Vera", "Agent", "102"),
    SimUser(4, "Gleb", "Busy", "103"),
    SimUser(5, "Dina", "Ringing", "104"),
    SimUser(6, "Egor", "Owner", "105"),
    SimUser(7, "Fedor", "Ringing", "106"),
    *[SimUser(100 + n, f"Pool{n}", "Agent", str(200 + n)) for n in range(60)],
]


@dataclass
class Thoth:
    services: Services
    client: TestClient
    sim: BitrixSimulator
    portal: Portal
    instance_id: int
    lab: CallLab

    async def set_calls(self, **calls: Any) -> None:
        async with self.services.sessions() as session, session.begin():
            inst = await session.get(AppInstance, self.instance_id)
            assert inst is not None
            inst.settings = {**(inst.settings or {}), "calls": calls}

    async def call_row(self, **where: Any) -> Call | None:
        async with self.services.sessions() as session:
            query = select(Call)
            for key, value in where.items():
                query = query.where(getattr(Call, key) == value)
            return (await session.scalars(query.order_by(Call.id.desc()))).first()

    async def wait_call(self, caller: str, state: str, timeout: float = 20.0) -> Call:
        async def check() -> Call | None:
            row = await self.call_row(caller=caller)
            return row if row is not None and row.state == state else None

        return await wait_until(check, timeout=timeout, what=f"call from {caller} in state {state}")

    def bitrix_calls(self, external_call_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(method, params) of everything Bitrix24 saw for one call, in arrival order."""
        call_ids: set[str] = set()
        out = []
        for entry in self.sim.recorder.entries:
            if not entry.ok:
                continue
            params = entry.params
            if entry.method == "telephony.externalcall.register" and params.get("EXTERNAL_CALL_ID") == external_call_id:
                call_ids.add(str((entry.result or {}).get("CALL_ID")))
                out.append((entry.method, params))
            elif str(params.get("CALL_ID")) in call_ids:
                out.append((entry.method, params))
        return out


def thoth_environ(
    tmp_path: Path, lab: CallLab, sim: BitrixSimulator, *, calls: dict[str, Any] | None = None, port: int | None = None
) -> dict[str, str]:
    """THOTH_* settings for a service talking to the lab's Asterisk and the simulator."""
    b = lab.business
    config = tmp_path / "thoth.toml"
    table = calls or {"ring_group": ["101"]}
    config.write_text("[calls]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + "\n")
    port = port or free_port()
    return {
        "THOTH_CONFIG": str(config),
        "THOTH_LISTEN": f"127.0.0.1:{port}",
        "THOTH_DATABASE_URL": f"sqlite:///{tmp_path / 'thoth.sqlite3'}",
        "THOTH_SECRET_KEY_FILE": str(tmp_path / "secret.key"),
        "THOTH_ADMIN_PASSWORD": "correct-horse-battery",
        "THOTH_ADMIN_PASSWORD_FILE": str(tmp_path / "admin-password"),
        "THOTH_AMI_URL": f"tcp://{b.ami_user}:{b.ami_secret}@{b.host}:{b.ami_port}",
        "THOTH_ARI_URL": f"http://{b.ari_user}:{b.ari_password}@{b.host}:{b.http_port}",
        "THOTH_ASTERISK_CONFIG_DIR": str(b.config_dir),
        "THOTH_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "THOTH_LOG_LEVEL": "info",
        **bitrix_env(sim, f"http://127.0.0.1:{port}"),
    }


async def seed_portal(services: Services, sim: BitrixSimulator, portal: Portal, calls: dict[str, Any]) -> int:
    """One portal installed, its users fetched with user.get and stored, its call settings."""
    instance_id = await seed_instance(services.sessions, sim, portal)
    assert services.bitrix is not None
    users = await fetch_users(await services.bitrix.portals.client(instance_id))
    async with services.sessions() as session, session.begin():
        await store_users(session, instance_id, users)
        inst = await session.get(AppInstance, instance_id)
        assert inst is not None
        inst.settings = {"calls": calls}
    return instance_id


async def add_waba(session: AsyncSession, name: str, token: str = "EAAG" + "x" * 30) -> WabaAccount:
    """A WABA account as the admin API would store it (the secrets' fingerprints are not checked here)."""
    waba = WabaAccount(
        name=name,
        access_token=token,
        verify_token="v" * 20,
        verify_token_fingerprint="f1",
        api_key="k" * 20,
        api_key_fingerprint="f2",
    )
    session.add(waba)
    await session.flush()
    return waba


def bind_event(portal: Portal, event: str, port: int) -> None:
    """The portal posts `event` to our events endpoint (what the install's event.bind leaves)."""
    portal.bindings.append(
        {"id": 1001, "event": event, "handler": f"http://127.0.0.1:{port}{EVENTS_PATH}", "auth_type": "0", "offline": 0}
    )


async def seed(services: Services, sim: BitrixSimulator, portal: Portal, *, record: bool = True) -> int:
    """The lab's numbers, one portal with its users (fetched with user.get) and call settings."""
    calls = {"ring_group": ["101"], "record": record, "responsible_first_seconds": 8, "group_ring_seconds": 8}
    instance_id = await seed_portal(services, sim, portal, calls)
    async with services.sessions() as session, session.begin():
        waba = await add_waba(session, "Lab")
        session.add(
            Phone(number=BUSINESS, phone_number_id="1001", waba_account_id=waba.id, app_instance_id=instance_id)
        )
        session.add(Phone(number=BUSINESS_NO_PORTAL, phone_number_id="1002", waba_account_id=waba.id))
    return instance_id


async def new_simulator() -> tuple[BitrixSimulator, Portal]:
    sim = BitrixSimulator()
    await sim.start()
    return sim, sim.add_portal(users=list(OPERATORS), rate=50, burst=500)


async def start_thoth(
    tmp_path: Path, lab: CallLab, *, calls: dict[str, Any] | None = None, record: bool = True
) -> Thoth:
    sim, portal = await new_simulator()
    services = await open_services(load_settings(None, environ=thoth_environ(tmp_path, lab, sim, calls=calls)))
    instance_id = await seed(services, sim, portal, record=record)
    client = TestClient(TestServer(build_app(services)))
    await client.start_server()
    await services.ari.wait_connected(15)
    return Thoth(services, client, sim, portal, instance_id, lab)


async def stop_thoth(thoth: Thoth) -> None:
    await thoth.client.close()
    await thoth.sim.stop()


class ServeProcess:
    """`thoth-pbx serve` as a real process, so a test can SIGKILL it."""

    def __init__(self, environ: dict[str, str], log: Path) -> None:
        self.environ = environ
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = int(environ["THOTH_LISTEN"].rsplit(":", 1)[1])

    def start(self) -> None:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("THOTH_")}, **self.environ}
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "thoth_pbx.cli", "serve"], env=env, stdout=out, stderr=out, cwd=str(self.log.parent)
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    async def health(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            try:
                async with http.get(
                    f"http://127.0.0.1:{self.port}/healthz", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    return await resp.json()
            except (TimeoutError, aiohttp.ClientError):
                return {}

    async def wait_ari(self) -> None:
        async def connected() -> bool:
            return (await self.health()).get("ari", {}).get("state") == "connected"

        await wait_until(connected, timeout=30, what="thoth-pbx serve connected to ARI")
