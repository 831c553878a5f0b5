"""The ARI client against the real Asterisk: its HTTP connections stay under a cap."""

from __future__ import annotations

import asyncio

from tests.harness.asterisk import AsteriskInstance
from thoth_pbx.clients.asterisk.ari import AriClient
from thoth_pbx.core.settings import AriTarget


def _established_to(port: int) -> int:
    """TCP connections of this machine to `port` (Asterisk's HTTP server), from /proc."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01":  # ESTABLISHED, our side
                count += 1
    return count


async def test_a_burst_of_requests_never_opens_more_connections_than_the_cap(asterisk: AsteriskInstance) -> None:
    """Asterisk refuses HTTP sessions beyond http.conf sessionlimit (100 by default); a hang-up
    burst of 200 calls went over it before the cap (docs/benchmarks-calls.md)."""
    target = AriTarget(asterisk.ari_base, asterisk.ari_user, asterisk.ari_password)
    before = _established_to(asterisk.http_port)
    ari = AriClient(target, "cap-test", max_connections=4)
    ari.start()
    try:
        await ari.wait_connected(15)
        peak = 0

        async def info() -> dict:
            nonlocal peak
            reply = await ari.request("GET", "/asterisk/info")
            peak = max(peak, _established_to(asterisk.http_port) - before)
            return reply

        replies = await asyncio.gather(*(info() for _ in range(60)))
        assert all(r["system"]["version"] for r in replies)
        assert 1 < peak <= 5, peak  # 4 for requests + the events websocket
    finally:
        await ari.stop()
