"""Admin API for the trunk, end to end: real app, real storage, real Asterisk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.conftest import make_settings
from tests.harness.asterisk import AsteriskInstance
from tests.integration.conftest import TlsFiles
from tests.integration.test_pbx_apply import cli_fields, free_port
from thoth_pbx.clients.asterisk.ari import basic_auth_header
from thoth_pbx.features.directory.models import Phone
from thoth_pbx.features.trunk.models import PbxRevision
from thoth_pbx.features.trunk.render import PJSIP_FILE

PASSWORD = "Meta-Sip;Secret-42"


@pytest.fixture
async def pbx_api(asterisk_reset: AsteriskInstance, tmp_path: Path, database_url: str, aiohttp_client):  # type: ignore[no-untyped-def]
    from thoth_pbx.app import build_app, open_services

    inst = asterisk_reset
    (tmp_path / "overrides").mkdir()
    settings = make_settings(
        tmp_path,
        database_url,
        THOTH_AMI_URL=f"tcp://{inst.ami_user}:{inst.ami_secret}@{inst.host}:{inst.ami_port}",
        THOTH_ASTERISK_CONFIG_DIR=str(inst.config_dir),
        THOTH_TEMPLATE_OVERRIDE_DIR=str(tmp_path / "overrides"),
        THOTH_ARI_APP="thoth-api-test",
    )
    services = await open_services(settings)
    client = await aiohttp_client(build_app(services))
    client.services = services
    client.headers = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}
    client.overrides = tmp_path / "overrides"
    client.asterisk = inst
    await services.ami.wait_connected(15)
    yield client


async def call(api: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await api.request(method, path, json=body, headers=api.headers)
    return resp.status, await resp.json()


def trunk_body(tls: TlsFiles) -> dict[str, Any]:
    return {
        "bind_address": "127.0.0.1",
        "bind_port": free_port(),
        "transport_name": f"api-{free_port()}",
        "cert_file": tls.cert,
        "priv_key_file": tls.key,
        "ca_list_file": tls.ca,
        "identify_match": ["127.0.0.2"],
        "contact": "sip:127.0.0.2:5061",
        "fallback_dial": "PJSIP/100",
    }


async def add_phone(api: Any) -> int:
    status, waba = await call(api, "POST", "/api/admin/wabas", {"name": "W", "access_token": "EAAG" + "x" * 20})
    assert status == 201, waba
    status, phone = await call(
        api,
        "POST",
        "/api/admin/phones",
        {
            "number": "+15551230000",
            "phone_number_id": "106540352242922",
            "waba_account_id": waba["id"],
            "sip_enabled": True,
            "sip_hostname": "pbx.example.com",
        },
    )
    assert status == 201, phone
    async with api.services.sessions() as session, session.begin():  # what the Meta side stores after enabling SIP
        await session.execute(
            update(Phone).where(Phone.id == phone["id"]).values(sip_user_password=PASSWORD, trunk_needs_apply=True)
        )
    return phone["id"]


async def test_trunk_settings_field_errors_store_nothing(pbx_api: Any) -> None:
    status, view = await call(pbx_api, "GET", "/api/admin/pbx/trunk")
    assert status == 200 and view["settings"]["bind_port"] == 5061 and view["source"]["bind_port"] == "default"
    for body, field in (
        ({"bind_port": 70000}, "bind_port"),
        ({"local_net": ["10.0.0.0/8", "x"]}, "local_net[1]"),
        ({"bindport": 1}, "bindport"),
        ({"context": None}, "context"),
        ({"endpoint_name": "wa]\n[evil"}, "endpoint_name"),
        ([], "body"),
    ):
        status, error = await call(pbx_api, "PUT", "/api/admin/pbx/trunk", body)
        assert status == 400 and error["error"]["field"] == field, (body, error)
    assert (await call(pbx_api, "GET", "/api/admin/pbx/trunk"))[1] == view

    status, view = await call(pbx_api, "PUT", "/api/admin/pbx/trunk", {"bind_port": 5071, "timers": None})
    assert status == 200 and view["settings"]["bind_port"] == 5071 and view["source"]["bind_port"] == "admin"
    assert view["settings"]["timers"] is None and view["defaults"]["timers"] == "no"
    status, preview = await call(pbx_api, "GET", "/api/admin/pbx/render")
    assert status == 200 and "bind=0.0.0.0:5071\n" in preview["files"][PJSIP_FILE]
    assert "timers=" not in preview["files"][PJSIP_FILE]
    assert "Stasis(thoth-api-test,${EXTEN}," in preview["files"]["extensions_thoth.conf"]
    assert any("cert_file" in w for w in preview["warnings"])
    status, error = await call(pbx_api, "POST", "/api/admin/pbx/apply")
    assert status == 400 and error["error"]["field"] == "cert_file"


async def test_apply_records_revision_clears_phone_flag_and_status_sees_drift(
    pbx_api: Any, asterisk_tls: TlsFiles
) -> None:
    phone_id = await add_phone(pbx_api)
    assert (await call(pbx_api, "PUT", "/api/admin/pbx/trunk", trunk_body(asterisk_tls)))[0] == 200
    status, preview = await call(pbx_api, "GET", "/api/admin/pbx/render")
    assert PASSWORD not in str(preview) and "password=***" in preview["files"][PJSIP_FILE]

    status, outcome = await call(pbx_api, "POST", "/api/admin/pbx/apply")
    assert status == 200 and outcome["result"] == "applied", outcome
    assert PASSWORD not in str(outcome) and "+password=***" in outcome["diff"]
    assert (await call(pbx_api, "GET", f"/api/admin/phones/{phone_id}"))[1]["trunk_needs_apply"] is False
    auth = cli_fields(pbx_api.asterisk.cli("pjsip show auth wa-15551230000"))
    assert auth["password"] == PASSWORD  # the real one reached Asterisk
    async with pbx_api.services.sessions() as session:
        revision = await session.scalar(select(PbxRevision).where(PbxRevision.id == outcome["revision"]))
        assert revision is not None and revision.actor == "api:admin" and revision.result == "applied"
        assert PASSWORD not in revision.diff and revision.files[PJSIP_FILE] == outcome["files"][PJSIP_FILE]

    status, report = await call(pbx_api, "GET", "/api/admin/pbx/status")
    assert report["ami"]["state"] == "connected" and report["last_revision"]["id"] == outcome["revision"]
    assert report["drift"] is False and report["apply_needed"] is False and report["live_mismatches"] == []
    assert report["endpoints"]["wa.meta.vc"]["loaded"] is True
    assert report["files"][PJSIP_FILE]["included_from"] == "pjsip.conf"
    assert report["phones_waiting_for_apply"] == []

    path = pbx_api.asterisk.config_dir / PJSIP_FILE
    path.write_text(path.read_text().replace("language=en", "language=xx"))  # an edit by hand
    report = (await call(pbx_api, "GET", "/api/admin/pbx/status"))[1]
    assert report["drift"] is True and report["files"][PJSIP_FILE]["drift"] is True and report["apply_needed"] is True

    status, again = await call(pbx_api, "POST", "/api/admin/pbx/apply")
    assert status == 200 and again["result"] == "applied" and "-language=xx" in again["diff"]
    report = (await call(pbx_api, "GET", "/api/admin/pbx/status"))[1]
    assert report["drift"] is False and report["apply_needed"] is False
    assert [r["result"] for r in (await call(pbx_api, "GET", "/api/admin/pbx/revisions"))[1]["items"]] == [
        "applied",
        "applied",
    ]

    # SIP switched off for the phone: the next apply drops its sections and clears its flag
    assert (await call(pbx_api, "PATCH", f"/api/admin/phones/{phone_id}", {"sip_enabled": False}))[0] == 200
    assert (await call(pbx_api, "GET", f"/api/admin/phones/{phone_id}"))[1]["trunk_needs_apply"] is True
    status, dropped = await call(pbx_api, "POST", "/api/admin/pbx/apply")
    assert status == 200 and dropped["result"] == "applied" and "-[wa-15551230000]" in dropped["diff"]
    assert (await call(pbx_api, "GET", f"/api/admin/phones/{phone_id}"))[1]["trunk_needs_apply"] is False
    assert (await call(pbx_api, "GET", "/api/admin/pbx/status"))[1]["phones_waiting_for_apply"] == []


async def test_broken_override_and_refused_option_via_api(pbx_api: Any, asterisk_tls: TlsFiles) -> None:
    assert (await call(pbx_api, "PUT", "/api/admin/pbx/trunk", trunk_body(asterisk_tls)))[0] == 200
    assert (await call(pbx_api, "POST", "/api/admin/pbx/apply"))[1]["result"] == "applied"
    before = (pbx_api.asterisk.config_dir / PJSIP_FILE).read_bytes()

    (pbx_api.overrides / "aor.conf.j2").write_text("[{{ t.endpoint_name }}]\ntype=aor\n{% if %}\n")
    status, error = await call(pbx_api, "POST", "/api/admin/pbx/apply")
    assert status == 400 and error["error"]["field"] == "template" and "aor.conf.j2 line 3" in error["error"]["message"]
    (pbx_api.overrides / "aor.conf.j2").unlink()

    assert (await call(pbx_api, "PUT", "/api/admin/pbx/trunk", {"codecs": ["opus", "nosuchcodec"]}))[0] == 200
    status, outcome = await call(pbx_api, "POST", "/api/admin/pbx/apply")
    assert status == 409 and outcome["result"] == "rolled_back"
    assert any(m["object"] == "endpoint wa.meta.vc" and m["option"] == "allow" for m in outcome["mismatches"])
    assert (pbx_api.asterisk.config_dir / PJSIP_FILE).read_bytes() == before
    results = [r["result"] for r in (await call(pbx_api, "GET", "/api/admin/pbx/revisions"))[1]["items"]]
    assert results == ["rolled_back", "failed", "applied"]
