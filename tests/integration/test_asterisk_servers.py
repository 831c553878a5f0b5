"""Several Asterisk servers through the admin API (issue 16): each phone names its server, each
server's trunk renders only its phones, and /healthz and /metrics speak of every server. Both
servers are unreachable here (closed ports): what is shown is the routing by server, which needs
no Asterisk; tests/calls/test_calls_two_asterisks.py applies and calls on two real ones."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from tests.conftest import make_settings
from thoth_pbx.clients.asterisk.ari import basic_auth_header
from thoth_pbx.features.directory.models import Phone


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def api(tmp_path: Path, database_url: str, aiohttp_client):  # type: ignore[no-untyped-def]
    from thoth_pbx.app import build_app, open_services

    (tmp_path / "pbx-b").mkdir()
    config = tmp_path / "thoth.toml"
    config.write_text(
        f"""
[[asterisk]]
name = "pbx-b"
ami_url = "tcp://thoth:b-secret@127.0.0.1:{closed_port()}"
ari_url = "http://thoth:b-secret@127.0.0.1:{closed_port()}"
config_dir = "{tmp_path / "pbx-b"}"
trunk = {{ bind_address = "10.0.0.12" }}
"""
    )
    settings = make_settings(
        tmp_path,
        database_url,
        THOTH_CONFIG=str(config),
        THOTH_AMI_URL=f"tcp://thoth:a-secret@127.0.0.1:{closed_port()}",
        THOTH_ARI_URL=f"http://thoth:a-secret@127.0.0.1:{closed_port()}",
        THOTH_ASTERISK_NAME="pbx-a",
    )
    services = await open_services(settings)
    client = await aiohttp_client(build_app(services))
    client.services = services
    client.headers = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}
    yield client


async def call(api: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await api.request(method, path, json=body, headers=api.headers)
    return resp.status, await resp.json()


async def phones(api: Any) -> tuple[int, int]:
    status, waba = await call(api, "POST", "/api/admin/wabas", {"name": "W", "access_token": "EAAG" + "x" * 20})
    assert status == 201, waba
    ids = []
    for n, server in ((1, None), (2, "pbx-b")):
        body = {
            "number": f"+1555123000{n}",
            "phone_number_id": f"10654035224292{n}",
            "waba_account_id": waba["id"],
            "sip_enabled": True,
            "sip_hostname": "pbx.example.com",
        }
        if server:
            body["asterisk"] = server
        status, phone = await call(api, "POST", "/api/admin/phones", body)
        assert status == 201, phone
        ids.append(phone["id"])
        async with api.services.sessions() as session, session.begin():  # what enabling SIP on Meta stores
            await session.execute(
                update(Phone).where(Phone.id == phone["id"]).values(sip_user_password=f"Sip-Secret-{n}-0123456789")
            )
    return ids[0], ids[1]


TRUNK = {
    "bind_address": "127.0.0.1",
    "cert_file": "/etc/asterisk/keys/pbx.crt",
    "priv_key_file": "/etc/asterisk/keys/pbx.key",
    "identify_match": ["127.0.0.2"],
}


async def test_each_phone_names_its_server_and_a_wrong_name_is_refused(api: Any) -> None:
    first, second = await phones(api)
    assert (await call(api, "GET", f"/api/admin/phones/{first}"))[1]["asterisk"] == "pbx-a"
    assert (await call(api, "GET", f"/api/admin/phones/{second}"))[1]["asterisk"] == "pbx-b"
    status, body = await call(api, "PATCH", f"/api/admin/phones/{second}", {"asterisk": "pbx-z"})
    assert status == 400 and body["error"]["field"] == "asterisk"
    assert "pbx-z" in body["error"]["message"] and "pbx-a, pbx-b" in body["error"]["message"]
    assert (await call(api, "GET", f"/api/admin/phones/{second}"))[1]["asterisk"] == "pbx-b"  # unchanged
    # moving it to the first server: stored as "the first" (renaming asterisk_name keeps it)
    status, body = await call(api, "PATCH", f"/api/admin/phones/{second}", {"asterisk": "pbx-a"})
    assert status == 200 and body["asterisk"] == "pbx-a" and body["trunk_needs_apply"] is True
    async with api.services.sessions() as session:
        assert (await session.get(Phone, second)).asterisk is None


async def test_each_servers_trunk_renders_only_its_phones(api: Any) -> None:
    first, second = await phones(api)
    status, body = await call(api, "PUT", "/api/admin/pbx/trunk", TRUNK)
    assert status == 200, body
    status, on_a = await call(api, "GET", "/api/admin/pbx/render")
    assert status == 200 and on_a["phones"] == [first]
    status, on_b = await call(api, "GET", "/api/admin/pbx/render?asterisk=pbx-b")
    assert status == 200 and on_b["phones"] == [second]
    a_conf, b_conf = on_a["files"]["pjsip_thoth.conf"], on_b["files"]["pjsip_thoth.conf"]
    assert "15551230001" in a_conf and "15551230002" not in a_conf
    assert "15551230002" in b_conf and "15551230001" not in b_conf
    # pbx-b's own trunk table wins over the shared settings
    assert "bind=10.0.0.12:" in b_conf and "bind=127.0.0.1:" in a_conf
    status, trunk_b = await call(api, "GET", "/api/admin/pbx/trunk?asterisk=pbx-b")
    assert trunk_b["settings"]["bind_address"] == "10.0.0.12"
    status, body = await call(api, "GET", "/api/admin/pbx/render?asterisk=pbx-z")
    assert status == 404 and body["error"]["field"] == "asterisk" and "pbx-a, pbx-b" in body["error"]["message"]
    status, listed = await call(api, "GET", "/api/admin/pbx/servers")
    assert [(s["name"], s["phones"]) for s in listed["items"]] == [
        ("pbx-a", ["+15551230001"]),
        ("pbx-b", ["+15551230002"]),
    ]
    assert "b-secret" not in str(listed) and "a-secret" not in str(listed)


async def test_health_and_metrics_speak_of_every_server(api: Any) -> None:
    resp = await api.get("/healthz")
    body = await resp.json()
    assert [server["name"] for server in body["asterisks"]] == ["pbx-a", "pbx-b"]
    assert body["status"] == "degraded"  # neither Asterisk answers
    resp = await api.get("/metrics", headers=api.headers)
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    connected = {
        (s.labels["interface"], s.labels["server"]): s.value for s in families["thoth_asterisk_connected"].samples
    }
    assert connected == {("ami", "pbx-a"): 0, ("ari", "pbx-a"): 0, ("ami", "pbx-b"): 0, ("ari", "pbx-b"): 0}


async def test_the_panels_phone_form_picks_the_server(api: Any) -> None:
    import re

    from tests.browser.test_panel_http import sign_in

    first, second = await phones(api)
    session = {"Cookie": (await sign_in(api)).split(";")[0]}
    page = await (await api.get(f"/panel/phones/{second}", headers=session)).text()
    select = re.search(r'<select id="f-asterisk" name="asterisk">(.*?)</select>', page, re.S)
    assert select is not None and re.search(r'<option value="pbx-b" selected>', select.group(1)), page
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token is not None
    shown = (await call(api, "GET", f"/api/admin/phones/{second}"))[1]
    form = {"_csrf": token.group(1), **{k: str(shown[k]) for k in ("number", "phone_number_id", "waba_account_id")}}
    resp = await api.post(f"/panel/phones/{second}", data={**form, "asterisk": "pbx-q"}, headers=session)
    beside = re.search(r'id="field-asterisk">(.*?)</div>', await resp.text(), re.S)
    assert resp.status == 400 and beside is not None and "pbx-q" in beside.group(1)
    resp = await api.post(f"/panel/phones/{second}", data={**form, "asterisk": "pbx-a"}, headers=session)
    assert resp.status == 200  # followed the redirect to the phone page
    assert (await call(api, "GET", f"/api/admin/phones/{second}"))[1]["asterisk"] == "pbx-a"


async def test_the_doctor_checks_every_server(api: Any) -> None:
    status, report = await call(api, "GET", "/api/admin/doctor")
    assert status == 200, report
    ami = [(v["subject"], v["status"]) for v in report["checks"] if v["check"] == "ami.connection"]
    assert ami == [(None, "fail"), ("asterisk pbx-b", "fail")]
    failing_b = [
        v["message"] for v in report["checks"] if v["subject"] == "asterisk pbx-b" and v["check"] == "ami.connection"
    ]
    assert "is not connected" in failing_b[0] and "b-secret" not in str(report)


async def test_the_panels_trunk_page_is_per_server(api: Any) -> None:
    import re

    from tests.browser.test_panel_http import sign_in

    await phones(api)
    assert (await call(api, "PUT", "/api/admin/pbx/trunk", TRUNK))[0] == 200
    session = {"Cookie": (await sign_in(api)).split(";")[0]}
    page = await (await api.get("/panel/trunk?asterisk=pbx-b", headers=session)).text()
    assert "<code>pbx-b</code>" in page and str(api.services.settings.asterisk("pbx-b").config_dir) in page
    assert 'action="/panel/trunk?asterisk=pbx-b"' in page and 'href="/panel/trunk/preview?asterisk=pbx-b"' in page
    bind = re.search(r'id="field-bind_address">(.*?)</tr>', page, re.S)
    assert bind is not None and "10.0.0.12" in bind.group(1) and "[[asterisk]]" in bind.group(1)
    preview = await (await api.get("/panel/trunk/preview?asterisk=pbx-b", headers=session)).text()
    assert "15551230002" in preview and "15551230001" not in preview
    first = await (await api.get("/panel/trunk", headers=session)).text()
    assert 'action="/panel/trunk"' in first and "<code>pbx-a</code>" in first
    missing = await api.get("/panel/trunk?asterisk=pbx-z", headers=session)
    assert missing.status == 404 and "pbx-a, pbx-b" in await missing.text()


async def test_the_dashboard_lists_every_server(api: Any) -> None:
    import re

    from tests.browser.test_panel_http import sign_in

    session = {"Cookie": (await sign_in(api)).split(";")[0]}
    page = await (await api.get("/panel/", headers=session)).text()
    rows = re.findall(r'<tr class="server" id="server-([a-z0-9_-]+)">(.*?)</tr>', page, re.S)
    assert [name for name, _row in rows] == ["pbx-a", "pbx-b"]
    assert all("AMI" in row and "ARI" in row for _name, row in rows)
