"""`GET /metrics`: the Prometheus text format (parsed here with prometheus-client's own parser),
behind the admin credentials, and its figures move with the traffic.

Format: prometheus.io/docs/instrumenting/exposition_formats/."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.messaging import CUSTOMER, Bridge, bridge


@pytest.fixture
async def wa(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[Bridge]:  # type: ignore[no-untyped-def]
    async with bridge(tmp_path, database_url, aiohttp_server, aiohttp_client) as b:
        yield b


async def _scrape(wa: Bridge) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await wa.env.http.get("/metrics", headers=wa.env.admin)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


async def test_metrics_need_the_admin_credentials(wa: Bridge) -> None:
    resp = await wa.env.http.get("/metrics")
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Basic")


async def test_the_figures_move_with_the_traffic(wa: Bridge) -> None:
    before = await _scrape(wa)
    await wa.customer_writes("hello", wamid="wamid.m1")
    await wa.quiet()
    sent = await wa.env.sim.operator_writes(wa.env.portal, wa.line_id, CUSTOMER, "hi there", signature=False)
    assert sent["status"] == 200
    await wa.quiet()
    after = await _scrape(wa)
    assert _value(after, "thoth_messages", direction="in", status="read") == 1
    assert _total(after, "thoth_messages") - _total(before, "thoth_messages") == 2
    assert _value(after, "thoth_meta_webhook_deliveries_total", outcome="stored") > _value(
        before, "thoth_meta_webhook_deliveries_total", outcome="stored"
    )
    posts = _value(after, "thoth_graph_request_seconds_count", method="POST", outcome="ok")
    assert posts >= _value(before, "thoth_graph_request_seconds_count", method="POST", outcome="ok") + 2  # read, send
    bitrix = _value(after, "thoth_bitrix_request_seconds_count", outcome="ok")
    assert bitrix >= _value(before, "thoth_bitrix_request_seconds_count", outcome="ok") + 1
    done = _value(after, "thoth_outbox_jobs", kind="bitrix.messaging.inbound", status="done")
    assert done == _value(before, "thoth_outbox_jobs", kind="bitrix.messaging.inbound", status="done") + 1
    assert _value(after, "thoth_asterisk_connected", interface="ami") == 0  # no Asterisk in this test


async def test_the_age_of_the_oldest_waiting_job_is_reported(wa: Bridge) -> None:
    """A job due in an hour waits: its kind's oldest-waiting age is there, from its creation."""
    outbox = wa.env.services.outbox
    async with wa.env.sessions() as session, session.begin():
        await outbox.enqueue(session, "bitrix.messaging.notice", None, None, {"chat_id": "1", "text": "x"}, delay=3600)
    samples = await _scrape(wa)
    age = samples[("thoth_outbox_oldest_waiting_seconds", (("kind", "bitrix.messaging.notice"),))]
    assert 0 <= age < 60
    assert _value(samples, "thoth_outbox_jobs", kind="bitrix.messaging.notice", status="pending") == 1
