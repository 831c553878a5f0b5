#!/usr/bin/env python3
"""`make demo`: the whole product on loopback, with simulated Meta and Bitrix24 and the real
harness Asterisk (docs/demo.md).

Starts the two simulators (in this process), the harness Asterisk as the company PBX plus a
second instance playing Meta's SIP side and the operators' phones (tests/calls/lab.py),
`thoth-pbx serve` on SQLite, sets everything up through the admin API as an admin would, then
plays a scene every `--every` seconds (or on Enter): a customer writes (text and an image),
the operator answers, the customer calls, an operator answers, the call ends and is logged
with its recording, and a message outside the 24-hour window is held back. Ctrl-C (SIGINT) or
SIGTERM stops everything it started.

A dev script: it uses the test harness (tests/), which product code never imports.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import shutil
import signal
import struct
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from tests.calls.lab import CallLab, start_lab, stop_lab  # noqa: E402
from tests.harness import asterisk as harness  # noqa: E402
from tests.support.bitrix import bitrix_env, free_port, wait_until  # noqa: E402
from tests.support.messaging import SEED, link_seed_number  # noqa: E402
from thoth_pbx.sandbox import meta as meta_sim  # noqa: E402
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Portal, SimUser  # noqa: E402

PASSWORD = "demo-password"
OPERATORS = [SimUser(1, "Anna", "Admin", "101"), SimUser(2, "Boris", "Agent", "102")]
CUSTOMER, CUSTOMER_NAME = "15551234567", "Maria Lopez"
LATE_CUSTOMER, LATE_NAME = "15557654321", "Oleg Petrov"  # last wrote yesterday
TALK_S = 3.0
SIP_HOST = "pbx.demo.test"


def tiny_png(size: int = 16) -> bytes:
    """A real PNG (a green square), so the file the portal fetches is an image."""
    raw = b"".join(b"\x00" + b"\x25\xd3\x66" * size for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(args.dir).resolve()
        self.meta = meta_sim.seeded(SEED)
        self.bitrix = BitrixSimulator()
        self.portal: Portal | None = None
        self.lab: CallLab | None = None
        self.lab_task: asyncio.Future[CallLab] | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.meta_runner: web.AppRunner | None = None
        self.http: aiohttp.ClientSession | None = None
        self.public = ""
        self.webhook = ""
        self.phone_id = 0
        self.line_id = 0
        self.scene = 0
        self.t0 = time.monotonic()
        # the harness instances: thoth-demo (the company PBX) and thoth-demo-meta by default
        self.instances = (f"thoth-{args.lab}", f"thoth-{args.lab}-meta")

    # ------------------------------------------------------------------ output

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s] {text}", flush=True)

    async def step(self, text: str, work: Callable[[], Awaitable[Any]]) -> Any:
        started = time.monotonic()
        result = await work()
        self.say(f"{text} ({(time.monotonic() - started) * 1000:.0f} ms)")
        return result

    # ------------------------------------------------------------------ set-up

    async def start(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        ports = [0, 0, 0] if self.args.free_ports else [self.args.meta_port, self.args.bitrix_port, self.args.port]
        meta_port, bitrix_port, port = (p or free_port() for p in ports)
        self.meta_runner = web.AppRunner(self.meta.app(), access_log=None)
        await self.meta_runner.setup()
        await web.TCPSite(self.meta_runner, "127.0.0.1", meta_port).start()
        self.meta_url = f"http://127.0.0.1:{meta_port}"
        await self.bitrix.start("127.0.0.1", bitrix_port)
        self.portal = self.bitrix.add_portal(users=list(OPERATORS), rate=20, burst=200)
        self.say(f"simulators up: Meta {self.meta_url}, Bitrix24 {self.bitrix.base_url}")
        started = time.monotonic()
        self.lab_task = asyncio.ensure_future(asyncio.to_thread(start_lab, self.args.lab))
        self.lab = await asyncio.shield(self.lab_task)
        self.say(
            f"Asterisk 22 up: company PBX {self.instances[0]} (127.0.0.1), Meta's SIP side and the operators' phones "
            f"{self.instances[1]} (127.0.0.2) ({time.monotonic() - started:.1f} s)"
        )
        self.public = f"http://127.0.0.1:{port}"
        self.http = aiohttp.ClientSession(base_url=self.public)
        await self.step("thoth-pbx serve up on SQLite", lambda: self.start_service(port))
        assert self.proc is not None
        self.say(f"  serve pid {self.proc.pid}, log {self.dir / 'serve.log'}")
        await self.step("portal installed our app (ONAPPINSTALL)", self.install)
        await self.step("WABA account and number added, Open Line green", self.link)
        password = await self.step("Calling + SIP enabled at Meta", self.enable_calling)
        assert self.lab is not None
        await asyncio.to_thread(self.lab.add_business_number, SEED.display_phone_number, password)
        result = await self.step("trunk applied by thoth-pbx and verified", self.apply_trunk)
        self.say(f"  apply: {result}")

    async def start_service(self, port: int) -> None:
        assert self.lab is not None
        b = self.lab.business
        config = self.dir / "thoth.toml"
        config.write_text(
            '[calls]\nring_group = ["101", "102"]\nrecord = true\nresponsible_first_seconds = 0\n'
            "group_ring_seconds = 20\n"
        )
        environ = {
            "THOTH_CONFIG": str(config),
            "THOTH_LISTEN": f"127.0.0.1:{port}",
            "THOTH_DATABASE_URL": f"sqlite:///{self.dir / 'thoth.sqlite3'}",
            "THOTH_SECRET_KEY_FILE": str(self.dir / "secret.key"),
            "THOTH_ADMIN_PASSWORD": PASSWORD,
            "THOTH_ADMIN_PASSWORD_FILE": str(self.dir / "admin-password"),
            "THOTH_META_GRAPH_URL": self.meta_url,
            "THOTH_AMI_URL": f"tcp://{b.ami_user}:{b.ami_secret}@{b.host}:{b.ami_port}",
            "THOTH_ARI_URL": f"http://{b.ari_user}:{b.ari_password}@{b.host}:{b.http_port}",
            "THOTH_ASTERISK_CONFIG_DIR": str(b.config_dir),
            "THOTH_RECORDINGS_DIR": str(self.dir / "recordings"),
            "THOTH_MEDIA_DIR": str(self.dir / "media"),
            "THOTH_LOG_LEVEL": "info",
            **bitrix_env(self.bitrix, self.public),
        }
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("THOTH_")}, **environ}
        log = (self.dir / "serve.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "thoth_pbx.cli",
            "serve",
            env=env,
            stdout=log,
            stderr=log,
            cwd=str(self.dir),
            start_new_session=True,  # Ctrl-C reaches us; we stop it in order
        )
        await wait_until(self.healthy, timeout=60, what="thoth-pbx serve")

    async def healthy(self, ari: bool = False) -> bool:
        assert self.http is not None
        try:
            async with self.http.get("/healthz") as resp:
                body = await resp.json()
                return resp.status < 500 and (not ari or body.get("ari", {}).get("state") == "connected")
        except (aiohttp.ClientError, ValueError):
            return False

    async def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self.http is not None
        auth = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}
        async with self.http.request(method, path, json=body, headers=auth) as resp:
            data = await resp.json()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status} {data}")
            return data

    async def install(self) -> None:
        assert self.portal is not None
        status, body = await self.bitrix.install(self.portal, self.public + "/api/bitrix/install")
        if status != 200:
            raise RuntimeError(f"install: HTTP {status} {body}")
        self.instance_id = int(body["instance_id"])

    async def link(self) -> None:
        self.webhook, self.phone_id, self.line_id = await link_seed_number(
            lambda m, p, b: self.admin(m, p, b), self.instance_id, timeout=60
        )
        self.meta.apps[SEED.app_id].callback_url = self.public + self.webhook  # Meta's status webhooks

    async def enable_calling(self) -> str:
        assert self.lab is not None
        await self.admin(
            "PATCH", f"/api/admin/phones/{self.phone_id}", {"sip_hostname": SIP_HOST, "sip_port": self.lab.tls_port}
        )
        await self.admin("POST", f"/api/admin/phones/{self.phone_id}/calling", {"action": "enable"})
        # Meta holds the SIP password it generated; its SIP side (the second Asterisk) answers
        # our digest challenge with it, as Meta does
        return self.meta.phones[SEED.phone_number_id].passwords[SEED.app_id]

    async def apply_trunk(self) -> str:
        """Written, reloaded and read back from Asterisk option by option (the panel's trunk page
        shows this apply), then Asterisk restarted: a new TLS transport starts only with it."""
        assert self.lab is not None
        await self.admin("PUT", "/api/admin/pbx/trunk", self.lab.trunk_settings())
        outcome = await self.admin("POST", "/api/admin/pbx/apply")
        await asyncio.to_thread(self.lab.business.restart)
        await wait_until(lambda: self.healthy(ari=True), timeout=60, what="thoth-pbx connected to ARI again")
        return f"revision {outcome['revision']} {outcome['result']}, Asterisk restarted for the TLS transport"

    # ------------------------------------------------------------------ the scene

    def chat_of(self, customer: str) -> Any:
        assert self.portal is not None
        return next((c for c in self.portal.chats.values() if c.external_id == customer), None)

    def sent_to(self, customer: str) -> list[dict[str, Any]]:
        return [m for m in self.meta.phones[SEED.phone_number_id].sent if m.get("to") == customer]

    async def post_webhook(self, doc: dict[str, Any]) -> None:
        assert self.http is not None
        self.meta.announce(doc)
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": meta_sim.sign(body, SEED.app_secret)}
        async with self.http.post(self.webhook, data=body, headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"webhook: HTTP {resp.status} {await resp.text()}")

    async def play(self) -> None:
        self.scene += 1
        n = self.scene
        self.say(f"scene {n}")
        pnid, display = SEED.phone_number_id, SEED.display_phone_number
        text_id, image_id = f"wamid.demo{n}text", f"wamid.demo{n}image"

        async def customer_writes() -> None:
            change = meta_sim.message_change(
                pnid, display, CUSTOMER, "Hi! Is the green chair still in stock?", name=CUSTOMER_NAME, wamid=text_id
            )
            await self.post_webhook(meta_sim.delivery(SEED.waba_id, [change]))
            png = tiny_png()
            media = self.meta.add_media(pnid, png, "image/png")
            image = meta_sim.media_message_change(
                pnid,
                display,
                CUSTOMER,
                "image",
                media,
                "image/png",
                hashlib.sha256(png).hexdigest(),
                caption="This one",
                name=CUSTOMER_NAME,
                wamid=image_id,
            )
            await self.post_webhook(meta_sim.delivery(SEED.waba_id, [image]))

            def both_in_chat() -> bool:
                chat = self.chat_of(CUSTOMER)
                got = {m.external_id for m in chat.messages if m.files or m.external_id == text_id} if chat else set()
                image_in = chat is not None and any(m.external_id == image_id and m.files for m in chat.messages)
                return text_id in got and image_in

            await wait_until(both_in_chat, timeout=30, what="the customer's text and image in Open Lines")

        await self.step(f"customer +{CUSTOMER} wrote on WhatsApp (text + image) -> Open Lines chat", customer_writes)

        answer = f"Yes, [b]two[/b] left. Shall I reserve one? (scene {n})"

        async def operator_answers() -> None:
            assert self.portal is not None
            before = len(self.sent_to(CUSTOMER))
            await self.bitrix.operator_writes(self.portal, self.line_id, CUSTOMER, answer)
            await wait_until(lambda: len(self.sent_to(CUSTOMER)) > before, timeout=30, what="the answer at Meta")

        await self.step("operator Anna answered in the Open Lines chat -> sent on WhatsApp", operator_answers)

        caller = f"+{CUSTOMER}"
        placed: dict[str, Any] = {}

        async def customer_calls() -> dict[str, Any]:
            assert self.lab is not None
            placed.update(await asyncio.to_thread(self.lab.whatsapp_call, display, caller))

            async def connected() -> Any:
                calls = await self.admin("GET", "/api/admin/calls?state=connected")
                return next((c for c in calls["items"] if c.get("wacid") == placed["wacid"]), None)

            return await wait_until(connected, timeout=40, what="an operator to answer")

        call = await self.step("customer called on WhatsApp (SIP/TLS, SRTP, Opus) -> ringing 101, 102", customer_calls)
        self.say(f"  operator {call.get('answered_by_extension')} answered; talking for {TALK_S:.0f} s")
        await asyncio.sleep(TALK_S)  # the conversation itself

        async def hang_up() -> None:
            assert self.lab is not None and self.portal is not None
            portal = self.portal
            await asyncio.to_thread(self.lab.hangup_meta, placed["meta_channel"])

            def logged() -> bool:
                return any(
                    row["EXTERNAL_CALL_ID"] == call["linkedid"] and cid in portal.records
                    for cid, row in portal.statistics.items()
                )

            await wait_until(logged, timeout=40, what="the call log and its recording in Bitrix24")

        await self.step("customer hung up -> call log + recording in the portal", hang_up)

        late = f"Hello, I wrote yesterday about my order (scene {n})"

        async def outside_window() -> None:
            assert self.portal is not None
            yesterday = int(time.time()) - 25 * 3600
            change = meta_sim.message_change(
                pnid, display, LATE_CUSTOMER, late, name=LATE_NAME, wamid=f"wamid.demo{n}late", timestamp=yesterday
            )
            await self.post_webhook(meta_sim.delivery(SEED.waba_id, [change]))
            self.meta.customer_wrote(pnid, LATE_CUSTOMER, at=float(yesterday))  # Meta's window closed too
            await wait_until(
                lambda: (
                    self.chat_of(LATE_CUSTOMER) is not None
                    and any(m.external_id == f"wamid.demo{n}late" for m in self.chat_of(LATE_CUSTOMER).messages)
                ),
                timeout=30,
                what="yesterday's message in Open Lines",
            )
            chat = self.chat_of(LATE_CUSTOMER)
            notices = len([m for m in chat.messages if m.kind == "system"])
            await self.bitrix.operator_writes(self.portal, self.line_id, LATE_CUSTOMER, f"Sorry for the wait! ({n})")
            await wait_until(
                lambda: len([m for m in chat.messages if m.kind == "system"]) > notices,
                timeout=30,
                what="the held-back notice",
            )

        await self.step("free text outside the 24-hour window held back, notice in the chat", outside_window)
        self.say(f"scene {n} done")

    # ------------------------------------------------------------------ teardown

    async def stop(self) -> None:
        self.meta.apps[SEED.app_id].callback_url = None  # no status webhook while serve stops
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.http is not None:
            await self.http.close()
        if self.lab_task is not None and not self.lab_task.done():
            try:
                self.lab = await self.lab_task  # a started Asterisk is stopped below
            except Exception:  # noqa: BLE001 - stopping by name below either way
                pass
        if self.lab is not None:
            await asyncio.to_thread(stop_lab, self.lab)
        for name in self.instances:  # a half-started lab, too
            await asyncio.to_thread(harness.stop_instance, name)
        await self.bitrix.stop()
        if self.meta_runner is not None:
            await self.meta_runner.cleanup()

    def where(self) -> None:
        assert self.portal is not None
        print(
            f"""
