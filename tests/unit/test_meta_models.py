"""Webhook payload models and their flattening into inbox events (pure)."""

from __future__ import annotations

import pytest

from thoth_pbx.clients.meta.payloads import (
    AccountSettingsUpdate,
    CallEvent,
    Message,
    PayloadError,
    Status,
    UnknownChange,
    contacts_of,
    events_of,
    fold_call,
    metadata_of,
    model_of,
    unknown_keys,
)
from thoth_pbx.sandbox import meta as sim

PNID, DISPLAY, WABA = "106540352242922", "+15550100001", "102290129340398"


def test_message_event_has_dedup_key_routing_and_typed_model() -> None:
    doc = sim.delivery(WABA, [sim.message_change(PNID, DISPLAY, "15551234567", "hi", wamid="wamid.A", name="Ann")])
    [event] = events_of(doc)
    assert (event.dedup_key, event.kind, event.field, event.waba_id, event.phone_number_id) == (
        "m:wamid.A",
        "message",
        "messages",
        WABA,
        PNID,
    )
    message = event.model()
    assert isinstance(message, Message) and message.text == "hi" and message.type == "text"
    assert [c.name for c in contacts_of(event.payload)] == ["Ann"]
    assert metadata_of(event.payload).phone_number_id == PNID


def test_each_status_transition_is_its_own_event() -> None:
    changes = [sim.status_change(PNID, DISPLAY, "wamid.A", s, "1555") for s in ("sent", "delivered", "read", "failed")]
    events = events_of(sim.delivery(WABA, changes))
    assert [e.dedup_key for e in events] == [
        "s:wamid.A:sent",
        "s:wamid.A:delivered",
        "s:wamid.A:read",
        "s:wamid.A:failed",
    ]
    failed = events[-1].model()
    assert isinstance(failed, Status) and failed.errors[0].code == 131047
    assert failed.errors[0].details.startswith("More than 24 hours")


def test_call_events_keyed_by_call_id_and_event() -> None:
    connect = sim.call_connect_change(PNID, DISPLAY, "wacid.1", "1555")
    terminate = sim.call_terminate_change(PNID, DISPLAY, "wacid.1", "1555", status="Failed", duration=None)
    terminate["value"]["errors"] = [{"code": 138021, "message": "media failure"}]  # samples put errors at value level
    events = events_of(sim.delivery(WABA, [connect, terminate]))
    assert [(e.kind, e.dedup_key) for e in events] == [
        ("call.connect", "c:wacid.1:connect"),
        ("call.terminate", "c:wacid.1:terminate"),
    ]
    call = events[0].model()
    assert isinstance(call, CallEvent) and call.sdp_type == "offer" and call.sdp.startswith("v=0\r\n")
    ended = events[1].model()
    assert isinstance(ended, CallEvent) and ended.failed and ended.duration is None
    assert [e.code for e in ended.errors] == [138021]


def test_call_status_on_the_calls_field() -> None:
    change = {
        "field": "calls",
        "value": {
            "metadata": {"phone_number_id": PNID},
            "statuses": [
                {"id": "wacid.2", "type": "call", "status": "RINGING", "timestamp": "1", "recipient_id": "1555"}
            ],
        },
    }
    [event] = events_of(sim.delivery(WABA, [change]))
    assert event.kind == "call.status" and event.dedup_key == "s:wacid.2:ringing"


def test_terminate_wins_in_any_order() -> None:
    connect = CallEvent.from_dict({"id": "c", "event": "connect"})
    terminate = CallEvent.from_dict({"id": "c", "event": "terminate", "status": "completed", "duration": "30"})
    in_order = fold_call(fold_call(None, connect), terminate)
    reversed_ = fold_call(fold_call(None, terminate), connect)
    for outcome in (in_order, reversed_):
        assert outcome.terminated and not outcome.active and outcome.status == "COMPLETED" and outcome.duration == 30
    assert reversed_.late_connect and not in_order.late_connect
    assert fold_call(None, connect).active


def test_unknown_things_are_kept_not_dropped() -> None:
    doc = sim.delivery(
        WABA,
        [
            {
                "field": "calls",
                "value": {
                    "metadata": {"phone_number_id": PNID},
                    "calls": [{"id": "w", "event": "call_created", "new_key": 1}],
                },
            },
            {"field": "brand_new_field", "value": {"anything": [1, 2]}},
            {
                "field": "messages",
                "value": {
                    "metadata": {"phone_number_id": PNID},
                    "statuses": [{"id": "wamid.B", "status": "sent", "conversation": {"id": "c1"}}],
                    "surprise": True,
                },
            },
        ],
    )
    events = events_of(doc)
    assert [e.kind for e in events] == ["call.call_created", "unknown.brand_new_field", "status"]
    assert [e.known for e in events] == [False, False, False]
    assert unknown_keys(events[0]) == ["new_key"]
    assert isinstance(events[1].model(), UnknownChange) and events[1].payload["value"] == {"anything": [1, 2]}
    assert unknown_keys(events[2]) == ["surprise", "conversation"]
    status = events[2].model()
    assert isinstance(status, Status) and status.extra == {"conversation": {"id": "c1"}}
    assert events[2].payload["value_extra"] == {"surprise": True}


