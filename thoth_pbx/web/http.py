"""Admin API plumbing: HTTP Basic auth, JSON errors that name the field, generic CRUD routes."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from thoth_pbx.web.login_throttle import LoginThrottle
from thoth_pbx.features.directory.service import RESOURCES, Directory, Resource
from thoth_pbx.core.secrets import constant_time_equal
from thoth_pbx.core.validation import FieldError, ascii_digits, json_body

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ADMIN_PREFIX = "/api/admin/"


def error_response(field: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": {"field": field, "message": message}}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except FieldError as exc:
        return error_response(exc.field, exc.message, exc.status)
    except web.HTTPException as exc:
        if request.path.startswith("/api/") and exc.status >= 400 and exc.content_type != "application/json":
            return error_response("path" if exc.status in (404, 405) else "request", exc.reason, exc.status)
        raise


def admin_auth(user: str, password: str, throttle: LoginThrottle | None = None) -> Callable[..., Awaitable[web.StreamResponse]]:
    expected = f"{user}:{password}"
    limiter = throttle or LoginThrottle()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX) or request.path == ADMIN_PREFIX.rstrip("/"):
            address = request.remote or "unknown"
            wait = limiter.retry_after(address)
            if wait is not None:
                response = error_response("authorization", f"too many failed logins; try again in {wait} s", 429)
                response.headers["Retry-After"] = str(wait)
                return response
            header = request.headers.get("Authorization", "")
            if not _authorised(header, expected):
                if header:  # a browser's first, credential-less request is not a failed login
                    failures = limiter.failed(address)
                    # never the password, nor the user name typed (it is sometimes the password)
                    log.warning("admin login failed", extra={"remote": address, "failures": failures,
                                                             "user_known": _given_user(header) == user})
                response = error_response("authorization", "admin credentials required (HTTP Basic)", 401)
                response.headers["WWW-Authenticate"] = 'Basic realm="thoth-pbx admin"'
                return response
            limiter.succeeded(address)
        return await handler(request)

    return middleware


def _given_user(header: str) -> str | None:
    scheme, _, encoded = header.partition(" ")
    try:
        return base64.b64decode(encoded.strip(), validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return None


def _authorised(header: str, expected: str) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return constant_time_equal(given, expected)


async def read_json(request: web.Request) -> Any:
    if not request.can_read_body:
        raise FieldError("body", "a JSON object is required")
    return json_body(await request.read())


def object_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not ascii_digits(raw):
        raise FieldError("id", "must be a positive whole number", 404)
    return int(raw)


def crud_routes(directory: Directory) -> list[web.RouteDef]:
    routes: list[web.RouteDef] = []
    for resource in RESOURCES.values():
        routes.extend(_resource_routes(directory, resource))

    async def rotate(request: web.Request) -> web.Response:
        body = await read_json(request)
        which = body.get("secret") if isinstance(body, dict) else None
        return web.json_response(await directory.rotate_waba_secret(object_id(request), which))

    routes.append(web.post("/api/admin/wabas/{id}/rotate", rotate))
    return routes


def _resource_routes(directory: Directory, resource: Resource) -> list[web.RouteDef]:
    base = f"{ADMIN_PREFIX}{resource.name}"

    async def list_(request: web.Request) -> web.Response:
        return web.json_response({"items": await directory.list(resource)})

    async def create(request: web.Request) -> web.Response:
        created = await directory.create(resource, await read_json(request))
        log.info("admin created", extra={"resource": resource.name, "id": created["id"]})
        return web.json_response(created, status=201)

    async def get(request: web.Request) -> web.Response:
        return web.json_response(await directory.get(resource, object_id(request)))

    async def patch(request: web.Request) -> web.Response:
        updated = await directory.update(resource, object_id(request), await read_json(request))
        log.info("admin updated", extra={"resource": resource.name, "id": updated["id"]})
        return web.json_response(updated)

    async def delete(request: web.Request) -> web.Response:
        obj_id = object_id(request)
        await directory.delete(resource, obj_id)
        log.info("admin deleted", extra={"resource": resource.name, "id": obj_id})
        return web.Response(status=204)

    return [
        web.get(base, list_),
        web.post(base, create),
        web.get(base + "/{id}", get),
        web.patch(base + "/{id}", patch),
        web.delete(base + "/{id}", delete),
    ]
