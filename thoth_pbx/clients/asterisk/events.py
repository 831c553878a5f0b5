"""Typed ARI events: the fields the Stasis app reads, parsed once at the door.

Frozen dataclasses; enum values Asterisk may extend (dial status, channel state, event type)
fall back to UNKNOWN instead of failing, and the raw event stays available. Field names follow
the ARI event reference (docs.asterisk.org: Asterisk_22_REST_Data_Models)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from thoth_pbx.core.shapes import as_int, sub


class _WithUnknown(enum.StrEnum):
    @classmethod
    def _missing_(cls, value: object) -> Any:
        return cls("UNKNOWN")


class EventType(_WithUnknown):
    STASIS_START = "StasisStart"
    STASIS_END = "StasisEnd"
    CHANNEL_DESTROYED = "ChannelDestroyed"
    CHANNEL_HANGUP_REQUEST = "ChannelHangupRequest"
    CHANNEL_STATE_CHANGE = "ChannelStateChange"
    DIAL = "Dial"
    RECORDING_FINISHED = "RecordingFinished"
    RECORDING_FAILED = "RecordingFailed"
    UNKNOWN = "UNKNOWN"


class DialStatus(_WithUnknown):
    """Dial event `dialstatus`; the empty string means "still dialling"."""

    ANSWER = "ANSWER"
    BUSY = "BUSY"
    NOANSWER = "NOANSWER"
    CHANUNAVAIL = "CHANUNAVAIL"
    CONGESTION = "CONGESTION"
    CANCEL = "CANCEL"
    PROGRESS = "PROGRESS"
    RINGING = "RINGING"
    UNKNOWN = "UNKNOWN"


class ChannelState(_WithUnknown):
    DOWN = "Down"
    RSRVD = "Rsrvd"
    OFFHOOK = "OffHook"
    DIALING = "Dialing"
    RING = "Ring"
    RINGING = "Ringing"
    UP = "Up"
    BUSY = "Busy"
    UNKNOWN = "UNKNOWN"


HANG_UP = (EventType.STASIS_END, EventType.CHANNEL_DESTROYED)


@dataclass(frozen=True)
class Channel:
    id: str
    name: str = ""
    state: ChannelState = ChannelState.UNKNOWN
    caller_number: str | None = None
    exten: str | None = None  # dialplan extension it was in
    linkedid: str | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> Channel | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            return None
        caller, dialplan = sub(raw, "caller"), sub(raw, "dialplan")
        return cls(
            id=raw["id"],
            name=str(raw.get("name") or ""),
            state=ChannelState(str(raw.get("state") or "UNKNOWN")),
            caller_number=_str(caller.get("number")),
            exten=_str(dialplan.get("exten")),
            linkedid=_str(raw.get("linkedid")),
        )


@dataclass(frozen=True)
class AriEvent:
    type: EventType
    channel: Channel | None = None
    peer: Channel | None = None  # Dial: the channel being dialled
    args: tuple[str, ...] = ()  # StasisStart: appArgs
    dialstatus: DialStatus | None = None  # Dial; None while still dialling ("")
    cause: int | None = None  # ChannelHangupRequest, ChannelDestroyed
    recording: str | None = None  # Recording*: the recording's name
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def channel_id(self) -> str | None:
        return self.channel.id if self.channel else None


def parse_event(raw: dict[str, Any]) -> AriEvent:
    args = raw.get("args")
    status = raw.get("dialstatus")
    cause = raw.get("cause")
    recording = raw.get("recording")
    return AriEvent(
        type=EventType(str(raw.get("type") or "UNKNOWN")),
        channel=Channel.from_dict(raw.get("channel")),
        peer=Channel.from_dict(raw.get("peer")),
        args=tuple(str(a) for a in args) if isinstance(args, list) else (),
        dialstatus=DialStatus(status.upper()) if isinstance(status, str) and status else None,
        cause=as_int(cause),
        recording=_str(recording.get("name")) if isinstance(recording, dict) else None,
        raw=raw,
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
