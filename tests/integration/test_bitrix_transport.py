"""The portals' HTTP transport: what counts as "certainly not sent", redirects, bodies."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.support.bitrix import free_port
from thoth_pbx.clients.bitrix.transport import PortalHttp, SendFailed


async def test_a_refused_connection_was_certainly_not_delivered() -> None:
    http = PortalHttp()
    try:
        with pytest.raises(SendFailed) as failed:
            await http.post_json(f"http://127.0.0.1:{free_port()}/rest/profile", {"auth": "x"})
        assert failed.value.maybe_delivered is False
    finally:
        await http.aclose()


async def test_a_connection_dropped_after_the_request_may_have_been_delivered() -> None:
    received = asyncio.Event()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request arrived ...
        received.set()
        writer.close()  # ... and the portal went away before answering

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = PortalHttp()
    try:
        with pytest.raises(SendFailed) as failed:
            await http.post_json(f"http://127.0.0.1:{port}/rest/telephony.externalcall.register", {"auth": "x"})
        assert received.is_set() and failed.value.maybe_delivered is True
    finally:
        await http.aclose()
        server.close()


async def test_redirects_are_returned_and_bodies_decoded(aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    async def moved(_request: web.Request) -> web.Response:
        raise web.HTTPFound("https://new.bitrix24.com/rest/profile")

    async def plain(_request: web.Request) -> web.Response:
        return web.Response(status=503, text="<html>maintenance</html>")

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"result": await request.json(), "query": dict(request.query)})

    app = web.Application()
    app.router.add_post("/moved", moved)
    app.router.add_post("/plain", plain)
    app.router.add_route("*", "/echo", echo)
    server = await aiohttp_server(app)
    http = PortalHttp()
    try:
        reply = await http.post_json(str(server.make_url("/moved")), {})
        assert reply.is_redirect and reply.headers["Location"] == "https://new.bitrix24.com/rest/profile"
        reply = await http.post_json(str(server.make_url("/plain")), {})
        assert reply.status == 503 and reply.body == "<html>maintenance</html>"
        reply = await http.post_json(str(server.make_url("/echo")), {"PHONE_NUMBER": "+7 999", "USER_ID": 2})
        assert reply.status == 200 and reply.body["result"] == {"PHONE_NUMBER": "+7 999", "USER_ID": 2}
    finally:
        await http.aclose()
