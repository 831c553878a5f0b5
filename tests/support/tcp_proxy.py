"""A TCP relay that can go silent: a network cut between a process and its database (or any
server), as both ends see it: no FIN, no RST, just no bytes."""

from __future__ import annotations

import asyncio
import contextlib


class FreezableProxy:
    """A TCP relay to PostgreSQL that can stop passing bytes without closing anything: a network
    cut, as the owner and the server each see it (no FIN, no RST, just silence)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.frozen = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            if self.frozen.is_set():
                await asyncio.Event().wait()  # swallow, forever: the cable is cut
            dst.write(data)
            await dst.drain()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()
        if self.server is not None:
            self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
