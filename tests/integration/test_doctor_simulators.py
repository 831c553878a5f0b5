"""What the doctor asks the simulators, served strictly as documented.

- Meta `GET/POST/DELETE /{WABA_ID}/subscribed_apps` (a user or system-user token with
  whatsapp_business_management on the WABA) and `GET /{APP_ID}/subscriptions` (the app access
  token only): developers.facebook.com/documentation/business-messaging/whatsapp/solution-
  providers/manage-webhooks and developers.facebook.com/docs/graph-api/reference/app/subscriptions/.
- Bitrix24 `scope`: the caller's scopes; `full=true` all of them
  (dev.1c-bitrix.ru/rest_help/general/scope.php).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from thoth_pbx.sandbox import meta as meta_sim
from thoth_pbx.sandbox.bitrix import BitrixSimulator
from thoth_pbx.sandbox.meta import apps

SEED = meta_sim.Seed()


@pytest.fixture
async def meta(aiohttp_client: Any) -> Any:
    sim = meta_sim.seeded(SEED)
    client = await aiohttp_client(sim.app())
    client.sim = sim
    return client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_waba_has_no_subscribed_app_until_one_subscribes(meta: Any) -> None:
    path = f"/v25.0/{SEED.waba_id}/subscribed_apps"
    resp = await meta.get(path, headers=bearer(SEED.token))
    assert resp.status == 200 and await resp.json() == {"data": []}
    resp = await meta.post(path, headers=bearer(SEED.token))
    assert resp.status == 200 and await resp.json() == {"success": True}
    resp = await meta.post(path, headers=bearer(SEED.token))  # again: still one entry
    data = (await (await meta.get(path, headers=bearer(SEED.token))).json())["data"]
    assert data == [
        {
            "whatsapp_business_api_data": {
                "id": SEED.app_id,
                "link": f"https://www.facebook.com/games/?app_id={SEED.app_id}",
                "name": "Sandbox app",
            }
        }
    ]
    assert apps.subscribed(meta.sim, SEED.waba_id) == [SEED.app_id]
    resp = await meta.delete(path, headers=bearer(SEED.token))
    assert resp.status == 200 and await resp.json() == {"success": True}
    assert (await (await meta.get(path, headers=bearer(SEED.token))).json())["data"] == []


async def test_subscribed_apps_refusals(meta: Any) -> None:
    path = f"/v25.0/{SEED.waba_id}/subscribed_apps"
    assert (await (await meta.get(path)).json())["error"]["code"] == 104
    resp = await meta.get(path, headers=bearer("nope"))
    assert resp.status == 401 and (await resp.json())["error"]["code"] == 190
    resp = await meta.get("/v25.0/999999/subscribed_apps", headers=bearer(SEED.token))
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["code"] == 100 and error["error_subcode"] == 33
    meta.sim.add_token("messaging-only", SEED.app_id, scopes=["whatsapp_business_messaging"])
    resp = await meta.get(path, headers=bearer("messaging-only"))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == 10
    resp = await meta.get(f"/v99/{SEED.waba_id}/subscribed_apps", headers=bearer(SEED.token))
    assert resp.status == 400 and (await resp.json())["error"]["code"] == 2500


async def test_app_subscriptions_need_the_app_access_token(meta: Any) -> None:
    path = f"/v25.0/{SEED.app_id}/subscriptions"
    resp = await meta.get(path, headers=bearer(f"{SEED.app_id}|{SEED.app_secret}"))
    assert resp.status == 200
    [sub] = (await resp.json())["data"]
    assert sub["object"] == "whatsapp_business_account" and sub["active"] is True
    assert {f["name"] for f in sub["fields"]} >= {"messages", "calls"}
    assert {f["version"] for f in sub["fields"]} == {"v25.0"}
    meta.sim.update_app(SEED.app_id, subscribed_fields={"messages"})
    [sub] = (await (await meta.get(path, headers=bearer(f"{SEED.app_id}|{SEED.app_secret}"))).json())["data"]
    assert [f["name"] for f in sub["fields"]] == ["messages"]
    # a system-user token is not enough, a wrong secret is no token at all
    resp = await meta.get(path, headers=bearer(SEED.token))
    assert resp.status == 400 and (await resp.json())["error"]["code"] == 15
    resp = await meta.get(path, headers=bearer(f"{SEED.app_id}|wrong"))
    assert resp.status == 401 and (await resp.json())["error"]["code"] == 190


async def test_bitrix_scope_answers_the_callers_scopes() -> None:
    sim = BitrixSimulator()
    await sim.start()
    try:
        portal = sim.add_portal()
        tokens = sim.issue_tokens(portal)
        hook = sim.add_webhook(portal, user_id=1, scope="crm,user")
        async with aiohttp.ClientSession() as http:
            base = portal.client_endpoint.rstrip("/")
            async with http.post(f"{base}/scope.json", json={"auth": tokens["access_token"]}) as resp:
                assert resp.status == 200
                assert sorted((await resp.json())["result"]) == sorted(portal.scope.split(","))
            async with http.post(f"{base}/scope.json", json={"auth": tokens["access_token"], "full": True}) as resp:
                full = (await resp.json())["result"]
                assert {"telephony", "imconnector", "crm", "user", "messageservice", "imopenlines"} <= set(full)
            # an incoming webhook holds only the scopes it was created with
            async with http.post(f"{sim.webhook_url(portal, hook).rstrip('/')}/scope.json", json={}) as resp:
                assert resp.status == 200
                assert (await resp.json())["result"] == ["crm", "user"]
    finally:
        await sim.stop()
