"""The newcomer's demo path: `thoth-pbx sandbox meta` and `thoth-pbx sandbox meta-webhook` as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from sqlalchemy import select

from thoth_pbx.clients.asterisk.ari import basic_auth_header
from thoth_pbx.clients.meta.tables import WebhookInbox

CLI = [sys.executable, "-m", "thoth_pbx.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


@asynccontextmanager
async def sandbox_meta(tmp_path: Path) -> AsyncIterator[tuple[int, str]]:
    """`thoth-pbx sandbox meta` as a process: its port and the seeded access token."""
    port = free_port()
    env = {**os.environ, "THOTH_SECRET_KEY_FILE": str(tmp_path / "k"), "THOTH_CONFIG": ""}
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "sandbox",
        "meta",
        "--listen",
        f"127.0.0.1:{port}",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        banner = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert f"127.0.0.1:{port}" in banner
        token = ""
        while not token:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            if "access token" in line:
                token = line.split()[-1]
        yield port, token  # the banner is printed once the socket listens
    finally:
        proc.terminate()
        await proc.wait()


async def _get(port: int, token: str, path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        return r.status, await r.json()


async def test_sandbox_meta_serves_the_seeded_account(tmp_path: Path) -> None:
    async with sandbox_meta(tmp_path) as (port, token):
        status, state = await _get(port, token, "/_sandbox/state")
        assert status == 200 and list(state["phones"]) == ["106540352242922"]
        status, body = await _get(port, token, "/v25.0/106540352242922/settings")
        assert status == 200 and body["calling"]["status"] == "DISABLED"


async def _demo_account(service, tmp_path: Path) -> tuple[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    """A WABA account with the demo app secret: its webhook URL, and the CLI's environment."""
    headers = {"Authorization": basic_auth_header(*service.admin_auth)}
    waba = await (
        await service.post(
            "/api/admin/wabas",
            json={"name": "Demo", "access_token": "EAAG" + "d" * 30, "app_secret": "demo-app-secret-123"},
            headers=headers,
        )
    ).json()
    url = str(service.make_url(f"/api/waba/?api-key={waba['api_key']}"))
    return url, {**os.environ, "THOTH_SECRET_KEY_FILE": str(tmp_path / "k2"), "THOTH_CONFIG": ""}


async def test_meta_webhook_via_the_simulator_opens_the_customers_window(service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`--via`: the simulated Meta posts the message itself, so it knows the customer wrote (its
    24-hour window opens) as the real Meta would; posting directly it does not."""
    url, env = await _demo_account(service, tmp_path)
    async with sandbox_meta(tmp_path) as (port, token):
        hook = ["sandbox", "meta-webhook", "--url", url, "--app-secret", "demo-app-secret-123", "--from", "15557654321"]
        code, out, err = await run(*hook, env=env)
        assert code == 0 and json.loads(out)["statuses"] == [200], err
        _, phone = await _get(port, token, "/_sandbox/phones/106540352242922")
        assert phone["last_inbound"] == {}
        code, out, err = await run(*hook, "--via", f"http://127.0.0.1:{port}", env=env)
        assert code == 0 and json.loads(out)["statuses"] == [200], err
        _, phone = await _get(port, token, "/_sandbox/phones/106540352242922")
        assert list(phone["last_inbound"]) == ["15557654321"]
    async with service.services.sessions() as session:
        assert len((await session.scalars(select(WebhookInbox.dedup_key))).all()) == 2


async def test_meta_webhook_command_delivers_calls_out_of_order(service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, env = await _demo_account(service, tmp_path)
    code, out, err = await run(
        "sandbox",
        "meta-webhook",
        "--url",
        url,
        "--app-secret",
        "demo-app-secret-123",
        "--kind",
        "call",
        "--count",
        "2",
        "--reorder",
        "--duplicate",
        env=env,
    )
    assert code == 0, err
    assert json.loads(out)["statuses"] == [200] * 8
    code, out, _ = await run(
        "sandbox", "meta-webhook", "--url", url, "--app-secret", "wrong-secret-0000", "--kind", "message", env=env
    )
    assert code == 1 and json.loads(out)["statuses"] == [401]
    async with service.services.sessions() as session:
        keys = sorted((await session.scalars(select(WebhookInbox.dedup_key))).all())
    assert keys == [f"c:wacid.sandbox{i}:{e}" for i in range(2) for e in ("connect", "terminate")]
