"""Channels we created (operator legs, recording snoops), until their StasisStart arrives.

A created channel enters Stasis asynchronously; using it before its StasisStart fails with 409
"Channel not in Stasis application". The creator waits on `expect()`; the event intake calls
`arrived()`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Entering:
    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[None]] = {}

    @asynccontextmanager
    async def expect(self, channel_id: str) -> AsyncIterator[asyncio.Future[None]]:
        """Register before creating the channel; await the future (with a timeout) after."""
        entered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[channel_id] = entered
        try:
            yield entered
        finally:
            self._waiting.pop(channel_id, None)

    def arrived(self, channel_id: str) -> None:
        ready = self._waiting.get(channel_id)
        if ready is not None and not ready.done():
            ready.set_result(None)
