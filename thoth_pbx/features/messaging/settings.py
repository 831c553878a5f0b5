"""The `[messaging]` table of the settings file (validated here, where it is used; pure).

Defaults are Meta's and Bitrix24's documented limits: 80 messages/s per business number
(developers.facebook.com/docs/whatsapp/throughput), 100 MB for the largest media Meta accepts
(documents; developers.facebook.com/docs/whatsapp/cloud-api/reference/media#supported-media-types)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from thoth_pbx.core.validation import FieldError, boolean, integer

_KEYS = {"messages_per_s", "media_max_mb", "media_link_ttl_s", "operator_signature", "window_notice_before_min"}


@dataclass(frozen=True)
class MessagingSettings:
    messages_per_s: int = 80  # per business phone number (Meta's default throughput)
    media_max_mb: int = 100  # WhatsApp media kept for Bitrix24 larger than this are announced, not fetched
    media_link_ttl_s: int = 86_400  # how long Bitrix24 may fetch a media link we hand it
    operator_signature: bool = True  # keep Bitrix24's "[b]Name:[/b]" line in what the customer gets
    window_notice_before_min: int = 60  # the chat is told this long before its 24-hour window closes (0: not)

    @property
    def media_max_bytes(self) -> int:
        return self.media_max_mb * 1024 * 1024

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, *, prefix: str = "messaging") -> MessagingSettings:
        data = dict(data or {})
        unknown = set(data) - _KEYS
        if unknown:
            raise FieldError(
                f"{prefix}.{sorted(unknown)[0]}", f"unknown setting; expected one of {', '.join(sorted(_KEYS))}"
            )
        return cls(
            messages_per_s=integer(f"{prefix}.messages_per_s", data.get("messages_per_s", 80), minimum=1, maximum=1000),
            media_max_mb=integer(f"{prefix}.media_max_mb", data.get("media_max_mb", 100), minimum=1, maximum=100),
            media_link_ttl_s=integer(
                f"{prefix}.media_link_ttl_s", data.get("media_link_ttl_s", 86_400), minimum=60, maximum=7 * 86_400
            ),
            operator_signature=boolean(f"{prefix}.operator_signature", data.get("operator_signature", True)),
            window_notice_before_min=integer(
                f"{prefix}.window_notice_before_min", data.get("window_notice_before_min", 60), minimum=0, maximum=1380
            ),
        )
