"""Values that come from Bitrix24 pass the same checks as an admin's before they are stored or dialled."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from tests.support.bitrix import ServiceEnv, service_env
from thoth_pbx.bitrix.users import extension_for_user, user_for_extension
from thoth_pbx.sandbox.bitrix import SimUser

HOSTILE = "100/sip:+19005550100@attacker.example"


@pytest.fixture
async def env(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[ServiceEnv]:  # type: ignore[no-untyped-def]
    async with service_env(tmp_path, database_url, aiohttp_server, aiohttp_client) as environment:
        yield environment


@pytest.mark.parametrize("inner", [HOSTILE, "10\u0661", "\uff11\uff10\uff12", "1 0 1"])
async def test_inner_phone_number_that_is_no_extension_is_not_stored(env: ServiceEnv, json_logs, inner: str) -> None:  # type: ignore[no-untyped-def]
    env.portal.users[9] = SimUser(9, "Mallory", "Outside", inner)
    instance_id = await env.install()

    users = (await (await env.http.get(f"/api/admin/bitrix/instances/{instance_id}/users", headers=env.admin)).json())["items"]
    assert {u["user_id"]: u["extension"] for u in users}[9] is None
    assert {u["user_id"]: u["extension"] for u in users}[2] == "101"  # the others are mapped as before
    async with env.sessions() as session:
        assert await extension_for_user(session, instance_id, 9) is None
        assert await user_for_extension(session, instance_id, inner) is None
    assert "UF_PHONE_INNER" in json_logs.text and '"user_id": 9' in json_logs.text