def test_account_settings_update_and_value_errors() -> None:
    settings = {
        "field": "account_settings_update",
        "value": {"phone_number_id": PNID, "calling": {"status": "DISABLED"}},
    }
    errors = {
        "field": "messages",
        "value": {"metadata": {"phone_number_id": PNID}, "errors": [{"code": 131000, "title": "Something went wrong"}]},
    }
    first, second = events_of(sim.delivery(WABA, [settings, errors]))
    assert first.kind == "account_settings_update" and first.known
    model = first.model()
    assert isinstance(model, AccountSettingsUpdate) and model.calling == {"status": "DISABLED"}
    assert second.kind == "messages.errors" and second.known
    # no natural id: the key is a hash of the content, so an identical retry dedups
    assert events_of(sim.delivery(WABA, [settings]))[0].dedup_key == first.dedup_key
    assert first.dedup_key.startswith("h:account_settings_update:")


@pytest.mark.parametrize("field", ["account_settings_update", "account_update"])
def test_a_change_without_items_is_one_event_per_entry_time(field: str) -> None:
    """The same value at two times is two events (a setting switched off, on, off again);
    Meta's retry of one delivery keeps its time and stays one event."""
    change = {"field": field, "value": {"phone_number_id": PNID, "calling": {"status": "DISABLED"}}}
    at_1, at_2, retry = (
        events_of(sim.delivery(WABA, [change], time=t))[0] for t in (1739321024, 1739321090, 1739321024)
    )
    assert at_1.dedup_key != at_2.dedup_key and at_1.dedup_key == retry.dedup_key
    assert (at_1.entry_time, at_2.entry_time) == (1739321024, 1739321090)
    assert events_of(sim.delivery(WABA, [change], time="1739321024"))[0].dedup_key == at_1.dedup_key  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "soon", 10**13, [1]])
def test_a_bad_entry_time_names_the_field(bad: object) -> None:
    doc = sim.delivery(WABA, [{"field": "account_update", "value": {"event": "ACCOUNT_DELETED"}}])
    doc["entry"][0]["time"] = bad
    with pytest.raises(PayloadError) as err:
        events_of(doc)
    assert err.value.path == "entry[0].time"


def test_batch_of_1000_updates_flattens_to_1000_events() -> None:
    doc = sim.delivery(WABA, [sim.messages_change(PNID, DISPLAY, "1555", 1000)])
    events = events_of(doc)
    assert len(events) == 1000 and len({e.dedup_key for e in events}) == 1000


def test_contacts_trimmed_to_the_item_in_big_batches() -> None:
    change = sim.messages_change(PNID, DISPLAY, "1555", 2)
    change["value"]["contacts"] = [
        {"wa_id": "1555", "profile": {"name": "A"}},
        {"wa_id": "1666", "profile": {"name": "B"}},
    ]
    events = events_of(sim.delivery(WABA, [change]))
    assert [c["wa_id"] for c in events[0].payload["contacts"]] == ["1555"]


def test_overlong_ids_are_hashed_to_fit_the_column() -> None:
    [event] = events_of(sim.delivery(WABA, [sim.message_change(PNID, DISPLAY, "1", "x", wamid="w" * 400)]))
    assert len(event.dedup_key) <= 300 and event.dedup_key.startswith("m:sha256:")


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ([], "body"),
        ({"entry": []}, "object"),
        ({"object": "whatsapp_business_account", "entry": {}}, "entry"),
        ({"object": "whatsapp_business_account", "entry": ["x"]}, "entry[0]"),
        ({"object": "whatsapp_business_account", "entry": [{"id": "1"}]}, "entry[0].changes"),
        ({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {}}]}]}, "entry[0].changes[0].field"),
        (
            {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": []}]}]},
            "entry[0].changes[0].value",
        ),
    ],
)
def test_envelope_errors_name_the_path(doc, path: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PayloadError) as info:
        events_of(doc)
    assert info.value.path == path


def test_model_of_round_trips_stored_payloads() -> None:
    [event] = events_of(sim.delivery(WABA, [sim.call_connect_change(PNID, DISPLAY, "wacid.9", "1555")]))
    rebuilt = model_of(event.kind, event.payload)
    assert isinstance(rebuilt, CallEvent) and rebuilt.id == "wacid.9" and rebuilt.direction == "USER_INITIATED"
