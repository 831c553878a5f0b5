"""Incoming WhatsApp calls end to end: Meta's Asterisk -> TLS/SDES/Opus -> our Asterisk ->
Stasis -> thoth-pbx -> Bitrix24 simulator, with operators' phones answering for real."""

from __future__ import annotations

import asyncio
import base64
import io
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.calls.conftest import BUSINESS, BUSINESS_NO_PORTAL
from tests.calls.lab import CallLab
from tests.calls.service import Thoth, start_thoth, stop_thoth
from tests.support.bitrix import wait_until

REGISTER, SHOW, HIDE, FINISH, RECORD = (
    "telephony.externalcall.register",
    "telephony.externalcall.show",
    "telephony.externalcall.hide",
    "telephony.externalcall.finish",
    "telephony.externalcall.attachrecord",
)


@pytest.fixture
async def thoth(tmp_path: Path, lab: CallLab) -> AsyncIterator[Thoth]:
    t = await start_thoth(tmp_path, lab)
    yield t
    await stop_thoth(t)


async def _call_bridge(ari, linkedid: str) -> dict | None:  # type: ignore[no-untyped-def]
    return next((b for b in await ari.request("GET", "/bridges") if b.get("name") == f"thoth-{linkedid}"), None)


async def _live_recording(ari, name: str) -> bool:  # type: ignore[no-untyped-def]
    from thoth_pbx.clients.asterisk.ari import AriError

    try:
        return (await ari.request("GET", f"/recordings/live/{name}"))["state"] == "recording"
    except AriError:
        return False


async def _talk(seconds: float) -> None:
    await asyncio.sleep(seconds)  # the conversation itself: a scenario duration, not a synchronisation


async def _finished_in_bitrix(thoth: Thoth, linkedid: str, methods: int) -> list:
    return await wait_until(
        lambda: len(thoth.bitrix_calls(linkedid)) >= methods and thoth.bitrix_calls(linkedid),
        timeout=20,
        what=f"{methods} Bitrix calls for {linkedid}",
    )


async def _announced(thoth: Thoth) -> float:
    """How many calls /metrics's announce latency histogram has seen."""
    from thoth_pbx.clients.asterisk.ari import basic_auth_header

    admin = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}
    text = await (await thoth.client.get("/metrics", headers=admin)).text()
    for family in text_string_to_metric_families(text):
        if family.name == "thoth_call_announce_seconds":
            return sum(s.value for s in family.samples if s.name.endswith("_count"))
    raise AssertionError("no thoth_call_announce_seconds in /metrics")


