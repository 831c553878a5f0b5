"""aiohttp helpers every HTTP handler uses: the error shape, JSON bodies, ids from the path."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from thoth_pbx.core.validation import FieldError, ascii_digits, json_body

ADMIN_PREFIX = "/api/admin/"
METRICS_PATH = "/metrics"  # the Prometheus scrape, behind the admin credentials like ADMIN_PREFIX


def error_response(field: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": {"field": field, "message": message}}, status=status)


async def read_json(request: web.Request) -> Any:
    if not request.can_read_body:
        raise FieldError("body", "a JSON object is required")
    return json_body(await request.read())


def object_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not ascii_digits(raw):
        raise FieldError("id", "must be a positive whole number", 404)
    return int(raw)
