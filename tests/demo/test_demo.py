"""`make demo` headless: scripts/demo.py plays one scene on the real harness Asterisk between
the simulators; what the scene did arrived once each; SIGINT leaves nothing running."""

from __future__ import annotations

import re
from pathlib import Path

from tests.demo.run import alive, get, start_demo
from tests.harness import asterisk as harness

CUSTOMER, LATE = "15551234567", "15557654321"
PNID = "106540352242922"


def test_one_scene_arrives_once_and_sigint_stops_everything(tmp_path: Path) -> None:
    run = start_demo(tmp_path / "demo")
    try:
        assert all(name in run.text for name in run.instances)
        steps = [line for line in run.out if re.match(r"\[\s*[\d.]+s\] .+ \(\d+ ms\)$", line.strip())]
        assert len(steps) >= 10, run.text  # one timed line per step
        assert re.search(r"apply: revision \d+ applied", run.text), run.text  # written, reloaded, read back

        state = get(run.bitrix + "/_sandbox/state?limit=100000")
        calls = [c for c in state["calls"] if c["ok"]]
        into_chats = [m["message"]["id"] for c in calls if c["method"] == "imconnector.send.messages"
                      for m in c["params"]["MESSAGES"]]  # fmt: skip
        for wamid in ("wamid.demo1text", "wamid.demo1image", "wamid.demo1late"):
            assert into_chats.count(wamid) == 1, (wamid, into_chats)
        methods = [c["method"] for c in calls]
        for method in ("register", "finish", "attachrecord"):
            assert methods.count(f"telephony.externalcall.{method}") == 1, methods
        finish = next(c["params"] for c in calls if c["method"] == "telephony.externalcall.finish")
        assert finish["STATUS_CODE"] == "200" and finish["DURATION"] >= 1
        member = state["portals"][0]["member_id"]
        chats = {c["chat_external_id"]: c for c in get(f"{run.bitrix}/_sandbox/portals/{member}/openlines")["chats"]}
        notices = [m["text"] for m in chats[LATE]["messages"] if m["kind"] == "system"]
        assert len(notices) == 1 and "Not sent to WhatsApp" in notices[0], notices
        image = next(m for m in chats[CUSTOMER]["messages"] if m["external_id"] == "wamid.demo1image")
        assert image["files"][0]["done"] and image["files"][0]["error"] is None  # the portal fetched it

        sent = get(f"{run.meta}/_sandbox/phones/{PNID}")["sent"]
        answers = [m for m in sent if m.get("to") == CUSTOMER and m.get("type") == "text"]
        assert len(answers) == 1 and "two" in answers[0]["text"]["body"], sent
        assert not [m for m in sent if m.get("to") == LATE]  # held back, never sent

        page = get(run.bitrix + "/_sandbox/page")
        assert "Is the green chair still in stock?" in page and "Not sent to WhatsApp" in page
        assert "Yes, *two* left" in get(run.meta + "/_sandbox/page")
        assert 'name="password"' in get(run.panel + "/panel/login")

        code, rest = run.stop()
        assert code == 0 and rest.rstrip().endswith("stopped"), rest
        assert not alive(run.serve_pid)
        assert [harness.sandbox._live_pid(name) for name in run.instances] == [None, None]
    finally:
        run.kill()
