"""Structured (JSON-lines) logging with a last line of defence against leaked secrets.

Every secret that passes through the encrypted column type, the settings or the HTTP
clients is registered here, and the formatter replaces any occurrence in a log record
with its masked form. Code should still never log secrets; this catches mistakes.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

_lock = threading.Lock()
_known: set[str] = set()
_MAX_KNOWN = 10_000
_MIN_LEN = 6  # shorter values would redact ordinary words


def register_secret(value: str | None) -> None:
    if not value or len(value) < _MIN_LEN:
        return
    with _lock:
        if len(_known) >= _MAX_KNOWN:
            _known.clear()
        _known.add(value)


def redact(text: str) -> str:
    from thoth_pbx.core.secrets import mask

    with _lock:
        known = [s for s in _known if s in text]
    for secret in sorted(known, key=len, reverse=True):
        text = text.replace(secret, mask(secret) or "…")
    return text


_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, default=str, ensure_ascii=False))


def setup_logging(level: str = "info", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is useful; its query strings may hold api-keys, so the
    # formatter's redaction covers it as long as keys are registered.
    logging.getLogger("asyncio").setLevel("WARNING")
    logging.getLogger("alembic.runtime.plugins").setLevel("WARNING")
