"""The service starts without Asterisk, says so in /healthz, and connects when Asterisk appears."""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.conftest import make_settings
from tests.harness import asterisk as harness
from tests.support.bitrix import free_port, wait_until
from thoth_pbx.app import build_app, open_services


async def test_service_waits_for_asterisk_then_connects(tmp_path: Path, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    ami_port, http_port = free_port(), free_port()
    ami_secret, ari_password = secrets.token_hex(8), secrets.token_hex(8)
    settings = make_settings(
        tmp_path,
        THOTH_AMI_URL=f"tcp://thoth:{ami_secret}@127.0.0.1:{ami_port}",
        THOTH_ARI_URL=f"http://thoth:{ari_password}@127.0.0.1:{http_port}",
    )
    services = await open_services(settings)
    client = await aiohttp_client(build_app(services))

    async def health() -> dict:
        return await (await client.get("/healthz")).json()

    await wait_until(
        lambda: services.ami.status.state == "down" and services.ari.status.state == "down",
        what="AMI and ARI reported down",
    )
    body = await health()
    assert body["status"] == "degraded" and body["ami"]["error"]
    instance = harness.start_instance(
        "thoth-late",
        ami_port=ami_port,
        http_port=http_port,
        credentials={"ami_user": "thoth", "ami_secret": ami_secret, "ari_user": "thoth", "ari_password": ari_password},
    )
    try:

        async def ready() -> bool:
            body = await health()
            return body["ami"]["state"] == "connected" and body["ari"]["state"] == "connected"

        await wait_until(ready, timeout=30, what="/healthz shows AMI and ARI connected")
        body = await health()
        assert body["status"] == "ok" and body["ami"]["version"]
    finally:
        harness.release(instance)