Look here:
  admin panel        {self.public}/panel/   user admin, password {PASSWORD}
                     (trunk page: the verified apply; calls; chats; portals)
  Bitrix24 portal    {self.bitrix.base_url}/_sandbox/page   (Open Lines chats, call log)
  Meta               {self.meta_url}/_sandbox/page   (what the number sent)
  JSON               {self.bitrix.base_url}/_sandbox/portals/{self.portal.member_id}/openlines,
                     {self.meta_url}/_sandbox/phones/{SEED.phone_number_id}
  logs               {self.dir}/serve.log
""",
            flush=True,
        )


async def next_scene(every: float) -> None:
    """Wait `every` seconds, or for Enter when `every` is 0."""
    if every > 0:
        await asyncio.sleep(every)
        return
    loop = asyncio.get_running_loop()
    pressed: asyncio.Future[str] = loop.create_future()

    def read() -> None:  # a daemon thread: Ctrl-C while it waits must not wait for Enter
        line = sys.stdin.readline()
        loop.call_soon_threadsafe(lambda: pressed.done() or pressed.set_result(line))

    threading.Thread(target=read, name="demo-enter", daemon=True).start()
    if not await pressed:  # stdin closed: wait for Ctrl-C
        await asyncio.Event().wait()


async def run(args: argparse.Namespace) -> int:
    demo = Demo(args)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    async def main() -> None:
        await demo.start()
        demo.where()
        while args.scenes == 0 or demo.scene < args.scenes:
            await demo.play()
            if args.scenes and demo.scene >= args.scenes:
                break
            print("(next scene " + (f"in {args.every:.0f} s" if args.every else "on Enter") + "; Ctrl-C stops)")
            await next_scene(args.every)
        demo.say(f"{demo.scene} scene(s) played; everything stays up until Ctrl-C")
        await asyncio.Event().wait()

    task = asyncio.ensure_future(main())
    waiter = asyncio.ensure_future(stopping.wait())
    code = 0
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and task.exception() is not None:
            print(f"demo failed: {task.exception()!r} (logs in {demo.dir})", file=sys.stderr, flush=True)
            code = 1
    finally:
        task.cancel()
        waiter.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
        demo.say("stopping: thoth-pbx serve, both Asterisk instances, the simulators")
        await demo.stop()
        demo.say("stopped")
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=60, help="seconds between scenes (0: on Enter)")
    parser.add_argument("--scenes", type=int, default=0, help="play this many scenes, then wait for Ctrl-C (0: no end)")
    parser.add_argument("--dir", default=str(REPO / "var" / "demo"), help="work directory (wiped at start)")
    parser.add_argument("--port", type=int, default=8080, help="thoth-pbx serve (default 8080)")
    parser.add_argument("--meta-port", type=int, default=8900, help="the Meta simulator (default 8900)")
    parser.add_argument("--bitrix-port", type=int, default=8480, help="the Bitrix24 simulator (default 8480)")
    parser.add_argument("--free-ports", action="store_true", help="pick free ports instead (tests)")
    parser.add_argument("--lab", default="demo", help="harness instance names: thoth-LAB and thoth-LAB-meta")
    args = parser.parse_args()
    reason = harness.unavailable_reason()
    if reason:
        print(f"demo: {reason}", file=sys.stderr)
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
