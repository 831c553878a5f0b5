"""AmiClient against the real Asterisk: login failure, restart, a frozen peer, restart when convenient."""

from __future__ import annotations

import asyncio
import os
import re
import signal

from panoramisk.message import Message

from tests.harness.asterisk import AsteriskInstance
from tests.integration.conftest import ami_client, tls_files
from tests.integration.test_pbx_apply import PHONE, cli_fields, trunk_settings
from tests.support.bitrix import wait_until
from thoth_pbx.clients.asterisk.ami import AmiClient, AmiNotConnected
from thoth_pbx.core.settings import AmiTarget
from thoth_pbx.features.trunk import live
from thoth_pbx.features.trunk.apply import Applier, check_live
from thoth_pbx.features.trunk.render import PJSIP_FILE, parse_trunk, render

FAST = {"backoff_initial": 0.05, "backoff_max": 0.3, "ping_interval": 0.3, "ping_timeout": 0.5, "connect_timeout": 2.0}


async def test_wrong_secret_is_login_failed_not_silence(asterisk: AsteriskInstance) -> None:
    client = AmiClient(AmiTarget(asterisk.host, asterisk.ami_port, asterisk.ami_user, "wrong-secret"), **FAST)
    client.start()
    try:
        status = await client.wait_state("login_failed", timeout=10)
        assert "rejected" in (status.error or "") and not client.connected
        try:
            await client.action({"Action": "Ping"})
        except AmiNotConnected as exc:
            assert "login_failed" in str(exc)
        else:
            raise AssertionError("an action went through without a login")
    finally:
        await client.stop()


async def test_asterisk_stopped_and_started_client_reconnects_and_apply_works(
    private_asterisk: AsteriskInstance,
) -> None:
    inst = private_asterisk
    tls = tls_files(inst)
    client = ami_client(inst, **FAST)
    client.start()
    try:
        await client.wait_connected(10)
        applier = Applier(client, inst.config_dir, "plain")
        settings = trunk_settings(tls)
        assert (await applier.apply(render(parse_trunk(settings), [PHONE]))).result == "applied"

        inst.stop()
        await client.wait_state("down", "connecting", timeout=10)
        before = (inst.config_dir / PJSIP_FILE).read_bytes()
        while_down = await applier.apply(render(parse_trunk({**settings, "language": "de"}), [PHONE]))
        assert while_down.result == "failed" and "nothing was written" in while_down.message
        assert (inst.config_dir / PJSIP_FILE).read_bytes() == before

        inst.start()
        await client.wait_connected(15)
        assert client.connections == 2
        after = await applier.apply(render(parse_trunk({**settings, "language": "de"}), [PHONE]))
        assert after.result == "applied", after.as_json()
        assert cli_fields(inst.cli("pjsip show endpoint wa.meta.vc"))["language"] == "de"
    finally:
        await client.stop()


async def test_frozen_asterisk_is_detected_by_ping_and_reconnected(private_asterisk: AsteriskInstance) -> None:
    """SIGSTOP keeps the TCP connection open but silent: only a checked Ping notices."""
    inst = private_asterisk
    assert inst.pid is not None
    client = ami_client(inst, **FAST)
    client.start()
    try:
        await client.wait_connected(10)
        os.kill(inst.pid, signal.SIGSTOP)
        try:
            status = await client.wait_state("down", timeout=10)
            assert "no Ping reply" in (status.error or ""), status
        finally:
            os.kill(inst.pid, signal.SIGCONT)
        await client.wait_connected(15)
        assert client.connections >= 2
        assert (await client.action_ok({"Action": "Ping"})).get("Response") == "Success"
    finally:
        await client.stop()


async def test_restart_when_convenient_loads_the_pending_transport(private_asterisk: AsteriskInstance) -> None:
    inst = private_asterisk
    tls = tls_files(inst)
    client = ami_client(inst, **{**FAST, "ping_timeout": 5.0})  # a booting Asterisk answers slowly
    client.start()
    try:
        await client.wait_connected(10)
        applier = Applier(client, inst.config_dir, "plain")
        settings = trunk_settings(tls, method="tlsv1_2")
        assert (await applier.apply(render(parse_trunk(settings), [PHONE]))).result == "applied"
        changed = render(parse_trunk({**settings, "method": "tlsv1_3"}), [PHONE])
        assert (await applier.apply(changed)).result == "restart_required"

        await live.restart_when_convenient(client, timeout=0.5)
        await client.wait_state("down", "connecting", timeout=15)
        await client.wait_ready(30)
        check = await check_live(client, changed.files)
        assert check.pending_restart == [] and check.mismatches == []
        assert cli_fields(inst.cli(f"pjsip show transport {settings['transport_name']}"))["method"] == "tlsv1_3"
    finally:
        await client.stop()


async def test_only_system_events_reach_us_not_every_call_event(private_asterisk: AsteriskInstance) -> None:
    """We read FullyBooted and Reload only: a session logged in with Events: on would have
    Asterisk build and send every channel's Newchannel, VarSet, Newexten, Hangup... to us, CPU
    on both sides while calls arrive. Channels are made here (Local, CLI originate), then a
    Reload: its event comes after any event of those channels on the connection."""
    client = ami_client(private_asterisk, **FAST)
    seen: list[str] = []
    reloaded = asyncio.Event()

    def note(message: Message) -> None:
        seen.append(str(message.get("Event", "")))
        if message.get("Event") == "Reload":
            reloaded.set()

    client.on_event("*", note)
    client.start()
    try:
        await client.wait_ready(15)
        await client.command("dialplan add extension 1,1,Wait(0) into amitest")
        processed_before = _calls_processed(await client.command("core show calls"))
        await client.command("channel originate Local/1@amitest application Wait 0")

        async def processed() -> bool:  # the CLI's counter: no event of a call may reach us
            return _calls_processed(await client.command("core show calls")) > processed_before

        await wait_until(processed, timeout=10, what="the Local channels made and gone")
        await client.action_ok({"Action": "Reload", "Module": "pbx_config.so"})
        async with asyncio.timeout(10):
            await reloaded.wait()
        assert "Reload" in seen
        assert not {"Newchannel", "Hangup", "VarSet", "Newexten", "Newstate"} & set(seen), seen
    finally:
        await client.stop()


def _calls_processed(output: str) -> int:
    match = re.search(r"(\d+) calls? processed", output)
    return int(match.group(1)) if match else 0
