"""Recording a WhatsApp call: a snoop channel on the WhatsApp leg, the file fetched over ARI and
written off the event loop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from thoth_pbx.clients.asterisk.ari import AriClient, AriError
from thoth_pbx.features.calls import callflow as cf
from thoth_pbx.features.calls.entering import Entering

log = logging.getLogger(__name__)

SNOOP_ARG = "thoth-recorder"


class CallRecorder:
    def __init__(self, ari: AriClient, entering: Entering, recordings_dir: Path | None) -> None:
        self.ari = ari
        self.entering = entering
        self.recordings_dir = recordings_dir
        # live recordings by name, until Asterisk says the file is complete (RecordingFinished)
        self._recordings: dict[str, asyncio.Future[None]] = {}

    def finished(self, name: str) -> None:
        """RecordingFinished / RecordingFailed from the event intake."""
        done = self._recordings.get(name)
        if done is not None and not done.done():
            done.set_result(None)

    async def start(self, state: cf.CallState) -> None:
        """Record the WhatsApp leg through a snoop channel (both directions), not the bridge.

        Recording a bridge adds a third channel to it, which turns the two-party bridge from
        passing Opus through into mixing: every leg decoded and encoded again, about 7x the
        CPU of the call (docs/benchmarks-calls.md). A snoop only decodes a copy."""
        name = f"thoth-{state.linkedid}".replace("/", "-")
        snoop_id = f"{state.channel_id}-rec"
        async with self.entering.expect(snoop_id) as entered:
            try:
                await self.ari.request(
                    "POST",
                    f"/channels/{state.channel_id}/snoop",
                    params={
                        "spy": "both",
                        "app": self.ari.app,
                        "appArgs": f"{SNOOP_ARG},{state.call_id}",
                        "snoopId": snoop_id,
                    },
                )
                state.recorder_channel = snoop_id
                async with asyncio.timeout(5.0):
                    await entered  # like a created leg: usable after its StasisStart
                self._recordings[name] = asyncio.get_running_loop().create_future()
                await self.ari.request(
                    "POST",
                    f"/channels/{snoop_id}/record",
                    params={"name": name, "format": "wav", "ifExists": "overwrite"},
                )
                state.recording = name
            except (TimeoutError, AriError) as exc:
                log.warning(
                    "recording failed to start", extra={"call": state.call_id, "error": str(exc) or "no StasisStart"}
                )
                self._recordings.pop(name, None)

    async def stop(self, state: cf.CallState) -> None:
        """Stop the recording and wait until the file is complete (the stop is asynchronous:
        fetched earlier, the file can be empty)."""
        if not state.recording:
            return
        try:
            await self.ari.request("POST", f"/recordings/live/{state.recording}/stop")
        except AriError:
            pass  # already stopped when the snooped channel went away
        finished = self._recordings.get(state.recording)
        if finished is not None:
            try:
                async with asyncio.timeout(5.0):
                    await asyncio.shield(finished)
            except TimeoutError:
                log.warning("recording not finished after 5 s", extra={"call": state.call_id})
            finally:
                self._recordings.pop(state.recording, None)

    async def fetch(self, state: cf.CallState) -> Path | None:
        """The stored file, copied into `recordings_dir` (the write runs in a worker thread: a
        long call's wav is megabytes, too much for the event loop)."""
        if self.recordings_dir is None or state.recording is None:
            return None
        try:
            data = await self.ari.request_bytes("GET", f"/recordings/stored/{state.recording}/file")
        except AriError as exc:
            log.warning("recording not available", extra={"call": state.call_id, "error": str(exc)})
            return None
        path = self.recordings_dir / f"{state.recording}.wav"
        await asyncio.to_thread(_write, path, data)
        return path


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