async def test_answered_call_is_announced_bridged_srtp_opus_and_logged(thoth: Thoth, lab: CallLab) -> None:
    await thoth.set_calls(ring_group=["101", "104"], record=True, group_ring_seconds=10)
    announced_before = await _announced(thoth)
    caller = "+79990000001"
    placed = lab.whatsapp_call(BUSINESS, caller)
    call = await thoth.wait_call(caller, "connected")
    assert call.wacid == placed["wacid"] and call.called == BUSINESS
    assert call.answered_by_extension == "101" and call.answered_by_user_id == 2
    ari = thoth.services.ari
    secure = await ari.request(
        "GET", f"/channels/{call.channel_id}/variable", params={"variable": "CHANNEL(rtp,secure)"}
    )
    codec = await ari.request(
        "GET", f"/channels/{call.channel_id}/variable", params={"variable": "CHANNEL(audionativeformat)"}
    )
    assert secure["value"] == "1" and "opus" in codec["value"]
    # recorded through a snoop channel: the two-party bridge keeps passing Opus through
    # (recording the bridge itself made it a mixing softmix bridge, ~7x the CPU)
    await wait_until(lambda: _live_recording(ari, f"thoth-{call.linkedid}"), what="the recording to run")
    bridge = await _call_bridge(ari, call.linkedid)
    assert bridge is not None and bridge["technology"] == "simple_bridge" and len(bridge["channels"]) == 2, bridge
    started = time.monotonic()
    await _talk(1.6)
    lab.hangup_meta(placed["meta_channel"])
    ended = await thoth.wait_call(caller, "ended")
    assert ended.status_code == "200"
    seen = await _finished_in_bitrix(thoth, call.linkedid, 5)
    methods = [m for m, _ in seen]
    assert methods == [REGISTER, SHOW, HIDE, FINISH, RECORD], methods
    register, show, hide, finish, record = (p for _, p in seen)
    assert (
        register["TYPE"] == 2 and register["PHONE_NUMBER"] == caller and register["LINE_NUMBER"] == BUSINESS.lstrip("+")
    )
    assert register["SHOW"] == 0 and register["EXTERNAL_CALL_ID"] == call.linkedid
    assert "+00:00" in register["CALL_START_DATE"]
    logged = await thoth.call_row(linkedid=call.linkedid)
    assert (
        logged is not None
        and logged.bitrix_call_id
        and logged.bitrix_call_id
        == str(
            next(
                e.result["CALL_ID"]
                for e in thoth.sim.recorder.calls(REGISTER, ok=True)
                if e.params["EXTERNAL_CALL_ID"] == call.linkedid
            )
        )
    )
    assert sorted(show["USER_ID"]) == [2, 5] and hide["USER_ID"] == [5]
    assert "_thoth_stored_at" not in register  # ours, kept with the job, never sent
    assert await _announced(thoth) == announced_before + 1  # thoth_call_announce_seconds saw the register
    assert finish["USER_ID"] == 2 and finish["STATUS_CODE"] == "200" and finish["ADD_TO_CHAT"] == 1
    assert 1 <= finish["DURATION"] <= round(time.monotonic() - started) + 1
    assert record["FILENAME"].endswith(".wav") and len(record["FILE_CONTENT"]) > 1000
    with wave.open(io.BytesIO(base64.b64decode(record["FILE_CONTENT"]))) as wav:  # the whole talk, not a stub
        assert wav.getnframes() / wav.getframerate() >= 1.0
    from thoth_pbx.clients.asterisk.ari import basic_auth_header

    admin = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}
    listed = await (await thoth.client.get("/api/admin/calls?state=ended", headers=admin)).json()
    shown = next(c for c in listed["items"] if c["linkedid"] == call.linkedid)
    assert shown["status_code"] == "200" and shown["recorded"] is True and shown["bitrix_call_id"]
    assert (await thoth.client.get("/api/admin/calls?state=weird", headers=admin)).status == 400
    assert (
        await thoth.client.get(
            "/api/admin/calls",
        )
    ).status == 401


async def test_unanswered_call_is_missed_304(thoth: Thoth, lab: CallLab) -> None:
    await thoth.set_calls(ring_group=["104"], group_ring_seconds=2, responsible_first_seconds=0)
    caller = "+79990000002"
    lab.whatsapp_call(BUSINESS, caller)
    ended = await thoth.wait_call(caller, "ended", timeout=30)
    assert ended.status_code == "304"
    seen = await _finished_in_bitrix(thoth, ended.linkedid, 3)
    assert [m for m, _ in seen] == [REGISTER, SHOW, FINISH]
    assert seen[-1][1]["STATUS_CODE"] == "304" and seen[-1][1]["DURATION"] == 0


async def test_settings_changed_between_calls_apply_to_the_next_call(thoth: Thoth, lab: CallLab) -> None:
    """The call context (phone, portal settings, users) is cached; a committed change drops it."""
    await thoth.set_calls(ring_group=["104"], group_ring_seconds=1, responsible_first_seconds=0)
    first = "+79990000021"
    lab.whatsapp_call(BUSINESS, first)
    assert (await thoth.wait_call(first, "ended", timeout=30)).status_code == "304"
    await thoth.set_calls(ring_group=["101"], group_ring_seconds=10, responsible_first_seconds=0)
    second = "+79990000022"
    placed = lab.whatsapp_call(BUSINESS, second)
    call = await thoth.wait_call(second, "connected")
    assert call.answered_by_extension == "101"
    lab.hangup_meta(placed["meta_channel"])
    assert (await thoth.wait_call(second, "ended")).status_code == "200"


