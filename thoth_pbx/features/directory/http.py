"""Admin CRUD routes for WABA accounts, phones and app instances, and the secret rotation."""

from __future__ import annotations

import logging

from aiohttp import web

from thoth_pbx.core.http import ADMIN_PREFIX, object_id, read_json
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory.service import RESOURCES, Directory, Resource

log = logging.getLogger(__name__)


def crud_routes(directory: Directory) -> list[web.RouteDef]:
    routes: list[web.RouteDef] = []
    for resource in RESOURCES.values():
        routes.extend(_resource_routes(directory, resource))

    async def rotate(request: web.Request) -> web.Response:
        body = await read_json(request)
        which = body.get("secret") if isinstance(body, dict) else None
        if not isinstance(which, str):
            raise FieldError("secret", "must be verify_token or api_key")
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
