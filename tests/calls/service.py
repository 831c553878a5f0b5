"""The real thoth-pbx service wired to the call lab's Asterisk and the Bitrix24 simulator."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from tests.calls.conftest import BUSINESS, BUSINESS_NO_PORTAL
from tests.calls.lab import CallLab
from tests.conftest import make_settings
from tests.support.bitrix import bitrix_env, seed_instance, wait_until
from thoth_pbx.app import Services, build_app, open_services
from thoth_pbx.bitrix.users import fetch_users, store_users
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Portal, SimUser
from thoth_pbx.store.models import AppInstance, Call, Phone, WabaAccount

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


async def start_thoth(tmp_path: Path, lab: CallLab, *, calls: dict[str, Any] | None = None, record: bool = True) -> Thoth:
    sim = BitrixSimulator()
    await sim.start()
    portal = sim.add_portal(users=list(OPERATORS), rate=50, burst=500)
    b = lab.business
    config = tmp_path / "thoth.toml"
    config.write_text("[calls]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in (calls or {"ring_group": ["101"]}).items()) + "\n")
    settings = make_settings(
        tmp_path,
        THOTH_CONFIG=str(config),
        THOTH_AMI_URL=f"tcp://{b.ami_user}:{b.ami_secret}@{b.host}:{b.ami_port}",
        THOTH_ARI_URL=f"http://{b.ari_user}:{b.ari_password}@{b.host}:{b.http_port}",
        THOTH_ASTERISK_CONFIG_DIR=str(b.config_dir),
        THOTH_RECORDINGS_DIR=str(tmp_path / "recordings"),
        **bitrix_env(sim, "https://thoth.example.com"),
    )
    services = await open_services(settings)
    instance_id = await seed_instance(services.sessions, sim, portal)
    assert services.bitrix is not None
    users = await fetch_users(await services.bitrix.portals.client(instance_id))
    async with services.sessions() as session, session.begin():
        await store_users(session, instance_id, users)
        inst = await session.get(AppInstance, instance_id)
        assert inst is not None
        inst.settings = {"calls": {"ring_group": ["101"], "record": record, "responsible_first_seconds": 8,
                                   "group_ring_seconds": 8}}
        waba = WabaAccount(name="Lab", access_token="EAAG" + "x" * 30, verify_token="v" * 20, verify_token_fingerprint="f1",
                           api_key="k" * 20, api_key_fingerprint="f2")
        session.add(waba)
        await session.flush()
        session.add(Phone(number=BUSINESS, phone_number_id="1001", waba_account_id=waba.id, app_instance_id=instance_id))
        session.add(Phone(number=BUSINESS_NO_PORTAL, phone_number_id="1002", waba_account_id=waba.id))
    client = TestClient(TestServer(build_app(services)))
    await client.start_server()
    await services.ari.wait_connected(15)
    return Thoth(services, client, sim, portal, instance_id, lab)


async def stop_thoth(thoth: Thoth) -> None:
    await thoth.client.close()
    await thoth.sim.stop()
