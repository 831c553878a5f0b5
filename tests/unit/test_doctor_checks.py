"""The doctor's judgements, pure: each check fails on a broken set-up and passes on the good one.

Facts: Meta fact sheet §1-2 (certificate must be CA-valid for the configured host; DTLS is
Meta's default and GET omits `srtp_key_exchange_protocol` until set; one SIP server per
number; `sip_user_password` with include_sip_credentials), docs/pbx.md (what the trunk writes).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from tests.support.certs import TestCA
from thoth_pbx.features.doctor import asterisk, bitrix, meta, tls
from thoth_pbx.features.doctor.verdicts import CANNOT, FAIL, OK, WARN, Report, Verdict, human
from thoth_pbx.features.trunk.render import DEFAULTS, parse_trunk

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
HOST = "pbx.example.com"


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca", now=NOW)


def statuses(verdicts: list[Verdict]) -> list[str]:
    return [v.status for v in verdicts]


# ------------------------------------------------------------------ certificate


def test_hostname_covered_by_san_passes_and_another_host_fails_with_the_fix(ca: TestCA) -> None:
    cert = ca.issue("pbx", [HOST, "127.0.0.1"]).certificate
    assert statuses(tls.hostname_verdicts(cert, [HOST])) == [OK]
    wrong = tls.hostname_verdicts(cert, ["sip.other.org"])
    assert statuses(wrong) == [FAIL]
    assert "pbx.example.com" in wrong[0].message and "sip.other.org" in wrong[0].message
    assert wrong[0].fix and "subjectAltName lists sip.other.org" in wrong[0].fix
    assert wrong[0].subject == "sip.other.org"


def test_hostname_wildcard_covers_one_label_only(ca: TestCA) -> None:
    cert = ca.issue("wild", ["*.example.com"]).certificate
    assert statuses(tls.hostname_verdicts(cert, ["pbx.example.com"])) == [OK]
    assert statuses(tls.hostname_verdicts(cert, ["a.pbx.example.com", "example.com"])) == [FAIL, FAIL]


def test_a_certificate_without_san_covers_nothing_even_with_the_right_cn(ca: TestCA) -> None:
    cert = ca.issue("cn-only", [HOST], san=False).certificate
    verdict = tls.hostname_verdicts(cert, [HOST])[0]
    assert verdict.status == FAIL and "no subjectAltName" in verdict.message


def test_no_sip_hostname_cannot_be_checked() -> None:
    assert statuses(tls.hostname_verdicts(None, [])) == [CANNOT]  # type: ignore[arg-type]


def test_expiry_expired_fails_soon_warns_far_passes(ca: TestCA) -> None:
    expired = ca.issue("old", [HOST], days_before=100, days_after=-1).certificate
    soon = ca.issue("soon", [HOST], days_after=12).certificate
    far = ca.issue("far", [HOST], days_after=90).certificate
    future = ca.issue("future", [HOST], days_before=-2, days_after=90).certificate
    assert tls.expiry_verdict(expired, NOW).status == FAIL
    assert "expired" in tls.expiry_verdict(expired, NOW).message
    v = tls.expiry_verdict(soon, NOW)
    assert v.status == WARN and "12 day(s)" in v.message and v.fix
    assert tls.expiry_verdict(far, NOW).status == OK
    assert tls.expiry_verdict(future, NOW).status == FAIL
    # the boundary: 30 days left is fine, 29 is a warning
    assert tls.expiry_verdict(far, far.not_valid_after_utc - dt.timedelta(days=30, seconds=1)).status == OK
    assert tls.expiry_verdict(far, far.not_valid_after_utc - dt.timedelta(days=29, hours=23)).status == WARN


def test_key_matches_cert_or_not(ca: TestCA) -> None:
    good, other = ca.issue("a", [HOST]), ca.issue("b", [HOST])
    served = good.certificate
    assert tls.key_verdict(served, good.cert.read_bytes(), good.key.read_bytes(), "a").status == OK
    mismatch = tls.key_verdict(served, good.cert.read_bytes(), other.key.read_bytes(), "a/b")
    assert mismatch.status == FAIL and "does not belong" in mismatch.message
    # files renewed on disk, the transport still serves the old certificate: restart needed
    renewed = tls.key_verdict(served, other.cert.read_bytes(), other.key.read_bytes(), "b")
    assert renewed.status == WARN and "restart" in (renewed.fix or "")
    # files Asterisk reads but we cannot: the handshake proved the key
    assert tls.key_verdict(served, None, None, "/chroot/x").status == OK


def test_trust_follows_the_verification_of_the_served_chain() -> None:
    assert tls.trust_verdict(tls.Probe("h:1", b"x"), "bundle").status == OK
    bad = tls.trust_verdict(tls.Probe("h:1", b"x", verify_error="unable to get local issuer certificate"), "b")
    assert bad.status == FAIL and "not publicly trusted" in bad.message and "public CA" in (bad.fix or "")


def test_no_handshake_makes_every_tls_check_uncheckable() -> None:
    found = tls.Probe("127.0.0.1:5061", connect_error="Connection refused")
    out = tls.tls_verdicts(found, [HOST], bundle="b", now=NOW)
    assert {v.check for v in out} == {"tls.hostname", "tls.trust", "tls.key", "tls.expiry"}
    assert set(statuses(out)) == {CANNOT}


# ------------------------------------------------------------------ Meta settings per phone


def meta_settings(
    *, srtp: str | None = "SDES", host: str = HOST, port: int | None = 5061, pw: str | None = "pw"
) -> dict[str, Any]:
    server: dict[str, Any] = {"hostname": host, "app_id": "1"}
    if port is not None:
        server["port"] = port
    if pw is not None:
        server["sip_user_password"] = pw
    calling: dict[str, Any] = {"status": "ENABLED", "sip": {"status": "ENABLED", "servers": [server]}}
    if srtp is not None:
        calling["srtp_key_exchange_protocol"] = srtp
    return {"calling": calling}


PHONE = meta.PhoneFacts("+15551230000", HOST, 5061, "pw")


def by_check(verdicts: list[Verdict]) -> dict[str, str]:
    return {v.check: v.status for v in verdicts}


def test_meta_settings_matching_our_trunk_pass() -> None:
    out = meta.phone_verdicts(PHONE, meta_settings(), "sdes", 5061)
    assert by_check(out) == {
        "meta.calling": OK,
        "meta.srtp": OK,
        "meta.hostname": OK,
        "meta.port": OK,
        "meta.password": OK,
    }


def test_dtls_at_meta_fails_against_our_sdes_trunk_also_when_meta_omits_the_field() -> None:
    for srtp in ("DTLS", None):
        out = meta.phone_verdicts(PHONE, meta_settings(srtp=srtp), "sdes", 5061)
        srtp_verdict = [v for v in out if v.check == "meta.srtp"][0]
        assert srtp_verdict.status == FAIL and "DTLS" in srtp_verdict.message
        assert "calling enable +15551230000" in (srtp_verdict.fix or "")


def test_meta_hostname_port_password_mismatches() -> None:
    assert (
        by_check(meta.phone_verdicts(PHONE, meta_settings(host="old.example.com"), "sdes", 5061))["meta.hostname"]
        == FAIL
    )
    assert by_check(meta.phone_verdicts(PHONE, meta_settings(port=5062), "sdes", 5061))["meta.port"] == FAIL
    # Meta's port omitted means 5061; a transport on another port is a warning (a port forward may exist)
    assert by_check(meta.phone_verdicts(PHONE, meta_settings(port=None), "sdes", 5061))["meta.port"] == OK
    assert by_check(meta.phone_verdicts(PHONE, meta_settings(), "sdes", 15061))["meta.port"] == WARN
    assert by_check(meta.phone_verdicts(PHONE, meta_settings(pw=None), "sdes", 5061))["meta.password"] == FAIL
    assert by_check(meta.phone_verdicts(PHONE, meta_settings(pw="other"), "sdes", 5061))["meta.password"] == FAIL
    nopw = meta.PhoneFacts("+15551230000", HOST, 5061, None)
    assert by_check(meta.phone_verdicts(nopw, meta_settings(), "sdes", 5061))["meta.password"] == FAIL


def test_calling_disabled_at_meta_fails_first() -> None:
    out = meta.phone_verdicts(PHONE, {"calling": {"status": "DISABLED", "sip": {"status": "DISABLED"}}}, "sdes", 5061)
    assert by_check(out) == {"meta.calling": FAIL}


def test_subscribed_apps_and_fields() -> None:
    data = {"data": [{"whatsapp_business_api_data": {"id": "42", "name": "Ours", "link": "x"}}]}
    assert meta.subscribed_apps_verdict(data, "42", "w").status == OK
    assert meta.subscribed_apps_verdict(data, "43", "w").status == FAIL
    assert meta.subscribed_apps_verdict({"data": []}, "42", "w").status == FAIL
    fields = {
        "data": [
            {
                "object": "whatsapp_business_account",
                "active": True,
                "fields": [{"name": "messages", "version": "v25.0"}, {"name": "calls", "version": "v25.0"}],
            }
        ]
    }
    assert meta.webhook_fields_verdict(fields, "42", "w").status == OK
    fields["data"][0]["fields"] = [{"name": "messages", "version": "v25.0"}]
    missing = meta.webhook_fields_verdict(fields, "42", "w")
    assert missing.status == FAIL and "calls" in missing.message
    assert meta.fields_uncheckable("w").status == CANNOT


def test_token_verdicts() -> None:
    assert (
        meta.token_verdict(
            {"is_valid": True, "scopes": ["whatsapp_business_messaging"], "missing_scopes": []}, "w"
        ).status
        == OK
    )
    assert (
        meta.token_verdict({"is_valid": True, "missing_scopes": ["whatsapp_business_management"]}, "w").status == FAIL
    )
    assert meta.token_verdict({"is_valid": False, "warning": "expired"}, "w").status == FAIL
    assert (
        meta.token_verdict({"is_valid": True, "missing_scopes": [], "warning": "expires in 2 day(s)"}, "w").status
        == WARN
    )
    assert meta.token_verdict({"is_valid": None, "error": "bad app secret"}, "w").status == CANNOT


# ------------------------------------------------------------------ Asterisk


RANGES = ["31.13.24.0/21", "57.144.0.0/14", "157.240.0.0/16"]


def test_identify_covers_every_meta_range_or_names_the_missing_one() -> None:
    full = {"Event": "IdentifyDetail", "Match": "31.13.24.0/255.255.248.0,57.144.0.0/14,157.240.0.0/16"}
    assert asterisk.identify_verdict(RANGES, full, "ranges").status == OK
    broader = {"Event": "IdentifyDetail", "Match": "31.0.0.0/8,57.0.0.0/8,157.240.0.0/16"}
    assert asterisk.identify_verdict(RANGES, broader, "ranges").status == OK
    missing = asterisk.identify_verdict(
        RANGES, {"Event": "IdentifyDetail", "Match": "31.13.24.0/21,157.240.0.0/16"}, "r"
    )
    assert missing.status == FAIL and "57.144.0.0/14" in missing.message and "1 of 3" in missing.message
    assert asterisk.identify_verdict(RANGES, None, "r").status == FAIL


def test_the_shipped_ranges_file_parses() -> None:
    from thoth_pbx.core.resources import data_dir

    ranges = asterisk.read_ranges_file(data_dir("config") / "meta-ip-ranges.txt")
    assert "157.240.0.0/16" in ranges and all("#" not in r for r in ranges)


def trunk(**kw: Any) -> Any:
    return parse_trunk({"cert_file": "/c", "priv_key_file": "/k", **kw})


def test_nat_local_net_needs_external_addresses() -> None:
    assert asterisk.external_verdict(trunk(), None).status == OK
    half = asterisk.external_verdict(trunk(local_net=["10.0.0.0/8"], external_media_address="203.0.113.5"), None)
    assert half.status == FAIL and "external_signaling_address" in half.message
    full = trunk(
        local_net=["10.0.0.0/8"], external_media_address="203.0.113.5", external_signaling_address="pbx.example.com"
    )
    assert asterisk.external_verdict(full, None).status == OK
    # a private bind address without local_net: probably behind NAT
    assert asterisk.external_verdict(trunk(bind_address="192.168.1.10"), None).status == WARN


def test_transport_verdict() -> None:
    t = trunk(bind_address="127.0.0.1", bind_port=5061)
    live = {"Event": "TransportDetail", "ObjectName": "thoth-tls", "Protocol": "tls", "Bind": "127.0.0.1:5061"}
    assert asterisk.transport_verdict(t, live, None, "127.0.0.1:5061").status == OK
    assert asterisk.transport_verdict(t, None, None, "x").status == FAIL
    assert asterisk.transport_verdict(t, {**live, "Bind": "0.0.0.0:5061"}, None, "x").status == FAIL
    assert asterisk.transport_verdict(t, live, "Connection refused", "x").status == FAIL
    assert asterisk.probe_host(trunk(bind_address="0.0.0.0"), "10.1.1.1") == "10.1.1.1"
    assert asterisk.probe_host(t, "10.1.1.1") == "127.0.0.1"


def test_modules() -> None:
    loaded = {name: True for m in asterisk.MODULES for name in m.files}
    loaded["codec_opus.so"] = False  # either Opus codec will do
    assert set(statuses(asterisk.module_verdicts(loaded))) == {OK}
    loaded["res_srtp.so"] = False
    srtp = [v for v in asterisk.module_verdicts(loaded) if v.subject == "res_srtp"][0]
    assert srtp.status == FAIL and "module load res_srtp.so" in (srtp.fix or "")


def test_dialplan_context() -> None:
    good = "[ Context 'from-meta' created by 'pbx_config' ]\n  '_+X.' =>  1. Stasis(thoth-pbx)\n  '_X.' =>  1. Stasis(thoth-pbx)\n"
    assert asterisk.dialplan_verdict("from-meta", "thoth-pbx", good).status == OK
    assert asterisk.dialplan_verdict("from-meta", "thoth-pbx", good.replace("'_+X.'", "'_Z.'")).status == FAIL
    assert asterisk.dialplan_verdict("from-meta", "other-app", good).status == FAIL
    assert (
        asterisk.dialplan_verdict("from-meta", "thoth-pbx", "There is no existence of 'from-meta' context").status
        == FAIL
    )


def test_includes() -> None:
    files = {
        "pjsip_thoth.conf": {"exists": True, "included_from": "pjsip.conf"},
        "extensions_thoth.conf": {"exists": True, "included_from": None},
    }
    out = asterisk.include_verdicts(files, "plain")
    assert statuses(out) == [OK, FAIL] and "#tryinclude extensions_thoth.conf" in (out[1].fix or "")


def test_trunk_applied() -> None:
    assert asterisk.applied_verdict({"apply_needed": False, "drift": False}).status == OK
    assert asterisk.applied_verdict({"apply_needed": True}).status == WARN
    assert asterisk.applied_verdict({"drift": True}).status == WARN
    pending = asterisk.applied_verdict({"restart_pending": [{"object": "transport t", "option": "bind"}]})
    assert pending.status == WARN and "restart" in (pending.fix or "")
    live = asterisk.applied_verdict({"live_mismatches": [{"message": "endpoint wa.meta.vc: not loaded by Asterisk"}]})
    assert live.status == FAIL and "wa.meta.vc" in live.message
    bad = asterisk.applied_verdict({"render_error": {"field": "cert_file", "message": "is required"}})
    assert bad.status == FAIL and "cert_file" in bad.message


def test_ami_and_ari_permissions() -> None:
    every = {a.lower() for a in asterisk.AMI_ACTIONS}
    assert asterisk.ami_verdict(every, "system,call", "thoth").status == OK
    assert asterisk.ami_verdict(every - {"reload"}, "all", "thoth").status == FAIL
    assert asterisk.ami_verdict(every, "call", "thoth").status == WARN
    assert asterisk.ari_verdict(200, 400, None, "u").status == OK
    assert asterisk.ari_verdict(200, 403, None, "u").status == FAIL
    assert asterisk.ari_verdict(401, None, None, "u").status == FAIL
    assert asterisk.ari_verdict(None, None, "refused", "u").status == FAIL


# ------------------------------------------------------------------ Bitrix24


def test_bitrix_scopes_and_lines() -> None:
    assert bitrix.scope_verdict(list(bitrix.REQUIRED_SCOPES) + ["im"], "p").status == OK
    lacking = bitrix.scope_verdict(["crm", "user", "imconnector", "imopenlines", "messageservice"], "p")
    assert lacking.status == FAIL and "telephony" in lacking.message
    lines = [{"NUMBER": "15551230000", "NAME": "WhatsApp"}]
    assert statuses(bitrix.line_verdicts(lines, ["+15551230000", "+15551230001"], "p")) == [OK, FAIL]


# ------------------------------------------------------------------ the report


def test_exit_code_fail_then_warn_cannot_check_never_counts() -> None:
    ok_ = Verdict("a", OK, "m")
    assert Report.of([ok_, Verdict("n", CANNOT, "m")]).exit_code == 0
    assert Report.of([ok_, Verdict("w", WARN, "m", "f")]).exit_code == 3
    assert Report.of([Verdict("w", WARN, "m", "f"), Verdict("f", FAIL, "m", "f")]).exit_code == 1
    text = human(Report.of([Verdict("tls.hostname", FAIL, "bad", "fix it", "pbx")]))
    assert "[FAIL] tls.hostname (pbx): bad" in text and "fix: fix it" in text


def test_defaults_are_what_the_checks_expect() -> None:
    # the doctor reads the trunk's settings through a protocol; the trunk's defaults satisfy it
    assert DEFAULTS.media_encryption == "sdes" and DEFAULTS.bind_port == 5061
