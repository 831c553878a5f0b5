"""The process's own measurements (request latencies, webhook deliveries), in one registry that
`GET /metrics` exposes next to what it reads from the database (web/metrics.py).

prometheus-client is the standard library for this (docs/decisions.md): its Histogram and
Counter are thread-safe and its text exposition is what Prometheus parses. These live in a
registry of our own rather than the library's global one, so nothing else in the process leaks
into our output."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

INSTRUMENTS = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

GRAPH_SECONDS = Histogram(
    "thoth_graph_request_seconds",
    "Meta Graph API requests: time to the answer, by HTTP method and outcome (ok, or Meta's error code)",
    ["method", "outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=INSTRUMENTS,
)
BITRIX_SECONDS = Histogram(
    "thoth_bitrix_request_seconds",
    "Bitrix24 REST requests (a batch counts once): time to the answer, by outcome (ok, or Bitrix's error code)",
    ["outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=INSTRUMENTS,
)
WEBHOOK_DELIVERIES = Counter(
    "thoth_meta_webhook_deliveries",
    "Meta webhook deliveries answered, by outcome (stored, refused)",
    ["outcome"],
    registry=INSTRUMENTS,
)
CALL_ANNOUNCE_SECONDS = Histogram(
    "thoth_call_announce_seconds",
    "WhatsApp calls: from the call stored by our Stasis app to Bitrix24's answer to its register "
    "(what an operator waits before the call card can show)",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0),
    registry=INSTRUMENTS,
)
