"""ARI events parsed once into typed models; values Asterisk may add fall back to UNKNOWN."""

from __future__ import annotations

from thoth_pbx.clients.asterisk.events import ChannelState, DialStatus, EventType, parse_event

CHANNEL = {
    "id": "1710000000.12",
    "name": "PJSIP/wa.meta.vc-00000001",
    "state": "Ring",
    "caller": {"name": "", "number": "+79990000001"},
    "dialplan": {"context": "from-meta", "exten": "+15550100001", "priority": 3, "app_name": "Stasis"},
    "linkedid": "1710000000.12",
}


def test_stasis_start_carries_channel_and_args() -> None:
    event = parse_event({"type": "StasisStart", "channel": CHANNEL, "args": ["+15550100001", "wacid.X"]})
    assert event.type is EventType.STASIS_START and event.args == ("+15550100001", "wacid.X")
    assert event.channel is not None and event.channel.state is ChannelState.RING
    assert (event.channel.caller_number, event.channel.exten, event.channel.linkedid) == (
        "+79990000001",
        "+15550100001",
        "1710000000.12",
    )


def test_dial_status_and_unknown_values() -> None:
    dial = parse_event({"type": "Dial", "peer": {**CHANNEL, "id": "leg-1"}, "dialstatus": "answer"})
    assert dial.dialstatus is DialStatus.ANSWER and dial.peer is not None and dial.peer.id == "leg-1"
    assert parse_event({"type": "Dial", "peer": CHANNEL, "dialstatus": ""}).dialstatus is None  # still dialling
    newer = parse_event({"type": "Dial", "peer": CHANNEL, "dialstatus": "SOMETHING_NEW"})
    assert newer.dialstatus is DialStatus.UNKNOWN
    assert parse_event({"type": "BridgeVideoSourceChanged"}).type is EventType.UNKNOWN
    assert (
        parse_event({"type": "ChannelStateChange", "channel": {**CHANNEL, "state": "Pre-ring"}}).channel.state
        is ChannelState.UNKNOWN
    )  # type: ignore[union-attr]


def test_cause_recording_and_broken_parts() -> None:
    assert parse_event({"type": "ChannelHangupRequest", "channel": CHANNEL, "cause": 17}).cause == 17
    assert parse_event({"type": "ChannelDestroyed", "channel": CHANNEL, "cause": "16"}).cause == 16
    assert parse_event({"type": "RecordingFinished", "recording": {"name": "thoth-1"}}).recording == "thoth-1"
    broken = parse_event({"type": "StasisStart", "channel": "not an object", "args": "nope", "cause": "x"})
    assert broken.channel is None and broken.args == () and broken.cause is None
