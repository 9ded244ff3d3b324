"""The early door: ``describe`` answered from the last start's snapshot before the
runtime exists, and every connection handed to the runtime once it does, with what the
client already sent answered as if the runtime had had it from the start.

In process, so that "before the runtime" lasts as long as the test wants; then through
the real ``chorus serve``, started twice on the same settings.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import pytest
from wyoming.client import AsyncClient, AsyncTcpClient
from wyoming.info import Describe
from wyoming.tts import Synthesize

from chorus.server.early_door import EarlyDoor
from chorus.server.runtime import Runtime
from chorus.server.settings import ServerSettings
from tests.conftest import (
    CHORUS,
    JOE,
    REPO,
    ServerProcess,
    copy_joe,
    describe,
    free_port,
    pcm_of,
    read_until,
)
from tests.early_starts import early_door_after_a_start


def _settings(graph_cache_dir: Path, port: int) -> ServerSettings:
    return ServerSettings(wyoming_uri=f"tcp://127.0.0.1:{port}", http=False,
                          graph_cache_dir=graph_cache_dir)


async def _nothing_within(client: AsyncTcpClient, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.read_event(), seconds)


async def test_describe_before_the_runtime_and_everything_else_after(
        tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(tmp_path / "cache", port)
    assert await EarlyDoor.open(settings) is None  # no start with these settings yet
    first = Runtime(settings)
    await first.start()
    async with AsyncTcpClient("127.0.0.1", port) as client:
        live = (await describe(client)).event().data
    await first.stop()
    assert [v["name"] for v in live["tts"][0]["voices"]] == [JOE]

    door = await EarlyDoor.open(settings)
    assert door is not None
    runtime: Runtime | None = None
    try:
        async with AsyncTcpClient("127.0.0.1", port) as early, \
                AsyncTcpClient("127.0.0.1", port) as speaker, \
                AsyncTcpClient("127.0.0.1", port) as idle:
            assert (await describe(early)).event().data == live
            assert (await describe(early)).event().data == live
            await speaker.write_event(Synthesize("Said once the server is there.").event())
            await _nothing_within(speaker, 0.5)  # waits: nothing can speak yet
            runtime = Runtime(settings)
            await runtime.start(early_door=door)
            events = await read_until(speaker, "audio-stop")
            assert events[-1].type == "audio-stop", events[-1]
            assert len(pcm_of(events)) > 22050  # more than half a second of speech
            assert (await describe(idle)).event().data == live  # now the runtime's answer
            assert (await describe(early)).event().data == live
            async with AsyncTcpClient("127.0.0.1", port) as later:
                assert (await describe(later)).event().data == live
    finally:
        if runtime is not None:
            await runtime.stop()
        await door.close()


async def test_a_protocol_error_in_the_early_door_is_answered_by_the_runtime(
        tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(tmp_path / "cache", port)
    door = await early_door_after_a_start(settings)
    runtime = Runtime(settings)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"this is not an event\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        assert not reader.at_eof()  # held until the runtime is there
        await runtime.start(early_door=door)
        answer = await asyncio.wait_for(reader.read(), 10)  # the error, then the close
        assert b"protocol-error" in answer, answer
        writer.close()
    finally:
        await runtime.stop()
        await door.close()


async def test_closing_before_the_runtime_is_there_lets_waiting_clients_go(
        tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(tmp_path / "cache", port)
    door = await early_door_after_a_start(settings)
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await describe(client)
        await client.write_event(Synthesize("Never said.").event())
        await asyncio.wait_for(door.close(), 5)
        assert await asyncio.wait_for(client.read_event(), 5) is None
    with pytest.raises(ConnectionRefusedError):  # the listener is closed too
        await asyncio.open_connection("127.0.0.1", port)


@pytest.mark.parametrize("scheme", ["tcp", "unix"])
def test_chorus_serve_answers_describe_from_its_last_start(tmp_path: Path,
                                                           scheme: str) -> None:
    """The real command twice on the same settings: the second start says it opened
    early and answers describe exactly as the first did, and its voice list follows a
    voice added in between; SIGTERM still ends it with 0."""
    voices = tmp_path / "voices"
    voices.mkdir()
    args = ["--graph-cache-dir", str(tmp_path / "cache"), "--http-port", str(free_port()),
            "--voices-dir", str(voices)]
    uri = (f"tcp://127.0.0.1:{free_port()}" if scheme == "tcp"
           else f"unix://{tmp_path / 'wyoming.sock'}")

    async def describe_once() -> dict[str, object]:
        async with AsyncClient.from_uri(uri) as client:
            return (await describe(client)).event().data

    answers = []
    for start in range(3):
        if start == 2:
            copy_joe(voices, "en_US-added-medium")  # the snapshot no longer holds
        server = ServerProcess(args, tmp_path / f"start{start}.log", uri=uri)
        try:
            answers.append(asyncio.run(describe_once()))
            early = "describe is answered from the last start's voice list" in server.output()
            assert early == (start == 1), server.output()
        finally:
            assert server.terminate() == 0, server.output()
    assert answers[0] == answers[1]
    assert [v["name"] for v in answers[2]["tts"][0]["voices"]] == [  # type: ignore[index]
        "en_US-added-medium", JOE]


def test_a_stop_while_the_runtime_is_imported_exits_cleanly(tmp_path: Path) -> None:
    """SIGTERM as soon as the early door answers: the process ends with 0, not a
    traceback, whatever the runtime's import was doing."""
    port = free_port()
    args = ["serve", "--wyoming-uri", f"tcp://127.0.0.1:{port}", "--no-http",
            "--graph-cache-dir", str(tmp_path / "cache")]
    command = [*CHORUS, *args]
    first = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE)
    try:
        asyncio.run(_describe_when_open(port))
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
    second = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    asyncio.run(_describe_when_open(port))
    second.send_signal(signal.SIGTERM)
    _, errors = second.communicate(timeout=60)
    assert second.returncode == 0, errors
    assert "answered from the last start's voice list" in errors
    assert "Traceback" not in errors


async def _describe_when_open(port: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            async with AsyncTcpClient("127.0.0.1", port) as client:
                await client.write_event(Describe().event())
                event = await asyncio.wait_for(client.read_event(), 30)
                assert event is not None and event.type == "info"
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)
