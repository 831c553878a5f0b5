"""The doctor's judgement of several Asterisk servers' `systemname` (docs/scaling.md)."""

from __future__ import annotations

from thoth_pbx.features.doctor.asterisk import system_name_verdict


def test_distinct_names_are_ok() -> None:
    verdict = system_name_verdict({"pbx-a": "site-a", "pbx-b": "site-b"})
    assert verdict.status == "ok" and "pbx-a site-a" in verdict.message


def test_an_unset_or_shared_name_is_a_warning_naming_the_servers() -> None:
    unset = system_name_verdict({"pbx-a": "", "pbx-b": "site-b"})
    assert unset.status == "warn" and "no systemname on pbx-a" in unset.message and "asterisk.conf" in (unset.fix or "")
    shared = system_name_verdict({"pbx-a": "pbx", "pbx-b": "pbx", "pbx-c": "other"})
    assert shared.status == "warn" and "'pbx' on pbx-a, pbx-b" in shared.message and "pbx-c" not in shared.message


def test_a_server_that_cannot_be_asked_is_said_so() -> None:
    verdict = system_name_verdict({"pbx-a": "site-a", "pbx-b": None})
    assert verdict.status == "cannot_check" and "pbx-b" in verdict.message
