"""scripts/demo.py as a process for tests: started headless on free ports, read until its first
scene is done, stopped with SIGINT (Ctrl-C) as a person would."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import asterisk as harness

REPO = Path(__file__).resolve().parents[2]


@dataclass
class DemoRun:
    proc: subprocess.Popen[bytes]
    out: list[str] = field(default_factory=list)
    bitrix: str = ""  # base URLs the demo printed
    meta: str = ""
    panel: str = ""
    password: str = ""
    serve_pid: int = 0
    instances: tuple[str, str] = ("", "")  # its two harness Asterisk instances

    @property
    def text(self) -> str:
        return "".join(self.out)

    def read_until(self, marker: str, timeout: float = 120) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.out):
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} in time:\n{self.text}"
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                line = self.proc.stdout.readline().decode()
                assert line, f"the demo ended early:\n{self.text}"
                self.out.append(line)

    def stop(self, timeout: float = 60) -> tuple[int, str]:
        """Ctrl-C: its exit code and what it printed while stopping."""
        self.proc.send_signal(signal.SIGINT)
        rest, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, rest.decode()

    def kill(self) -> None:
        """At the end of a test: nothing may stay behind, passed or failed."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.serve_pid and alive(self.serve_pid):
            os.kill(self.serve_pid, signal.SIGKILL)
        for name in self.instances:
            harness.sandbox.remove(name)  # stopped if running, and its directory gone


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read().decode()
        return json.loads(body) if resp.headers.get_content_type() == "application/json" else body


def start_demo(work: Path) -> DemoRun:
    """One scene, then everything stays up until `stop()`."""
    lab = f"demo-{os.getpid()}"  # not the names a person's `make demo` uses
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--scenes", "1", "--free-ports", "--dir", str(work)]
        + ["--lab", lab],
        stdin=subprocess.DEVNULL,
        bufsize=0,  # unbuffered: select() sees every line not yet read
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    run = DemoRun(proc, instances=(f"thoth-{lab}", f"thoth-{lab}-meta"))
    try:
        run.read_until("scene 1 done")
        text = run.text
        bitrix = re.search(r"Bitrix24 portal\s+(http://\S+)/_sandbox/page", text)
        meta = re.search(r"Meta\s+(http://\S+)/_sandbox/page", text)
        panel = re.search(r"admin panel\s+(http://\S+)/panel/\s+user admin, password (\S+)", text)
        serve_pid = re.search(r"serve pid (\d+)", text)
        assert bitrix and meta and panel and serve_pid, text
        run.bitrix, run.meta, run.panel, run.password = bitrix[1], meta[1], panel[1], panel[2]
        run.serve_pid = int(serve_pid[1])
    except BaseException:
        run.kill()
        raise
    return run
