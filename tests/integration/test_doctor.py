"""The doctor against a real Asterisk 22 (harness chroot) and both simulators: on the good
set-up every check passes (only Meta's view from the internet stays `cannot_check`), and each
deliberately broken part fails with its fix: wrong certificate host, expired certificate, a
certificate from a CA Meta does not trust, DTLS at Meta, a missing module (res_srtp unloaded),
a Meta range missing from identify, the `calls` webhook field not subscribed, the app not
subscribed to the WABA, a Bitrix scope or external line missing, a read-only ARI user.

Meta facts: the fact sheet §1-2; webhooks: developers.facebook.com/documentation/business-
messaging/whatsapp/solution-providers/manage-webhooks (subscribed_apps) and
developers.facebook.com/docs/graph-api/reference/app/subscriptions/. Bitrix `scope`:
dev.1c-bitrix.ru/rest_help/general/scope.php.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import asterisk as ah
from tests.harness.asterisk import AsteriskInstance
from tests.integration.conftest import in_asterisk
from tests.support.bitrix import ServiceEnv, all_done, bitrix_env, service_env, wait_until
from tests.support.certs import Issued, TestCA
from tests.support.cli import CLI
from thoth_pbx.features.doctor import Doctor, Report
from thoth_pbx.sandbox import meta as meta_sim
from thoth_pbx.sandbox.meta import MetaSimulator

SEED = meta_sim.Seed()
HOST = "pbx.example.test"
APP = "thoth-doctor-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Lab:
    asterisk: AsteriskInstance
    ca: TestCA
    good: Issued
    wrong_host: Issued
    expired: Issued
    port: int

    @property
    def tls_dir(self) -> Path:
        return self.ca.folder

    def serve(self, issued: Issued) -> None:
        """Put `issued` where the transport reads its certificate, and restart Asterisk (transports load at start)."""
        shutil.copyfile(issued.cert, self.tls_dir / "served.crt")
        shutil.copyfile(issued.key, self.tls_dir / "served.key")
        self.asterisk.restart()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    inst = ah.start_instance(f"doctor-{os.getpid()}")
    assert inst.config_dir is not None
    ca = TestCA(inst.config_dir / "doctor-tls")
    lab = Lab(
        inst,
        ca,
        ca.issue("good", [HOST, "127.0.0.1"], days_after=90),
        ca.issue("wrong", ["other.example.test"], days_after=90),
        ca.issue("expired", [HOST], days_before=100, days_after=-2),
        free_port(),
    )
    shutil.copyfile(lab.good.cert, lab.tls_dir / "served.crt")
    shutil.copyfile(lab.good.key, lab.tls_dir / "served.key")
    yield lab
    ah.release(inst)
    ah.sandbox.remove(inst.name)


@dataclass
class DoctorEnv:
    env: ServiceEnv
    meta: MetaSimulator
    lab: Lab
    phone_id: int
    instance_id: int
    bundle: str
    environ: dict[str, str]  # the service's settings, for a `thoth-pbx` subprocess
    meta_url: str

    async def admin(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        resp = await self.env.http.request(method, path, json=body, headers=self.env.admin)
        assert resp.status == status, await resp.text()
        return await resp.json()

    async def run(self, *, bundle: str | None = None) -> Report:
        s = self.env.services
        doctor = Doctor(
            s.settings,
            s.sessions,
            s.ami,
            s.pbx,
            s.meta.graph,
            s.meta.tokens.check,
            s.bitrix.portals,
            bundle=bundle or self.bundle,
        )
        return await doctor.run()


def statuses(report: Report, check: str) -> list[str]:
    return [v.status for v in report.by_check(check)]


def problems(report: Report) -> list[str]:
    """Everything that is not ok, except what can never be checked from here."""
    return [
        f"{v.check} {v.status}: {v.message}"
        for v in report.verdicts
        if v.status != "ok" and v.check != "network.from_meta"
    ]


async def graph(meta_url: str, method: str, path: str, token: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.request(
            method, f"{meta_url}/v25.0/{path}", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


@asynccontextmanager
async def doctor_env(lab: Lab, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any) -> AsyncIterator[DoctorEnv]:
    """The good set-up: our service between both simulators and the harness Asterisk, a WABA
    whose app is subscribed, a number with Calling + SIP enabled at Meta and linked to a portal,
    the trunk applied on a TLS transport serving `lab.good`."""
    inst = lab.asterisk
    meta = meta_sim.seeded(SEED)
    meta_url = str((await aiohttp_server(meta.app())).make_url("")).rstrip("/")
    settings = {
        "THOTH_AMI_URL": f"tcp://{inst.ami_user}:{inst.ami_secret}@{inst.host}:{inst.ami_port}",
        "THOTH_ARI_URL": f"http://{inst.ari_user}:{inst.ari_password}@{inst.host}:{inst.http_port}",
        "THOTH_ARI_APP": APP,
        "THOTH_META_GRAPH_URL": meta_url,
        "THOTH_ASTERISK_CONFIG_DIR": str(inst.config_dir),
    }
    async with service_env(
        tmp_path, f"sqlite:///{tmp_path / 'doctor.sqlite3'}", aiohttp_server, aiohttp_client, **settings
    ) as env:
        await env.services.ami.wait_connected(15)
        instance_id = await env.install()
        environ = {
            **settings,
            **bitrix_env(env.sim, env.public_url),
            "THOTH_DATABASE_URL": f"sqlite:///{tmp_path / 'doctor.sqlite3'}",
            "THOTH_SECRET_KEY_FILE": str(tmp_path / "secret.key"),
            "THOTH_ADMIN_PASSWORD": "correct-horse-battery",
            "THOTH_ADMIN_PASSWORD_FILE": str(tmp_path / "admin-password"),
        }
        d = DoctorEnv(env, meta, lab, 0, instance_id, str(lab.ca.ca_path), environ, meta_url)
        waba = await d.admin(
            "POST",
            "/api/admin/wabas",
            {
                "name": "Main",
                "waba_id": SEED.waba_id,
                "access_token": SEED.token,
                "app_id": SEED.app_id,
                "app_secret": SEED.app_secret,
            },
            201,
        )
        phone = await d.admin(
            "POST",
            "/api/admin/phones",
            {
                "number": SEED.display_phone_number,
                "phone_number_id": SEED.phone_number_id,
                "waba_account_id": waba["id"],
                "app_instance_id": instance_id,
                "sip_hostname": HOST,
                "sip_port": lab.port,
            },
            201,
        )
        d.phone_id = phone["id"]
        await wait_until(lambda: all_done(env.sessions), what="the portal set-up jobs (external line)")
        await d.admin("POST", f"/api/admin/phones/{d.phone_id}/calling", {"action": "enable"})
        # the onboarding step Meta documents: the app subscribes to the WABA's webhooks
        await graph(meta_url, "POST", f"{SEED.waba_id}/subscribed_apps", SEED.token)
        tls = lab.tls_dir
        await d.admin(
            "PUT",
            "/api/admin/pbx/trunk",
            {
                "bind_address": "127.0.0.1",
                "bind_port": lab.port,
                "transport_name": "doctor-tls",
                "cert_file": in_asterisk(inst, tls / "served.crt"),
                "priv_key_file": in_asterisk(inst, tls / "served.key"),
                "ca_list_file": in_asterisk(inst, lab.ca.ca_path),
                "tos": None,
                "cos": None,
                "qualify_frequency": 0,
                "fallback_dial": "PJSIP/100",
            },
        )
        applied = await d.admin("POST", "/api/admin/pbx/apply")
        assert applied["result"] in ("applied", "unchanged"), applied
        yield d


async def test_the_good_set_up_passes_every_check(
    lab: Lab, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any
) -> None:
    async with doctor_env(lab, tmp_path, aiohttp_server, aiohttp_client) as d:
        report = await d.run()
        assert problems(report) == []
        checks = {v.check for v in report.verdicts}
        for check in (
            "ami.connection",
            "asterisk.modules",
            "transport.bound",
            "tls.hostname",
            "tls.trust",
            "tls.key",
            "tls.expiry",
            "transport.nat",
            "identify.meta_ranges",
            "trunk.applied",
            "config.includes",
            "dialplan.context",
            "ami.permissions",
            "ari.permissions",
            "meta.calling",
            "meta.srtp",
            "meta.hostname",
            "meta.port",
            "meta.password",
            "meta.webhook_app",
            "meta.webhook_fields",
            "meta.token",
            "bitrix.scopes",
            "bitrix.external_line",
        ):
            assert check in checks, check
        assert statuses(report, "network.from_meta") == ["cannot_check"]
        assert report.exit_code == 0
        # the same checks over the admin API, where the doctor trusts what Meta trusts (the
        # public bundle): our test CA is not in it, so that is the one failure, with its fix
        body = await d.admin("GET", "/api/admin/doctor")
        assert {c["check"] for c in body["checks"]} == checks
        failed = [c for c in body["checks"] if c["status"] not in ("ok", "cannot_check")]
        assert [c["check"] for c in failed] == ["tls.trust"]
        assert "not publicly trusted" in failed[0]["message"] and "public CA" in failed[0]["fix"]
        assert body["ok"] is False and body["exit_code"] == 1


async def test_cli_json_on_the_good_set_up(lab: Lab, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any) -> None:
    """`thoth-pbx doctor --json` in its own process: the public bundle does not hold our test CA,
    so tls.trust is the one failure and the exit code is 1."""
    async with doctor_env(lab, tmp_path, aiohttp_server, aiohttp_client) as d:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "doctor",
            "--json",
            env={**os.environ, **d.environ},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 1, stderr.decode()
        report = json.loads(stdout)
        failed = [c["check"] for c in report["checks"] if c["status"] not in ("ok", "cannot_check")]
        assert failed == ["tls.trust"]
        assert [c["check"] for c in report["checks"] if c["status"] == "cannot_check"] == ["network.from_meta"]


async def test_wrong_certificate_host_fails(lab: Lab, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any) -> None:
    lab.serve(lab.wrong_host)
    try:
        async with doctor_env(lab, tmp_path, aiohttp_server, aiohttp_client) as d:
            report = await d.run()
            [verdict] = report.by_check("tls.hostname")
            assert verdict.status == "fail" and "other.example.test" in verdict.message and HOST in verdict.message
            assert verdict.fix and HOST in verdict.fix
            assert [p.split(":")[0] for p in problems(report)] == ["tls.hostname fail"]
    finally:
        lab.serve(lab.good)


async def test_expired_certificate_fails(lab: Lab, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any) -> None:
    lab.serve(lab.expired)
    try:
        async with doctor_env(lab, tmp_path, aiohttp_server, aiohttp_client) as d:
            report = await d.run()
            [verdict] = report.by_check("tls.expiry")
            assert verdict.status == "fail" and "expired" in verdict.message and verdict.fix
            # OpenSSL refuses the chain too: an expired certificate is not trusted
            assert statuses(report, "tls.trust") == ["fail"]
            assert report.exit_code == 1
    finally:
        lab.serve(lab.good)


async def test_expiry_warning_under_30_days_by_the_clock(
    lab: Lab, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any
) -> None:
    async with doctor_env(lab, tmp_path, aiohttp_server, aiohttp_client) as d:
        s = d.env.services
        later = lab.good.certificate.not_valid_after_utc - dt.timedelta(days=10)
        report = await Doctor(
            s.settings,
            s.sessions,
            s.ami,
            s.pbx,
            s.meta.graph,
            s.meta.tokens.check,
            s.bitrix.portals,
            bundle=d.bundle,
            clock=lambda: later,
        ).run()
        [verdict] = report.by_check("tls.expiry")
        assert verdict.status == "warn" and "10 day(s)" in verdict.message
        assert report.exit_code == 3


async def test_dtls_at_meta_fails(lab: Lab, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any) -> None:
    async with doctor_env(lab, tmp_path, aiohttp_server, aiohttp_client) as d:
        await graph(
            d.meta_url,
            "POST",
            f"{SEED.phone_number_id}/settings",
            SEED.token,
            {"calling": {"srtp_key_exchange_protocol": "DTLS"}},
        )
        report = await d.run()
        [verdict] = report.by_check("meta.srtp")
        assert verdict.status == "fail" and "DTLS" in verdict.message and verdict.subject == SEED.display_phone_number
        assert "calling enable" in (verdict.fix or "")
        assert [p.split(":")[0] for p in problems(report)] == ["meta.srtp fail"]


async def test_missing_module_fails(lab: Lab, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any) -> None:
    async with doctor_env(lab, tmp_path, aiohttp_server, aiohttp_client) as d:
        out = lab.asterisk.cli("module unload res_srtp.so")
        try:
            assert "Unloaded" in out or "unloaded" in out, out
            report = await d.run()
            srtp = [v for v in report.by_check("asterisk.modules") if v.subject == "res_srtp"]
            assert [v.status for v in srtp] == ["fail"]
            assert "module load res_srtp.so" in (srtp[0].fix or "")
            assert [p.split(":")[0] for p in problems(report)] == ["asterisk.modules fail"]
        finally:
            lab.asterisk.cli("module load res_srtp.so")


async def test_identify_range_missing_fails(lab: Lab, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any) -> None:
    from thoth_pbx.core.resources import data_dir
    from thoth_pbx.features.doctor.asterisk import read_ranges_file

    ranges = read_ranges_file(data_dir("config") / "meta-ip-ranges.txt")
    async with doctor_env(lab, tmp_path, aiohttp_server, aiohttp_client) as d:
        await d.admin("PUT", "/api/admin/pbx/trunk", {"identify_match": [r for r in ranges if r != "157.240.0.0/16"]})
        assert (await d.admin("POST", "/api/admin/pbx/apply"))["result"] == "applied"
        try:
            report = await d.run()
            [verdict] = report.by_check("identify.meta_ranges")
            assert verdict.status == "fail" and "157.240.0.0/16" in verdict.message and "1 of" in verdict.message
            assert [p.split(":")[0] for p in problems(report)] == ["identify.meta_ranges fail"]
        finally:
            await d.admin("PUT", "/api/admin/pbx/trunk", {"identify_match": None})
            await d.admin("POST", "/api/admin/pbx/apply")


async def test_settings_changed_but_not_applied_warns(
    lab: Lab, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any
) -> None:
    async with doctor_env(lab, tmp_path, aiohttp_server, aiohttp_client) as d:
        await d.admin("PUT", "/api/admin/pbx/trunk", {"fallback_timeout": 45})
        report = await d.run()
        [verdict] = report.by_check("trunk.applied")
        assert verdict.status == "warn" and "since the last apply" in verdict.message
        assert "pbx apply" in (verdict.fix or "")
        assert report.exit_code == 3


async def test_webhook_field_and_app_not_subscribed_fail(
    lab: Lab, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any
) -> None:
    async with doctor_env(lab, tmp_path, aiohttp_server, aiohttp_client) as d:
        d.meta.update_app(SEED.app_id, subscribed_fields={"messages"})
        report = await d.run()
        [fields] = report.by_check("meta.webhook_fields")
        assert fields.status == "fail" and "calls" in fields.message and fields.fix
        assert statuses(report, "meta.webhook_app") == ["ok"]
        await graph(d.meta_url, "DELETE", f"{SEED.waba_id}/subscribed_apps", SEED.token)
        report = await d.run()
        [app] = report.by_check("meta.webhook_app")
        assert app.status == "fail" and "subscribed_apps" in (app.fix or "")


async def test_bitrix_scope_and_external_line_missing_fail(
    lab: Lab, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any
) -> None:
    async with doctor_env(lab, tmp_path, aiohttp_server, aiohttp_client) as d:
        client = await d.env.services.bitrix.portals.client(d.instance_id)
        await client.call("telephony.externalLine.delete", {"NUMBER": SEED.display_phone_number.lstrip("+")})
        report = await d.run()
        [line] = report.by_check("bitrix.external_line")
        assert line.status == "fail" and SEED.display_phone_number.lstrip("+") in line.message
        d.env.portal.scope = "user,imconnector,imopenlines,messageservice,crm,im"
        report = await d.run()
        [scopes] = report.by_check("bitrix.scopes")
        assert scopes.status == "fail" and "telephony" in scopes.message and scopes.fix


async def test_read_only_ari_user_fails(lab: Lab, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any) -> None:
    conf = lab.asterisk.config_dir / "ari.conf"  # type: ignore[operator]
    original = conf.read_text()
    async with doctor_env(lab, tmp_path, aiohttp_server, aiohttp_client) as d:
        conf.write_text(original.replace("read_only = no", "read_only = yes"))
        lab.asterisk.cli("module reload res_ari.so")
        try:
            report = await d.run()
            [ari] = report.by_check("ari.permissions")
            assert ari.status == "fail" and "read_only" in ari.message
        finally:
            conf.write_text(original)
            lab.asterisk.cli("module reload res_ari.so")
