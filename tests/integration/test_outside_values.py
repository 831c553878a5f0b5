"""Values that come from Bitrix24 pass the same checks as an admin's before they are stored or dialled."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.bitrix import ServiceEnv, service_env
from thoth_pbx.features.portal.users import extension_for_user, user_for_extension
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

    users = (await (await env.http.get(f"/api/admin/bitrix/instances/{instance_id}/users", headers=env.admin)).json())[
        "items"
    ]
    assert {u["user_id"]: u["extension"] for u in users}[9] is None
    assert {u["user_id"]: u["extension"] for u in users}[2] == "101"  # the others are mapped as before
    async with env.sessions() as session:
        assert await extension_for_user(session, instance_id, 9) is None
        assert await user_for_extension(session, instance_id, inner) is None
    assert "UF_PHONE_INNER" in json_logs.text and '"user_id": 9' in json_logs.text


async def test_a_crm_owner_whose_inner_number_is_no_extension_is_not_dialled(env: ServiceEnv, json_logs) -> None:  # type: ignore[no-untyped-def]
    """The CRM search answers the owner's USER_PHONE_INNER with the match: that value is checked
    like the synced one before it becomes the operator to ring."""
    import asyncio

    from thoth_pbx.features.calls.callflow import CallSettings, Operator
    from thoth_pbx.features.calls.notifier import CallContext

    env.portal.users[9] = SimUser(9, "Mallory", "Outside", HOSTILE)
    instance_id = await env.install()
    env.portal.crm["79990000042"] = [
        {"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": 1, "NAME": "Client", "ASSIGNED_BY_ID": 9}
    ]
    ctx = CallContext(instance_id, "15550100001", CallSettings.from_json({}), 1, {})
    registered = asyncio.get_running_loop().create_future()
    registered.set_result(None)  # the register answered nothing that changes the matches
    notifier = env.services.calls.notifier
    assert await notifier.responsible(ctx, "+79990000042", "1710000000.1", registered) is None
    assert "USER_PHONE_INNER" in json_logs.text and '"user_id": 9' in json_logs.text

    env.portal.users[9].extension = "109"  # the same owner with a real extension is rung
    assert await notifier.responsible(ctx, "+79990000042", "1710000000.2", registered) == Operator("109", 9)


async def test_the_dial_string_is_checked_again_when_dialling(env: ServiceEnv, json_logs) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from thoth_pbx.features.calls.callflow import CallSettings, CallState, Operator
    from thoth_pbx.features.calls.notifier import CallContext

    state = CallState(1, "chan-1", "1710000000.3", "+79990000042", "+15550100001", dt.datetime.now(dt.UTC))
    ctx = CallContext(None, "15550100001", CallSettings.from_json({}), 1, {})
    assert await env.services.calls._originate_leg(state, ctx, Operator(HOSTILE, 9), 10) is None
    assert "refused to dial a value that is not an extension" in json_logs.text
    assert "attacker.example" in json_logs.text  # the refused value is named (cut to 80 characters)
