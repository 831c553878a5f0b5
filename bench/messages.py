"""The messaging bridge under load: WhatsApp -> Bitrix24 throughput to a rate-limited portal,
and latency both ways at 50 messages/s.

    python bench/messages.py [--messages 6000] [--customers 200] [--latency-seconds 20]

`thoth-pbx serve` runs as its own process (SQLite) between the Meta simulator and the Bitrix24
simulator, both in this process (loopback only; tests/support/bridge_process.py).

- Throughput: `--messages` WhatsApp messages from `--customers` customers, posted as fast as
  Meta would (deliveries of 50), to one portal limited to 2 requests/s with a burst of 50
  (a standard plan). `inbound_per_s` is the sustained rate, counted after the portal's burst
  is spent (from the 60th REST request on); `limit_errors` counts QUERY_LIMIT_EXCEEDED;
  `serve_cpu_*` is the CPU the `serve` process used meanwhile (what bounds the rate once
  queued messages share commands: one event loop, one core).
- Latency at 50 messages/s over 50 chats: `inbound_ms_*` from our webhook's 200 to the message
  executing at the Bitrix24 simulator; `outbound_ms_*` from the simulated portal posting
  ONIMCONNECTORMESSAGEADD to the send reaching the Meta simulator. The headline figures use a
  portal allowing 50 requests/s (our path, not the portal's bucket); `latency_standard_portal`
  repeats them on a standard portal, where 2 requests/s bound the inbound wait (messages wait
  for the next request slot and share it: about 250 ms on average). `outbound_floor_ms_p50` is
  a bare loopback request from this process to the Meta simulator made at the same moments
  (every fifth message), and `outbound_ratio_p50` ours / that floor.
- `template_ms_*`: an operator's template command (`template-order_update+en_US+...`, the
  account's templates already synchronised, as they are in production) from the portal posting
  the event to the template send reaching the Meta simulator, paced at 50/s.
- `lost` / `duplicated`: messages of all scenarios that never arrived / arrived twice.

Prints one JSON object with the figures and the machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.bitrix import wait_until  # noqa: E402
from tests.support.bridge_process import BridgeProcess  # noqa: E402
from thoth_pbx.sandbox.bitrix import Recorded  # noqa: E402

SEND = "imconnector.send.messages"
RATE = 50.0  # messages per second in the latency scenarios


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def customers(n: int) -> list[str]:
    return [f"1555{i:07d}" for i in range(n)]


async def throughput(tmp: Path, count: int, people: int) -> dict[str, Any]:
    bridge = BridgeProcess(tmp / "throughput", f"sqlite:///{tmp / 'throughput' / 'db.sqlite3'}", rate=2.0, burst=50)
    (tmp / "throughput").mkdir()
    arrivals: list[float] = []
    requests: list[float] = []

    def seen(_portal: object, entry: Recorded) -> None:
        if entry.method == SEND and entry.ok:
            arrivals.extend([time.monotonic()] * len(entry.params.get("MESSAGES") or []))

    try:
        await bridge.open()
        bridge.sim.recorder.clear()
        bridge.sim.on_processed = seen
        who = customers(people)
        wamids = [f"wamid.t{i}" for i in range(count)]
        messages = [(who[i % people], f"t {i}", wamids[i]) for i in range(count)]
        assert bridge.proc is not None
        cpu_before = cpu_seconds(bridge.proc.pid)
        started = time.monotonic()
        for i in range(0, count, 50):
            await bridge.customers_write(messages[i : i + 50])
        posted = time.monotonic() - started
        await wait_until(lambda: len(arrivals) >= count, timeout=count / 50 + 120, what="every message at Bitrix24")
        serve_cpu = cpu_seconds(bridge.proc.pid) - cpu_before
        wall = time.monotonic() - started
        requests = [r.at for r in bridge.sim.recorder.requests]
        limit_errors = bridge.sim.recorder.errors("QUERY_LIMIT_EXCEEDED")
        texts = Counter(m["message"]["id"] for m in bridge.in_bitrix())
        send_calls = bridge.sim.recorder.count(SEND, ok=True)
    finally:
        bridge.sim.on_processed = None
        await bridge.close()
    steady_from = requests[59] if len(requests) > 60 else requests[0]
    steady = [t for t in arrivals if t >= steady_from]
    span = max(arrivals) - steady_from if steady else 0.0
    return {
        "inbound_per_s": round(len(steady) / span, 1) if span > 0 else None,
        "inbound_all_per_s": round(count / (max(arrivals) - started), 1),
        "webhook_post_s": round(posted, 2),
        "rest_requests": len(requests),
        "messages_per_request": round(count / max(1, len(requests)), 1),
        # what bounds the rate: thoth-pbx's one event loop (100 % = one core busy all along)
        "serve_cpu_percent_of_one_core": round(100 * serve_cpu / wall, 1),
        "serve_cpu_ms_per_message": round(1000 * serve_cpu / count, 2),
        "send_calls": send_calls,
        "limit_errors": limit_errors,
        "lost": sum(1 for w in wamids if texts[w] == 0),
        "duplicated": sum(1 for w in wamids if texts[w] > 1),
    }


async def latency(tmp: Path, seconds: float, limit: tuple[int, int] | None) -> dict[str, Any]:
    """Paced at RATE both ways; `limit` (requests/s, burst) given to the portal and to our
    service, None for a standard portal (2/s, burst 50)."""
    where = tmp / f"latency-{'standard' if limit is None else limit[0]}"
    where.mkdir()
    bridge = BridgeProcess(where, f"sqlite:///{where / 'db.sqlite3'}", rate=2.0, burst=50)
    arrived: dict[str, float] = {}

    def seen(_portal: object, entry: Recorded) -> None:
        if entry.method == SEND and entry.ok:
            for m in entry.params.get("MESSAGES") or []:
                arrived.setdefault(str(m["message"]["id"]), time.monotonic())

    who = customers(50)
    count = int(seconds * RATE)
    try:
        await bridge.open()
        if limit is not None:
            await bridge.portal_limit(*limit)
        bridge.sim.on_processed = seen
        # the chats exist and the first answers went (so no first-message work is measured)
        await bridge.customers_write([(c, "hello", f"wamid.open.{c}") for c in who])
        await wait_until(lambda: len(arrived) >= len(who), timeout=60, what="the chats")
        for c in who:
            await bridge.operator_writes(c, "welcome")
        await wait_until(lambda: len(bridge.sent) >= len(who), timeout=60, what="the first answers")
        await bridge.meta.drain_webhooks()  # their statuses, then a quiet portal: not part of the measure
        reading = "imconnector.send.status.reading"  # several messages per call: counted by message

        def read_reported() -> int:
            return sum(len(c.params.get("MESSAGES") or []) for c in bridge.sim.recorder.calls(reading, ok=True))

        await wait_until(lambda: read_reported() >= len(who), timeout=120, what="quiet")

        posted: dict[str, float] = {}
        start = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))  # pacing the load, not waiting on it
            wamid = f"wamid.l{i}"
            await bridge.customers_write([(who[i % 50], f"l {i}", wamid)])
            posted[wamid] = time.monotonic()
        await wait_until(lambda: all(w in arrived for w in posted), timeout=60, what="the paced messages")
        inbound = [(arrived[w] - t) * 1000 for w, t in posted.items()]

        events: dict[str, float] = {}
        floor: list[float] = []
        probe = aiohttp.ClientSession()
        start = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))  # pacing the load
            text = f"o {i}"
            events[text] = time.time()
            await bridge.operator_writes(who[i % 50], text)
            if i % 5 == 0:  # the floor, at the same moment: a bare loopback request (a 404) to the Meta simulator
                began = time.perf_counter()
                async with probe.get(bridge.meta_url + "/_floor") as resp:
                    await resp.read()
                floor.append((time.perf_counter() - began) * 1000)
        await probe.close()
        meta_at: dict[str, float] = {}

        def at_meta() -> bool:
            for request in bridge.meta.requests:
                body = request.get("json") or {}
                text = ((body.get("text") or {}).get("body") or "").rsplit("\n", 1)[-1]
                if text in events:
                    meta_at.setdefault(text, float(request["at"]))
            return len(meta_at) >= count

        await wait_until(at_meta, timeout=60, what="the operators' messages at Meta")
        outbound = [(meta_at[t] - events[t]) * 1000 for t in events]
        template_ms = await templates(bridge, who, count // 4)
        sent = Counter(((m.get("text") or {}).get("body") or "").rsplit("\n", 1)[-1] for m in bridge.sent)
        got = Counter(m["message"]["id"] for m in bridge.in_bitrix())
    finally:
        bridge.sim.on_processed = None
        await bridge.close()
    return {
        "inbound_ms_p50": pct(inbound, 50),
        "inbound_ms_p99": pct(inbound, 99),
        "outbound_ms_p50": pct(outbound, 50),
        "outbound_ms_p99": pct(outbound, 99),
        "outbound_floor_ms_p50": pct(floor, 50),
        "outbound_ratio_p50": round((pct(outbound, 50) or 0) / (pct(floor, 50) or 1), 1),
        "template_ms_p50": pct(template_ms, 50),
        "template_ms_p99": pct(template_ms, 99),
        "latency_messages_each_way": count,
        "template_commands": len(template_ms),
        "lost": sum(1 for w in posted if got[w] == 0) + sum(1 for t in events if sent[t] == 0),
        "duplicated": sum(1 for w in posted if got[w] > 1) + sum(1 for t in events if sent[t] > 1),
    }


async def templates(bridge: BridgeProcess, who: list[str], count: int) -> list[float]:
    """Template commands paced at RATE (the account's templates already listed, as in
    production): ms from the portal posting the operator's command to the send at Meta."""
    commands: dict[str, float] = {}
    start = time.monotonic()
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))  # pacing the load
        commands[f"#{i}"] = time.time()
        await bridge.operator_writes(who[i % 50], f"template-order_update+en_US+Bench|#{i}")
    at: dict[str, float] = {}

    def arrived() -> bool:
        for request in bridge.meta.requests:
            template = (request.get("json") or {}).get("template") or {}
            for component in template.get("components") or []:
                values = [p.get("text") for p in component.get("parameters") or []]
                if len(values) == 2 and values[1] in commands:
                    at.setdefault(values[1], float(request["at"]))
        return len(at) >= count

    await wait_until(arrived, timeout=60, what="the template commands at Meta")
    return [(at[k] - t) * 1000 for k, t in commands.items()]


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-messages-") as tmp:
        lat = await latency(Path(tmp), args.latency_seconds, (50, 1000))
        standard = await latency(Path(tmp), args.latency_seconds, None)
        thr = await throughput(Path(tmp), args.messages, args.customers)
    return {
        "benchmark": "messages",
        "inbound_per_s": thr["inbound_per_s"],
        "inbound_ms_p50": lat["inbound_ms_p50"],
        "inbound_ms_p99": lat["inbound_ms_p99"],
        "outbound_ms_p50": lat["outbound_ms_p50"],
        "outbound_ms_p99": lat["outbound_ms_p99"],
        "template_ms_p50": lat["template_ms_p50"],
        "template_ms_p99": lat["template_ms_p99"],
        "lost": thr["lost"] + lat["lost"] + standard["lost"],
        "duplicated": thr["duplicated"] + lat["duplicated"] + standard["duplicated"],
        "limit_errors": thr["limit_errors"],
        "throughput": thr,
        "latency": lat | {"portal_limit": {"rate_per_s": 50, "burst": 1000}},
        "latency_standard_portal": standard | {"portal_limit": {"rate_per_s": 2, "burst": 50}},
        "portal_limit": {"rate_per_s": 2, "burst": 50, "commands_per_batch": 50, "messages_per_command": 20},
        "ceiling": (
            "inbound: a standard portal takes 2 requests/s x 50 commands x 20 messages per merged "
            "imconnector.send.messages = 2000 messages/s; the measured rate is bound by thoth-pbx's "
            "event loop (throughput.serve_cpu_percent_of_one_core)"
        ),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
