"""Start-up order: the doors open once the voices are scanned, before the default voice
is warm, so ``describe`` is answered at once; readiness waits for the warm voice, and a
request that comes early is served when the load is done.

In process, with the real Piper engine whose load is held until the test lets it go,
so "before" and "after" do not depend on how fast this machine is.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aiohttp
import pytest
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize

from chorus.server.engines.base import VoiceSpec
from chorus.server.engines.piper import PiperEngine, PiperLoadedVoice
from chorus.server.runtime import Runtime
from chorus.server.settings import ServerSettings
from tests.conftest import JOE, describe, free_port, pcm_of, read_until


async def _connected(port: int) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
            else:
                writer.close()
                return


async def test_describe_is_answered_while_the_default_voice_warms(
        graph_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    load = PiperEngine.load

    def held_load(self: PiperEngine, spec: VoiceSpec) -> PiperLoadedVoice:
        release.wait(60)
        return load(self, spec)

    monkeypatch.setattr(PiperEngine, "load", held_load)
    port, http_port = free_port(), free_port()
    runtime = Runtime(ServerSettings(wyoming_uri=f"tcp://127.0.0.1:{port}",
                                     http_host="127.0.0.1", http_port=http_port,
                                     graph_cache_dir=graph_cache_dir))
    starting = asyncio.create_task(runtime.start())
    try:
        await _connected(port)
        async with AsyncTcpClient("127.0.0.1", port) as client, \
                aiohttp.ClientSession(f"http://127.0.0.1:{http_port}") as http:
            info = await describe(client)
            assert [voice.name for voice in info.tts[0].voices] == [JOE]
            await client.write_event(Synthesize("Spoken once the voice is warm.").event())
            await asyncio.sleep(0.3)
            async with http.get("/health/ready") as response:
                assert response.status == 503
                assert "not loaded" in await response.text()
            assert not starting.done()
            release.set()
            events = await read_until(client, "audio-stop")
            assert events[-1].type == "audio-stop", events[-1]
            assert len(pcm_of(events)) > 22050  # more than half a second of speech
            await asyncio.wait_for(starting, 60)
            async with http.get("/health/ready") as response:
                assert response.status == 200
    finally:
        release.set()
        if not starting.done():
            await asyncio.wait_for(starting, 60)
        await runtime.stop()
