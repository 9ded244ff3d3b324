"""A voice synced into a running server's voices directory is usable over Wyoming."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from wyoming.tts import Synthesize, SynthesizeVoice

from tests.conftest import CHORUS, ServerProcess, describe, pcm_of, read_until
from tests.integration.voice_servers import (
    CONFIG_SHA,
    JOE,
    MODEL_SHA,
    running_server,
)

NAME = "en_US-synced-medium"


async def test_synced_voice_speaks_without_a_restart(tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    voices.mkdir()
    server = ServerProcess(["--voices-dir", str(voices), "--rescan-interval", "0.5",
                            "--no-http"], tmp_path / "server.log")
    try:
        with running_server() as files:
            manifest = tmp_path / "manifest.json"
            manifest.write_text(json.dumps({"version": 1, "voices": [
                {"name": NAME,
                 "source": {"url": {"model": files.url(f"{JOE}.onnx"),
                                    "config": files.url(f"{JOE}.onnx.json")}},
                 "sha256": {"model": MODEL_SHA, "config": CONFIG_SHA}}]}))
            result = await asyncio.to_thread(
                subprocess.run, [*CHORUS, "voices", "sync", "--manifest", str(manifest),
                                 "--dest", str(voices), "--once"],
                capture_output=True, text=True, timeout=120, check=False)
            assert result.returncode == 0, result.stderr

        async with server.client() as client:
            for _ in range(100):
                info = await describe(client)
                if NAME in [voice.name for voice in info.tts[0].voices]:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"{NAME} never appeared:\n{server.output()}")
            await client.write_event(Synthesize("Synced and speaking.", voice=SynthesizeVoice(
                name=NAME)).event())
            events = await read_until(client, "audio-stop")
            assert pcm_of(events), [e.type for e in events]
    finally:
        assert server.terminate() == 0, server.output()
    # the status file and temp names never confused the server's scan
    assert "chorus-status" not in server.output()
