"""The lab itself: Meta's INVITE reaches our from-meta dialplan over TLS, SDES and Opus."""

from __future__ import annotations

from tests.calls.lab import CallLab


def test_trunk_is_live_with_tls_transport(lab: CallLab) -> None:
    out = lab.business.cli("pjsip show endpoint wa.meta.vc")
    assert "wa.meta.vc" in out
    transports = lab.business.cli("pjsip show transports")
    assert f"127.0.0.1:{lab.tls_port}" in transports
