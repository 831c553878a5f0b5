"""Media as the Cloud API keeps it: upload checks, the media node and short-lived download URLs.

Source for everything here: developers.facebook.com/documentation/business-messaging/whatsapp/
business-phone-numbers/media (formerly .../cloud-api/reference/media): upload parameters
(`messaging_product`, `file`, `type`) -> `{"id"}`; `GET /{media_id}` -> `messaging_product, url,
mime_type, sha256, file_size, id`; the optional `phone_number_id` must be the number the media was
uploaded on; URLs expire after 5 minutes; a download without the token fails and a failed download
is a 404; the supported-media table (types and sizes); "mismatched MIME type (131053)"."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from thoth_pbx.sandbox.meta.state import GraphFail, invalid

KB = 1024
MB = 1024 * KB

# MIME type -> (the message type it can be sent as, max size in bytes): the supported-media table.
SUPPORTED_MEDIA: dict[str, tuple[str, int]] = {
    "audio/aac": ("audio", 16 * MB),
    "audio/amr": ("audio", 16 * MB),
    "audio/mpeg": ("audio", 16 * MB),
    "audio/mp4": ("audio", 16 * MB),
    "audio/ogg": ("audio", 16 * MB),
    "text/plain": ("document", 100 * MB),
    "application/vnd.ms-excel": ("document", 100 * MB),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ("document", 100 * MB),
    "application/msword": ("document", 100 * MB),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ("document", 100 * MB),
    "application/vnd.ms-powerpoint": ("document", 100 * MB),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ("document", 100 * MB),
    "application/pdf": ("document", 100 * MB),
    "image/jpeg": ("image", 5 * MB),
    "image/png": ("image", 5 * MB),
    "image/webp": ("sticker", 500 * KB),  # animated; a static sticker: STATIC_STICKER_MAX
    "video/3gpp": ("video", 16 * MB),
    "video/mp4": ("video", 16 * MB),
}

STATIC_STICKER_MAX = 100 * KB

MAX_MEDIA = 100 * MB  # "The maximum supported file size for media messages on Cloud API is 100MB"

MEDIA_URL_TTL = 300.0  # "Media URLs expire after 5 minutes"

UPLOAD_FIELDS = ("messaging_product", "file", "type", "ttl_minutes", "access_token")


@dataclass
class SimMedia:
    """One stored media asset. `inbound`: sent by a WhatsApp user (announced by a webhook), not
    uploaded by the business, so it was uploaded on no business number."""

    media_id: str
    phone_number_id: str
    data: bytes
    mime_type: str
    inbound: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def file_size(self) -> int:
        return len(self.data)

    @property
    def kind(self) -> str | None:
        """The message type this media can be sent as (None: not sendable)."""
        known = SUPPORTED_MEDIA.get(base_mime(self.mime_type))
        return known[0] if known else None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.media_id,
            "phone_number_id": self.phone_number_id,
            "mime_type": self.mime_type,
            "sha256": self.sha256,
            "file_size": self.file_size,
            "inbound": self.inbound,
        }


@dataclass
class Upload:
    """The `file` part of a multipart upload."""

    filename: str | None
    content_type: str | None
    data: bytes


def base_mime(mime_type: str) -> str:
    """`audio/ogg; codecs=opus` -> `audio/ogg`."""
    return mime_type.split(";", 1)[0].strip().lower()


def new_media_id() -> str:
    """Numeric, as Meta's media ids are (e.g. 1037543291543636)."""
    return str(10**15 + secrets.randbelow(9 * 10**15))


def webp_animated(data: bytes) -> bool:
    """An animated WebP has a VP8X header with the animation flag (bit 1 of its flags byte)."""
    return data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8X" and len(data) > 20 and bool(data[20] & 0x02)


def check_media(mime_type: str, data: bytes) -> str:
    """Refuse what the supported-media table refuses (131053, as Meta answers a MIME problem);
    return the message type the media can be sent as."""
    mime = base_mime(mime_type)
    known = SUPPORTED_MEDIA.get(mime)
    if known is None:
        raise GraphFail(
            131053,
            details=f"Param file has an unsupported MIME type {mime!r}; see the supported media types",
        )
    kind, limit = known
    if kind == "sticker" and not webp_animated(data):
        limit = STATIC_STICKER_MAX
    if not data:
        raise GraphFail(131053, details="Param file is empty")
    if len(data) > limit:
        raise GraphFail(131053, details=f"Param file is {len(data)} bytes; {mime} allows at most {_size(limit)}")
    return kind


def _size(limit: int) -> str:
    return f"{limit // MB} MB" if limit >= MB else f"{limit // KB} KB"


def upload_mime(fields: dict[str, str], file: Upload | None) -> tuple[str, bytes]:
    """Check the upload's form fields; return the MIME type and bytes to store.

    The file part's own Content-Type is the media's type (Meta's curl example sets only
    `file=@x;type=...`); the `type` field, when sent, must agree with it (a mismatched MIME type is
    131053). A part without a type (or application/octet-stream) takes the `type` field."""
    for name in fields:
        if name not in UPLOAD_FIELDS:
            raise invalid(f"Param {name} is not a valid parameter")
    if "messaging_product" not in fields:
        raise invalid("The parameter messaging_product is required")
    if fields["messaging_product"] != "whatsapp":
        raise invalid("Param messaging_product must be whatsapp")
    if file is None:
        raise invalid("The parameter file is required")
    if "ttl_minutes" in fields and not (fields["ttl_minutes"].isdigit() and 60 <= int(fields["ttl_minutes"]) <= 43200):
        raise invalid("Param ttl_minutes must be a number of minutes from 60 to 43200")
    part = base_mime(file.content_type) if file.content_type else ""
    declared = base_mime(fields["type"]) if fields.get("type") else ""
    if part in ("", "application/octet-stream"):
        part = declared
    if not part:
        raise invalid("The parameter type is required")
    if declared and declared != part:
        raise GraphFail(131053, details=f"Param type ({declared}) does not match the file's MIME type ({part})")
    check_media(part, file.data)
    return part, file.data


async def read_upload(request: web.Request) -> tuple[dict[str, str], Upload | None]:
    """Read a multipart/form-data body: text fields and the `file` part (read up to one byte past
    the largest size Meta takes, so an oversized file is refused without holding all of it)."""
    fields: dict[str, str] = {}
    upload: Upload | None = None
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError):
        raise invalid("The request body is not valid multipart/form-data") from None
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise invalid("Nested multipart bodies are not supported")
        name = part.name or ""
        if name == "file" or part.filename is not None:
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_MEDIA:
                chunk = await part.read_chunk()
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > MAX_MEDIA:
                raise GraphFail(131053, details=f"Param file is larger than {MAX_MEDIA // MB} MB")
            upload = Upload(part.filename, part.headers.get("Content-Type"), b"".join(chunks))
        else:
            fields[name] = await part.text()
    return fields, upload


def media_view(media: SimMedia, url: str) -> dict[str, Any]:
    """The media node as `GET /{media_id}` answers it."""
    return {
        "messaging_product": "whatsapp",
        "url": url,
        "mime_type": media.mime_type,
        "sha256": media.sha256,
        "file_size": media.file_size,
        "id": media.media_id,
    }
