"""Customers' WhatsApp media handed to Bitrix24 as signed, expiring links under `public_url`.

Why links and not an upload to the portal: imconnector.send.messages takes `files: [{url, name}]`
and the portal fetches each URL itself (bitrix24-rest.md §2); an upload would need the disk scope
and a folder we would own on every portal. Meta's media URL lives 5 minutes and needs our token,
so we fetch it first (Graph `GET /{media-id}`, then the URL with `Authorization: Bearer`), keep it
under `media_dir` within the size cap, and sign a link that works for `media_link_ttl_s` seconds.
Files older than that are swept. The file of one wamid has one name, so a retried job reuses it.

Source: developers.facebook.com/docs/whatsapp/cloud-api/reference/media (retrieve and download)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import mimetypes
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from thoth_pbx.clients.meta.graph import GraphClient, MediaTooLarge
from thoth_pbx.core.shapes import as_int

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_FILE_ID = re.compile(r"[0-9a-f]{40}")


class MediaChanged(Exception):
    """What Meta served does not match the sha256 the webhook announced: fetch again later."""


@dataclass(frozen=True)
class StoredMedia:
    file_id: str
    name: str
    mime_type: str
    size: int


def safe_name(name: str | None, mime_type: str, fallback: str) -> str:
    """A file name that is safe in a URL path and on any disk, with an extension for the type."""
    base = _SAFE_NAME.sub("_", (name or "").strip()).strip("._")[:100]
    if not base:
        base = fallback
    if "." not in base:
        base += mimetypes.guess_extension(mime_type.split(";")[0].strip()) or ".bin"
    return base


class MediaStore:
    def __init__(
        self,
        graph: GraphClient,
        directory: Path,
        key: bytes,
        public_url: str,
        *,
        max_bytes: int,
        ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._graph = graph
        self.directory = directory
        self._key = key
        self._public_url = public_url.rstrip("/")
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock

    def _paths(self, file_id: str) -> tuple[Path, Path]:
        return self.directory / f"{file_id}.bin", self.directory / f"{file_id}.json"

    async def fetch(self, wamid: str, media_id: str, token: str, *, name: str | None, kind: str) -> StoredMedia:
        """Fetch one customer's file (once per wamid). Raises GraphError (transient ones are
        retried by the job), MediaTooLarge (over the cap) or MediaChanged."""
        file_id = hashlib.sha1(f"{wamid}\0{media_id}".encode()).hexdigest()
        data_path, meta_path = self._paths(file_id)
        if data_path.exists() and meta_path.exists():
            stored = json.loads(meta_path.read_text())
            return StoredMedia(file_id, stored["name"], stored["mime_type"], int(stored["size"]))
        info = await self._graph.get(media_id, token)
        url = info.get("url")
        mime_type = str(info.get("mime_type") or "application/octet-stream")
        announced = as_int(info.get("file_size"))
        if announced is not None and announced > self.max_bytes:
            raise MediaTooLarge(f"the file has {announced} bytes, over the {self.max_bytes}-byte cap")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise MediaChanged(f"Graph gave no download URL for media {media_id}")
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = data_path.with_suffix(".part")
        size, digest = await self._graph.download(url, token, partial, max_bytes=self.max_bytes)
        expected = info.get("sha256")
        if isinstance(expected, str) and expected and expected != digest:
            partial.unlink(missing_ok=True)
            raise MediaChanged(f"media {media_id}: sha256 {digest} is not the announced {expected}")
        stored = StoredMedia(file_id, safe_name(name, mime_type, kind), mime_type, size)
        os.replace(partial, data_path)
        meta_path.write_text(json.dumps({"name": stored.name, "mime_type": mime_type, "size": size}))
        return stored

    def _signature(self, file_id: str, expires: int) -> str:
        return hmac.new(self._key, f"{file_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    def link(self, stored: StoredMedia) -> str:
        expires = int(self._clock()) + self.ttl_s
        for path in self._paths(stored.file_id):  # the sweep counts from the newest link
            with contextlib.suppress(FileNotFoundError):
                os.utime(path)
        query = urlencode({"expires": expires, "sig": self._signature(stored.file_id, expires)})
        return f"{self._public_url}/api/media/{stored.file_id}/{quote(stored.name)}?{query}"

    def open(self, file_id: str, expires: str, signature: str) -> tuple[Path, str] | None:
        """The file behind a signed link, or None (bad or expired signature, or swept)."""
        if not _FILE_ID.fullmatch(file_id) or not expires.isdigit():
            return None
        if not hmac.compare_digest(self._signature(file_id, int(expires)), signature):
            return None
        if int(expires) < self._clock():
            return None
        data_path, meta_path = self._paths(file_id)
        if not data_path.exists() or not meta_path.exists():
            return None
        return data_path, str(json.loads(meta_path.read_text())["mime_type"])

    def sweep(self) -> int:
        """Delete files no link can reach any more; returns how many."""
        if not self.directory.exists():
            return 0
        cutoff = self._clock() - self.ttl_s - 60
        removed = 0
        for path in self.directory.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
