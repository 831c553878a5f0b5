"""`make demo` headless: scripts/demo.py plays one scene on the real harness Asterisk between
the simulators; what the scene did arrived once each; SIGINT leaves nothing running."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import asterisk as harness

REPO = Path(__file__).resolve().parents[2]
INSTANCES = ("thoth-demo", "thoth-demo-meta")
CUSTOMER, LATE = "15551234567", "15557654321"
PNID = "106540352242922"


async def _get(url: str, as_json: bool = True) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, url
        return await resp.json() if as_json else await resp.text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_one_scene_arrives_once_and_sigint_stops_everything(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "scripts" / "demo.py"),
        "--scenes",
        "1",
        "--free-ports",
        "--dir",
        str(tmp_path / "demo"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out: list[str] = []
    try:
        assert proc.stdout is not None
        while not any("scene 1 done" in line for line in out):
            line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
            assert line, "".join(out)  # the demo ended early
            out.append(line)
        text = "".join(out)
        steps = [line for line in out if re.match(r"\[\s*[\d.]+s\] .+ \(\d+ ms\)$", line.strip())]
        assert len(steps) >= 10, text  # one timed line per step
        assert "applied then unchanged" in text, text  # the verified apply, read back unchanged
        bitrix = re.search(r"Bitrix24 portal\s+(http://\S+)/_sandbox/page", text)
        meta = re.search(r"Meta\s+(http://\S+)/_sandbox/page", text)
        panel = re.search(r"admin panel\s+(http://\S+/panel/)\s+user admin, password (\S+)", text)
        serve_pid = re.search(r"serve pid (\d+)", text)
        assert bitrix and meta and panel and serve_pid, text

        state = await _get(bitrix.group(1) + "/_sandbox/state?limit=100000")
        calls = [c for c in state["calls"] if c["ok"]]
        sent_in = [m["message"]["id"] for c in calls if c["method"] == "imconnector.send.messages"
                   for m in c["params"]["MESSAGES"]]  # fmt: skip
        for wamid in ("wamid.demo1text", "wamid.demo1image", "wamid.demo1late"):
            assert sent_in.count(wamid) == 1, (wamid, sent_in)
        methods = [c["method"] for c in calls]
        assert methods.count("telephony.externalcall.register") == 1
        assert methods.count("telephony.externalcall.finish") == 1
        assert methods.count("telephony.externalcall.attachrecord") == 1
        finish = next(c["params"] for c in calls if c["method"] == "telephony.externalcall.finish")
        assert finish["STATUS_CODE"] == "200" and finish["DURATION"] >= 1
        member = state["portals"][0]["member_id"]
        lines = await _get(f"{bitrix.group(1)}/_sandbox/portals/{member}/openlines")
        late_chat = next(c for c in lines["chats"] if c["chat_external_id"] == LATE)
        notices = [m["text"] for m in late_chat["messages"] if m["kind"] == "system"]
        assert len(notices) == 1 and "Not sent to WhatsApp" in notices[0], notices

        phone = await _get(f"{meta.group(1)}/_sandbox/phones/{PNID}")
        to_customer = [m for m in phone["sent"] if m.get("to") == CUSTOMER and m.get("type") == "text"]
        assert len(to_customer) == 1 and "two" in to_customer[0]["text"]["body"], phone["sent"]
        assert not [m for m in phone["sent"] if m.get("to") == LATE]  # held back, never sent

        page = await _get(bitrix.group(1) + "/_sandbox/page", as_json=False)
        assert "Is the green chair still in stock?" in page and "Not sent to WhatsApp" in page
        assert await _get(meta.group(1) + "/_sandbox/page", as_json=False)
        async with aiohttp.ClientSession() as http, http.get(panel.group(1)) as resp:
            assert resp.status == 200  # the sign-in page

        proc.send_signal(signal.SIGINT)
        rest = (await asyncio.wait_for(proc.stdout.read(), 60)).decode()
        assert await proc.wait() == 0, rest
        assert "stopped" in rest, rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
            for name in INSTANCES:
                harness.stop_instance(name)
    assert not _alive(int(serve_pid.group(1)))
    assert [harness.sandbox._live_pid(name) for name in INSTANCES] == [None, None]
