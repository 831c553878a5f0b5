"""The Graph client pointed at a Meta simulator served on loopback HTTP (the simulator rides on
the client as `client.sim`, so a test can look at what Meta received)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from thoth_pbx.clients.meta.graph import GraphClient, RetryPolicy
from thoth_pbx.sandbox import meta as sim


@asynccontextmanager
async def graph_on_simulator(aiohttp_server: Any, seed: sim.Seed, retry: RetryPolicy) -> AsyncIterator[GraphClient]:
    simulator = sim.seeded(seed)
    server = await aiohttp_server(simulator.app())
    client = GraphClient(str(server.make_url("")), "v25.0", retry=retry)
    client.sim = simulator  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        await client.close()
