"""`GET /metrics`: the Prometheus text format, behind the admin's HTTP Basic credentials (a
scrape config's `basic_auth`), as docs/metrics.md shows.

Two sources. What the database holds (calls by state, ended calls by status code, messages by
direction and status, outbox jobs by kind and status with the age of the oldest waiting one) is
read at scrape time, so every instance on one database reports the same, and a restart loses
nothing. What only this process sees (request latencies, the announce latency, webhook
deliveries, AMI/ARI connection state, whether it owns the Stasis app of an Asterisk) comes from
core/metrics.py, the clients and features/calls/leadership.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.asterisk.ami import AmiClient
from thoth_pbx.clients.asterisk.ari import AriClient
from thoth_pbx.core.http import METRICS_PATH
from thoth_pbx.core.metrics import INSTRUMENTS
from thoth_pbx.features.calls.models import Call
from thoth_pbx.features.messaging.models import MessagingMessage
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.store.types import utcnow


@dataclass
class Snapshot:
    calls: list[tuple[str, int]] = field(default_factory=list)
    ended: list[tuple[str, int]] = field(default_factory=list)
    messages: list[tuple[str, str, int]] = field(default_factory=list)
    jobs: list[tuple[str, str, int]] = field(default_factory=list)
    oldest: list[tuple[str, float]] = field(default_factory=list)
    connected: dict[tuple[str, str], bool] = field(default_factory=dict)  # (interface, server) -> up
    owner: dict[str, bool] = field(default_factory=dict)  # Asterisk (ARI URL) -> owns its Stasis app


# Asterisk (ARI URL) -> this instance owns its Stasis app
Owners = Callable[[], dict[str, bool]]
# each configured Asterisk: its name, AMI and ARI clients
Links = list[tuple[str, AmiClient, AriClient]]


async def take(sessions: async_sessionmaker[AsyncSession], links: Links, owners: Owners | None = None) -> Snapshot:
    now = utcnow()
    async with sessions() as session:
        calls = (await session.execute(select(Call.state, func.count()).group_by(Call.state))).all()
        ended = (
            await session.execute(
                select(Call.status_code, func.count()).where(Call.state == "ended").group_by(Call.status_code)
            )
        ).all()
        messages = (
            await session.execute(
                select(MessagingMessage.direction, MessagingMessage.status, func.count()).group_by(
                    MessagingMessage.direction, MessagingMessage.status
                )
            )
        ).all()
        jobs = (
            await session.execute(
                select(OutboxJob.kind, OutboxJob.status, func.count()).group_by(OutboxJob.kind, OutboxJob.status)
            )
        ).all()
        oldest = (
            await session.execute(
                select(OutboxJob.kind, func.min(OutboxJob.created_at))
                .where(OutboxJob.status.in_(("pending", "running")))
                .group_by(OutboxJob.kind)
            )
        ).all()
    return Snapshot(
        calls=[(str(s), int(n)) for s, n in calls],
        ended=[(str(c or "none"), int(n)) for c, n in ended],
        messages=[(str(d), str(s), int(n)) for d, s, n in messages],
        jobs=[(str(k), str(s), int(n)) for k, s, n in jobs],
        oldest=[(str(k), max(0.0, (now - at).total_seconds())) for k, at in oldest if at is not None],
        connected={
            key: up
            for name, ami, ari in links
            for key, up in (((("ami", name)), ami.connected), ((("ari", name)), ari.connected))
        },
        owner=owners() if owners is not None else {},
    )


class SnapshotCollector(Collector):
    """Yields the snapshot taken just before this scrape."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        calls = GaugeMetricFamily("thoth_calls", "WhatsApp calls in the database by state", labels=["state"])
        for state, n in snap.calls:
            calls.add_metric([state], n)
        yield calls
        ended = CounterMetricFamily(
            "thoth_calls_ended", "Ended WhatsApp calls by SIP status code (200 answered)", labels=["status_code"]
        )
        for code, n in snap.ended:
            ended.add_metric([code], n)
        yield ended
        messages = GaugeMetricFamily(
            "thoth_messages",
            "Bridged WhatsApp messages by direction (in, out) and status",
            labels=["direction", "status"],
        )
        for direction, status, n in snap.messages:
            messages.add_metric([direction, status], n)
        yield messages
        jobs = GaugeMetricFamily("thoth_outbox_jobs", "Outbox jobs by kind and status", labels=["kind", "status"])
        for kind, status, n in snap.jobs:
            jobs.add_metric([kind, status], n)
        yield jobs
        age = GaugeMetricFamily(
            "thoth_outbox_oldest_waiting_seconds", "Age of the oldest unfinished outbox job by kind", labels=["kind"]
        )
        for kind, seconds in snap.oldest:
            age.add_metric([kind], seconds)
        yield age
        connected = GaugeMetricFamily(
            "thoth_asterisk_connected",
            "1 while this instance's AMI / ARI connection to the Asterisk (its configured name) is up",
            labels=["interface", "server"],
        )
        for (interface, server), up in sorted(snap.connected.items()):
            connected.add_metric([interface, server], 1.0 if up else 0.0)
        yield connected
        owner = GaugeMetricFamily(
            "thoth_stasis_owner",
            "1 while this instance holds the Stasis app of the Asterisk (its ARI URL), 0 while it stands by",
            labels=["asterisk"],
        )
        for asterisk, owns in sorted(snap.owner.items()):
            owner.add_metric([asterisk], 1.0 if owns else 0.0)
        yield owner


def metrics_routes(
    sessions: async_sessionmaker[AsyncSession], links: Links, owners: Owners | None = None
) -> list[web.RouteDef]:
    registry = CollectorRegistry(auto_describe=True)
    collector = SnapshotCollector()
    registry.register(collector)

    async def scrape(request: web.Request) -> web.Response:
        collector.snapshot = await take(sessions, links, owners)
        body = generate_latest(registry) + generate_latest(INSTRUMENTS)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [web.get(METRICS_PATH, scrape)]
