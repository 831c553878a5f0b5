from __future__ import annotations

import datetime as dt

import pytest

from thoth_pbx.features.calls import callflow as cf
from thoth_pbx.features.calls.callflow import CallSettings, Operator, RingStage


def test_route_rings_responsible_first_then_group() -> None:
    settings = CallSettings.from_json(
        {"ring_group": ["101", "102", "101"], "responsible_first_seconds": 10, "group_ring_seconds": 25},
        users={"101": 1, "102": 2, "205": 5},
    )
    stages = cf.plan_route(Operator("205", 5), settings)
    assert stages == [
        RingStage((Operator("205", 5),), 10),
        RingStage((Operator("101", 1), Operator("102", 2)), 25),
    ]


def test_route_without_responsible_or_group() -> None:
    settings = CallSettings.from_json({"ring_group": ["101"]})
    assert cf.plan_route(None, settings) == [RingStage((Operator("101"),), 30)]
    assert cf.plan_route(None, CallSettings()) == []
    # the responsible being the whole ring group is rung once, not twice
    assert cf.plan_route(Operator("101"), settings) == [RingStage((Operator("101"),), 15)]


@pytest.mark.parametrize(
    ("answered", "caller_first", "results", "code"),
    [
        (True, False, ["ANSWER", "NOANSWER"], "200"),
        (False, True, ["NOANSWER"], "603-S"),
        (False, False, ["NOANSWER", "BUSY"], "304"),
        (False, False, ["BUSY", "BUSY"], "486"),
        (False, False, ["BUSY", "CHANUNAVAIL"], "486"),
        (False, False, ["CHANUNAVAIL"], "480"),
        (False, False, ["CONGESTION", "CHANUNAVAIL"], "480"),
        (False, False, [], "480"),
    ],
)
def test_finish_status(answered: bool, caller_first: bool, results: list[str], code: str) -> None:
    assert cf.finish_status(answered=answered, caller_hung_up_first=caller_first, dial_results=results) == code


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("+14155550123", "+14155550123"),
        ("14155550123", "+14155550123"),
        ("sip:+79991234567@wa.meta.vc", "+79991234567"),
        ("+79991234567;tgrp=wacall", "+79991234567"),
        ("s", None),
        ("", None),
        (None, None),
        ("12ab", None),
    ],
)
def test_normalise_number(raw: str | None, clean: str | None) -> None:
    assert cf.normalise_number(raw) == clean


def test_talk_seconds() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert cf.talk_seconds(None, t0) == 0
    assert cf.talk_seconds(t0, t0 + dt.timedelta(seconds=61.6)) == 62
    assert cf.talk_seconds(t0 + dt.timedelta(seconds=5), t0) == 0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"ring_group": "101"}, "calls.ring_group"),
        ({"ring_group": ["101", "a b"]}, "calls.ring_group[1]"),
        ({"group_ring_seconds": 9999}, "calls.group_ring_seconds"),
        ({"record": "yes"}, "calls.record"),
        ({"operator_endpoint": "PJSIP/101"}, "calls.operator_endpoint"),
        ({"operator_endpoint": "PJSIP/{extension}\n[x]"}, "calls.operator_endpoint"),
        ({"ringgroup": []}, "calls.ringgroup"),
    ],
)
def test_call_settings_errors_name_the_key(data: dict, field: str) -> None:
    from thoth_pbx.core.validation import FieldError

    with pytest.raises(FieldError) as err:
        CallSettings.from_json(data)
    assert err.value.field == field
