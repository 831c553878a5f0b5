"""Trunk apply latency against a real Asterisk 22 (the test harness chroot; needs root).

    python bench/apply.py [--runs 200]

Starts its own harness instance, then repeats a full apply - render (templates, one phone,
Meta's 23 ranges), diff, atomic write, AMI `Reload res_pjsip.so`, verify every object
option by option over AMI (PJSIPShowEndpoint x2, `dialplan show`) - each run with one
setting changed so Asterisk really reloads. In the same run it times a bare AMI
`Reload Module: res_pjsip.so` after touching the file (Asterisk re-reads and re-applies
it) and the same reload with nothing changed (Asterisk skips it). No database: revisions
are a single INSERT on top. Prints one JSON object; target: apply_ms_p50 < 25 and ratio
(apply p50 / bare reload p50) < 10.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import asterisk as ah  # noqa: E402
from tests.support.tls import make_ca_and_certs  # noqa: E402
from thoth_pbx.clients.asterisk.ami import AmiClient  # noqa: E402
from thoth_pbx.core.settings import AmiTarget  # noqa: E402
from thoth_pbx.features.trunk.apply import Applier  # noqa: E402
from thoth_pbx.features.trunk.render import PJSIP_FILE, TrunkPhone, parse_trunk, render  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def bench(inst: ah.AsteriskInstance, runs: int) -> dict[str, object]:
    assert inst.config_dir is not None
    tls = make_ca_and_certs(inst.config_dir / "bench-tls", {"pbx": ["127.0.0.1"]})["pbx"]
    inside = lambda p: "/" + str(p.relative_to(ah.sandbox.root_dir()))  # noqa: E731
    base = {
        "bind_address": "127.0.0.1",
        "bind_port": free_port(),
        "cert_file": inside(tls.cert),
        "priv_key_file": inside(tls.key),
        "ca_list_file": inside(tls.ca),
        "fallback_dial": "PJSIP/100",
        "contact": "sip:127.0.0.2:5061",
    }
    phones = [TrunkPhone("+15551230000", "bench-secret", "pbx.example.com", 1)]
    ami = AmiClient(AmiTarget(inst.host, inst.ami_port, inst.ami_user, inst.ami_secret))
    ami.start()
    await ami.wait_connected(15)
    applier = Applier(ami, inst.config_dir, "plain")
    try:
        results: dict[str, int] = {}
        apply_ms: list[float] = []
        for i in range(runs + 5):
            t0 = time.perf_counter()
            outcome = await applier.apply(render(parse_trunk({**base, "qualify_frequency": 60 + i % 2}), phones))
            elapsed = (time.perf_counter() - t0) * 1000
            results[outcome.result] = results.get(outcome.result, 0) + 1
            if i >= 5:  # warm-up
                apply_ms.append(elapsed)
        reload_ms: list[float] = []
        noop_ms: list[float] = []
        path = inst.config_dir / PJSIP_FILE
        for _ in range(runs):
            os.utime(path, ns=(time.time_ns(), time.time_ns()))
            t0 = time.perf_counter()
            await ami.action_ok({"Action": "Reload", "Module": "res_pjsip.so"})
            reload_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            await ami.action_ok({"Action": "Reload", "Module": "res_pjsip.so"})
            noop_ms.append((time.perf_counter() - t0) * 1000)
    finally:
        await ami.stop()
    p50, bare = statistics.median(apply_ms), statistics.median(reload_ms)
    return {
        "apply_ms_p50": round(p50, 3),
        "apply_ms_p95": pct(apply_ms, 0.95),
        "bare_reload_ms_p50": round(bare, 3),
        "noop_reload_ms_p50": round(statistics.median(noop_ms), 3),
        "ratio": round(p50 / bare, 2),
        "runs": runs,
        "results": results,
        "target_met": p50 < 25 and p50 / bare < 10,
        "asterisk": inst.version,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    reason = ah.unavailable_reason()
    if reason:
        print(json.dumps({"error": reason}))
        return 1
    inst = ah.start_instance(f"bench-apply-{os.getpid()}")
    try:
        print(json.dumps(asyncio.run(bench(inst, args.runs))))
    finally:
        ah.release(inst)
        ah.sandbox.remove(inst.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
