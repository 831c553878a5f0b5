"""Each WhatsApp number linked to a portal gets its Open Line `THOTH_<number>` with our connector
active on it (the simulated Contact Center tile is green), repaired when Bitrix24 deletes it,
deactivated when the number is unlinked (issue 12 item 1).

Bitrix24 pages: apidocs.bitrix24.com/api-reference/imopenlines/imconnector/ (register, activate,
status, connector-data-set; events OnImConnectorLineDelete, OnImConnectorStatusDelete) and
apidocs.bitrix24.com/api-reference/imopenlines/openlines/ (config-add, config-list-get)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.bitrix import ServiceEnv, all_done, service_env, wait_until
from thoth_pbx.features.messaging.connector import CONNECTOR_ID

NUMBER = "+14155550123"
LINE_NAME = "THOTH_14155550123"


@pytest.fixture
async def env(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[ServiceEnv]:  # type: ignore[no-untyped-def]
    async with service_env(tmp_path, database_url, aiohttp_server, aiohttp_client) as environment:
        yield environment


async def _phone(env: ServiceEnv, instance_id: int | None) -> dict[str, Any]:
    waba = await (
        await env.http.post(
            "/api/admin/wabas", json={"name": "Main", "access_token": "EAAG" + "x" * 30}, headers=env.admin
        )
    ).json()
    body = {
        "number": NUMBER,
        "phone_number_id": "106540352242922",
        "waba_account_id": waba["id"],
        "app_instance_id": instance_id,
    }
    resp = await env.http.post("/api/admin/phones", json=body, headers=env.admin)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def _connector(env: ServiceEnv, phone_id: int) -> dict[str, Any]:
    resp = await env.http.get(f"/api/admin/phones/{phone_id}/connector", headers=env.admin)
    assert resp.status == 200
    return dict(await resp.json())


async def _settled(env: ServiceEnv, phone_id: int, state: str) -> dict[str, Any]:
    """The connector reached `state` and no job is left (the set-up is queued by a listener
    after the phone's commit, so "all jobs done" alone could be seen before it exists)."""

    async def reached() -> bool:
        return (await _connector(env, phone_id))["connector"] == state and await all_done(env.sessions)

    await wait_until(reached, what=f"the connector {state}")
    return await _connector(env, phone_id)


def _line_ids(env: ServiceEnv) -> list[int]:
    return [i for i, line in env.portal.open_lines.items() if line["LINE_NAME"] == LINE_NAME]


async def test_linking_a_number_turns_the_tile_green_with_its_line(env: ServiceEnv) -> None:
    instance_id = await env.install()
    phone = await _phone(env, instance_id)
    view = await _settled(env, phone["id"], "green")
    assert view["connector"] == "green" and view["reason"] is None and view["line_name"] == LINE_NAME, view
    (line_id,) = _line_ids(env)
    assert view["line_id"] == line_id
    assert CONNECTOR_ID in env.portal.connectors
    assert env.portal.connector_lines[(CONNECTOR_ID, line_id)]["active"] is True
    assert env.portal.connector_lines[(CONNECTOR_ID, line_id)]["data"]["NAME"] == f"WhatsApp {NUMBER}"
    bound = {b["event"] for b in env.portal.bindings}
    assert {"ONIMCONNECTORLINEDELETE", "ONIMCONNECTORSTATUSDELETE"} <= bound

    # the admin's sync sets it up again without a second line
    assert (await env.http.post(f"/api/admin/bitrix/instances/{instance_id}/sync", headers=env.admin)).status == 202
    await wait_until(lambda: all_done(env.sessions), what="the admin sync")
    assert _line_ids(env) == [line_id]


async def test_an_existing_line_of_that_name_is_reused(env: ServiceEnv) -> None:
    instance_id = await env.install()
    env.portal.open_lines[77] = {"LINE_NAME": LINE_NAME, "ACTIVE": "Y"}  # made by the admin in Bitrix24
    phone = await _phone(env, instance_id)
    await _settled(env, phone["id"], "green")
    assert _line_ids(env) == [77] and (await _connector(env, phone["id"]))["line_id"] == 77


async def test_a_line_deleted_in_bitrix_is_set_up_again(env: ServiceEnv) -> None:
    instance_id = await env.install()
    phone = await _phone(env, instance_id)
    await _settled(env, phone["id"], "green")
    (old,) = _line_ids(env)
    del env.portal.open_lines[old]  # the admin deletes the line in the Contact Center ...
    env.portal.connector_lines.pop((CONNECTOR_ID, old))
    sent = await env.sim.send_event(env.portal, "ONIMCONNECTORLINEDELETE", old)  # data is the line ID
    assert [status for _, status in sent] == [200]  # ... and Bitrix24 tells us
    await wait_until(lambda: len(_line_ids(env)) == 1 and _line_ids(env)[0] != old, what="a new line")
    view = await _settled(env, phone["id"], "green")
    assert view["connector"] == "green" and view["line_id"] == _line_ids(env)[0]

    # the connector switched off on the line (data[connector], data[line], lower case): back on
    line = view["line_id"]
    env.portal.connector_lines.pop((CONNECTOR_ID, line))
    sent = await env.sim.send_event(env.portal, "ONIMCONNECTORSTATUSDELETE", {"connector": CONNECTOR_ID, "line": line})
    assert [status for _, status in sent] == [200]
    await wait_until(lambda: (CONNECTOR_ID, line) in env.portal.connector_lines, what="the connector back on")
    assert (await _settled(env, phone["id"], "green"))["line_id"] == line


async def test_unlinking_deactivates_the_line_and_nothing_else(env: ServiceEnv) -> None:
    instance_id = await env.install()
    phone = await _phone(env, instance_id)
    await _settled(env, phone["id"], "green")
    (line_id,) = _line_ids(env)
    resp = await env.http.patch(f"/api/admin/phones/{phone['id']}", json={"app_instance_id": None}, headers=env.admin)
    assert resp.status == 200, await resp.text()
    await wait_until(lambda: (CONNECTOR_ID, line_id) not in env.portal.connector_lines, what="the deactivation")
    view = await _settled(env, phone["id"], "unlinked")
    assert view["connector"] == "unlinked" and view["app_instance_id"] is None
    assert _line_ids(env) == [line_id] and CONNECTOR_ID in env.portal.connectors  # the line and connector stay


async def test_connector_api_errors_name_the_field(env: ServiceEnv) -> None:
    assert (await env.http.get("/api/admin/phones/999/connector", headers=env.admin)).status == 404
    phone = await _phone(env, None)
    assert (await _connector(env, phone["id"]))["connector"] == "unlinked"
    resp = await env.http.post(f"/api/admin/phones/{phone['id']}/connector/repair", headers=env.admin)
    assert resp.status == 409 and (await resp.json())["error"]["field"] == "app_instance_id"
    page = await env.http.get("/api/bitrix/connector")  # the placement handler: no Basic auth
    assert page.status == 200 and "THOTH_" in await page.text()
