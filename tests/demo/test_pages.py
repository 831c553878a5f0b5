"""The simulators' read-only pages (`GET /_sandbox/page`, docs/demo.md): what reached them is
shown, and whatever a customer or operator wrote is escaped, never markup."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from aiohttp import web

from tests.support.bitrix import USERS
from thoth_pbx.sandbox import meta as meta_sim
from thoth_pbx.sandbox.bitrix import BitrixSimulator

HOSTILE = "<script>alert('x')</script> & <b>bold</b>"
ESCAPED = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;"


async def test_portal_page_shows_chats_and_the_call_log_escaped() -> None:
    sim = BitrixSimulator()
    await sim.start()
    try:
        portal = sim.add_portal(users=USERS)
        portal.installed = True
        token = sim.issue_tokens(portal)["access_token"]
        async with httpx.AsyncClient(base_url=portal.client_endpoint) as http:

            async def rest(method: str, **params: Any) -> Any:
                resp = await http.post(method, json={**params, "auth": token})
                assert resp.status_code == 200, resp.text
                return resp.json()["result"]

            line = int(await rest("imopenlines.config.add", PARAMS={"LINE_NAME": "THOTH_15550100001"}))
            await rest("imconnector.activate", CONNECTOR="thoth_whatsapp", LINE=line, ACTIVE=1)
            sent = await rest(
                "imconnector.send.messages",
                CONNECTOR="thoth_whatsapp",
                LINE=line,
                MESSAGES=[
                    {
                        "user": {"id": "15551234567", "name": "Maria"},
                        "message": {"id": "wamid.1", "text": HOSTILE},
                        "chat": {"id": "15551234567"},
                    }
                ],
            )
            chat_id = sent["DATA"]["RESULT"][0]["session"]["CHAT_ID"]
            await rest("im.message.add", DIALOG_ID=f"chat{chat_id}", MESSAGE="Not sent to WhatsApp: <late>", SYSTEM="Y")
            call = await rest(
                "telephony.externalcall.register",
                USER_ID=2,
                PHONE_NUMBER="+15551234567",
                TYPE=2,
                LINE_NUMBER="15550100001",
                EXTERNAL_CALL_ID="1764843000.12",
            )
            await rest("telephony.externalcall.finish", CALL_ID=call["CALL_ID"], USER_ID=2, DURATION=42)
            wav = base64.b64encode(b"RIFF" + bytes(100)).decode()
            await rest(
                "telephony.externalcall.attachrecord", CALL_ID=call["CALL_ID"], FILENAME="a.wav", FILE_CONTENT=wav
            )
            page = await httpx.AsyncClient().get(f"{sim.base_url}/_sandbox/page")
    finally:
        await sim.stop()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert ESCAPED in html and HOSTILE not in html and "<script" not in html
    assert "Not sent to WhatsApp: &lt;late&gt;" in html and "THOTH_15550100001" in html
    assert "+15551234567" in html and "Boris Agent" in html and "42 s" in html and "a.wav, 104 bytes" in html
    assert "http://" not in html.replace(sim.base_url, "")  # no external assets


async def test_meta_page_shows_what_the_number_sent_escaped() -> None:
    seed = meta_sim.Seed()
    sim = meta_sim.seeded(seed)
    sim.customer_wrote(seed.phone_number_id, "15551234567")  # the window is open
    runner = web.AppRunner(sim.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            resp = await http.post(
                f"/v25.0/{seed.phone_number_id}/messages",
                headers={"Authorization": f"Bearer {seed.token}"},
                json={"messaging_product": "whatsapp", "to": "15551234567", "type": "text", "text": {"body": HOSTILE}},
            )
            assert resp.status_code == 200, resp.text
            page = await http.get("/_sandbox/page")
    finally:
        await runner.cleanup()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert ESCAPED in html and HOSTILE not in html and "<script" not in html
    assert "15551234567" in html and seed.display_phone_number in html and "Calling: DISABLED" in html