async def test_caller_hangs_up_while_ringing_603s(thoth: Thoth, lab: CallLab) -> None:
    await thoth.set_calls(ring_group=["104"], group_ring_seconds=30, responsible_first_seconds=0)
    caller = "+79990000003"
    placed = lab.whatsapp_call(BUSINESS, caller)
    call = await thoth.wait_call(caller, "ringing")
    await wait_until(lambda: any(m == SHOW for m, _ in thoth.bitrix_calls(call.linkedid)), what="card shown")
    lab.hangup_meta(placed["meta_channel"])
    ended = await thoth.wait_call(caller, "ended")
    assert ended.status_code == "603-S"
    # the operator's phone stops ringing: no leg of this call is left on our Asterisk
    await wait_until(
        lambda: not any(c["name"].startswith("PJSIP/104-") for c in lab.business_channels()),
        timeout=10,
        what="ringing operator leg hung up",
    )
    seen = await _finished_in_bitrix(thoth, call.linkedid, 3)
    assert seen[-1][0] == FINISH and seen[-1][1]["STATUS_CODE"] == "603-S"


async def test_all_busy_486(thoth: Thoth, lab: CallLab) -> None:
    await thoth.set_calls(ring_group=["103"], group_ring_seconds=10, responsible_first_seconds=0)
    caller = "+79990000004"
    lab.whatsapp_call(BUSINESS, caller)
    ended = await thoth.wait_call(caller, "ended", timeout=30)
    assert ended.status_code == "486", ended.detail


async def test_responsible_manager_is_rung_first(thoth: Thoth, lab: CallLab) -> None:
    caller = "+79990000005"
    thoth.portal.crm[caller.lstrip("+")] = [
        {"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": 77, "NAME": "Client", "ASSIGNED_BY_ID": 6}
    ]
    await thoth.set_calls(ring_group=["101"], responsible_first_seconds=10, group_ring_seconds=10)
    placed = lab.whatsapp_call(BUSINESS, caller)
    call = await thoth.wait_call(caller, "connected")
    assert call.answered_by_extension == "105" and call.answered_by_user_id == 6
    lab.hangup_meta(placed["meta_channel"])
    ended = await thoth.wait_call(caller, "ended")
    seen = await _finished_in_bitrix(thoth, call.linkedid, 3)
    shows = [p for m, p in seen if m == SHOW]
    assert shows[0]["USER_ID"] == [6]
    assert ended.status_code == "200" and seen[-1][1]["USER_ID"] == 6


async def test_missed_call_is_logged_on_the_crm_owner(thoth: Thoth, lab: CallLab) -> None:
    caller = "+79990000007"
    thoth.portal.crm[caller.lstrip("+")] = [
        {"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": 78, "NAME": "Client", "ASSIGNED_BY_ID": 7}
    ]  # owner on extension 106, which never answers
    await thoth.set_calls(ring_group=["104"], responsible_first_seconds=1, group_ring_seconds=1)
    lab.whatsapp_call(BUSINESS, caller)
    ended = await thoth.wait_call(caller, "ended", timeout=30)
    assert ended.status_code == "304"
    seen = await _finished_in_bitrix(thoth, ended.linkedid, 4)
    assert [m for m, _ in seen] == [REGISTER, SHOW, SHOW, FINISH]
    assert seen[1][1]["USER_ID"] == [7] and seen[2][1]["USER_ID"] == [5]
    assert seen[-1][1]["USER_ID"] == 7 and seen[-1][1]["STATUS_CODE"] == "304"


async def test_number_without_portal_still_reaches_an_operator(thoth: Thoth, lab: CallLab) -> None:
    caller = "+79990000006"
    placed = lab.whatsapp_call(BUSINESS_NO_PORTAL, caller)
    call = await thoth.wait_call(caller, "connected")  # global [calls] ring_group = ["101"]
    assert call.answered_by_extension == "101" and call.app_instance_id is None
    lab.hangup_meta(placed["meta_channel"])
    await thoth.wait_call(caller, "ended")
    assert thoth.bitrix_calls(call.linkedid) == []
