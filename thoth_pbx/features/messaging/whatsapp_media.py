"""Which WhatsApp message type carries an operator's file, and whether Meta will take it (pure).

Meta's supported media (developers.facebook.com/docs/whatsapp/cloud-api/reference/media#supported-media-types):
image jpeg/png 5 MB; video mp4/3gpp 16 MB; audio aac/amr/mpeg/mp4/ogg 16 MB; sticker webp
500 KB (animated; 100 KB static); documents (text, pdf, Office formats) 100 MB. Anything else
is refused here, before any upload, with a reason the operator can act on."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024
_KINDS: dict[str, tuple[str, int]] = {
    "image/jpeg": ("image", 5 * MB),
    "image/png": ("image", 5 * MB),
    "video/mp4": ("video", 16 * MB),
    "video/3gpp": ("video", 16 * MB),
    "audio/aac": ("audio", 16 * MB),
    "audio/amr": ("audio", 16 * MB),
    "audio/mpeg": ("audio", 16 * MB),
    "audio/mp4": ("audio", 16 * MB),
    "audio/ogg": ("audio", 16 * MB),
    "image/webp": ("sticker", 500 * 1024),
    "text/plain": ("document", 100 * MB),
    "application/pdf": ("document", 100 * MB),
    "application/msword": ("document", 100 * MB),
    "application/vnd.ms-excel": ("document", 100 * MB),
    "application/vnd.ms-powerpoint": ("document", 100 * MB),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ("document", 100 * MB),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ("document", 100 * MB),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ("document", 100 * MB),
}
CAPTIONED = ("image", "video", "document")


@dataclass(frozen=True)
class MediaPlan:
    kind: str | None  # image | video | audio | sticker | document; None: refused
    limit: int
    refusal: str | None = None


def plan(mime_type: str | None, size: int | None) -> MediaPlan:
    mime = (mime_type or "").split(";")[0].strip().lower()
    known = _KINDS.get(mime)
    if known is None:
        return MediaPlan(None, 0, f"WhatsApp does not accept files of type {mime or 'unknown'}")
    kind, limit = known
    if size is not None and size > limit:
        return MediaPlan(
            None, limit, f"the file is {size / MB:.1f} MB; WhatsApp takes at most {limit / MB:g} MB for {kind}s"
        )
    return MediaPlan(kind, limit)
