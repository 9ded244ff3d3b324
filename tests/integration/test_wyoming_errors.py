"""Bad input on the Wyoming front door: clear errors, nothing lost, everyone else served."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from wyoming.event import Event, async_read_event
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from chorus.server.runtime import Runtime
from chorus.server.settings import ServerSettings
from tests.conftest import (
    JOE,
    ServerProcess,
    describe,
    free_port,
    pcm_of,
    read_until,
    tcp_client,
)


async def _error_for(server: ServerProcess, *events: Event) -> Event:
    """The error answering ``events``; a failed plain ``synthesize`` then ends the
    connection (Home Assistant up to 2025.6 waits for that), any other keeps it."""
    async with server.client() as client:
        for event in events:
            await client.write_event(event)
        *_, last = await read_until(client, "audio-stop", "synthesize-stopped")
        assert last.type == "error", last
        if events[-1].type == "synthesize":
            assert await asyncio.wait_for(client.read_event(), 1.0) is None
            return last
        # The connection survives a request error and serves the next request.
        await client.write_event(Synthesize("Still here.").event())
        after = await read_until(client, "audio-stop")
        assert after[-1].type == "audio-stop" and pcm_of(after)
        return last


async def test_plain_request_error_then_end_of_connection_within_a_second(
        server: ServerProcess) -> None:
    """What Home Assistant's wyoming integration sees (AsyncTcpClient, one request)."""
    async with tcp_client(server.port) as client:
        await client.write_event(Synthesize(
            "Hi.", voice=SynthesizeVoice(name="no-such-voice")).event())
        error = await asyncio.wait_for(client.read_event(), 10)
        assert error is not None and error.type == "error", error
        assert error.data["code"] == "unknown-voice"
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await asyncio.wait_for(client.read_event(), 1.0) is None
        assert loop.time() - started < 1.0


async def test_stream_error_keeps_the_connection(server: ServerProcess) -> None:
    async with server.client() as client:
        await client.write_event(SynthesizeStart(
            voice=SynthesizeVoice(name="no-such-voice")).event())
        await client.write_event(SynthesizeChunk("Hi there.").event())
        await client.write_event(SynthesizeStop().event())
        events = await read_until(client, "synthesize-stopped")
        assert events[-1].type == "error" and events[-1].data["code"] == "unknown-voice"
        events = await read_until(client, "synthesize-stopped")
        assert events[-1].type == "synthesize-stopped"
        await client.write_event(Synthesize("Still here.").event())
        after = await read_until(client, "audio-stop")
        assert after[-1].type == "audio-stop" and pcm_of(after)


async def test_unknown_voice_names_close_matches(server: ServerProcess) -> None:
    error = await _error_for(server, Synthesize(
        "Hi.", voice=SynthesizeVoice(name="en_US-joe-mediun")).event())
    assert error.data["code"] == "unknown-voice"
    assert JOE in error.data["text"]


async def test_unknown_speaker_speaks_with_speaker_0_and_warns(
        server: ServerProcess) -> None:
    logged = len(server.output())
    async with server.client() as client:
        await client.write_event(Synthesize(
            "Hi.", voice=SynthesizeVoice(name=JOE, speaker="nobody")).event())
        events = await read_until(client, "audio-stop")
    assert events[-1].type == "audio-stop" and pcm_of(events)
    log = server.output()[logged:]
    assert "WARNING" in log and "'nobody'" in log and "speaker 0" in log


async def test_unknown_speaker_is_refused_with_strict_speakers(tmp_path: Path) -> None:
    server = ServerProcess(["--strict-speakers", "--no-http"], tmp_path / "log")
    try:
        error = await _error_for(server, Synthesize(
            "Hi.", voice=SynthesizeVoice(name=JOE, speaker="nobody")).event())
        assert error.data["code"] == "unknown-speaker"
    finally:
        assert server.terminate() == 0


async def test_empty_text(server: ServerProcess) -> None:
    error = await _error_for(server, Synthesize("   ").event())
    assert error.data["code"] == "empty-text"


async def test_over_long_text(server: ServerProcess) -> None:
    error = await _error_for(server, Synthesize("word " * 2001).event())
    assert error.data["code"] == "text-too-long"
    assert "10000" in error.data["text"]


@pytest.mark.parametrize("data", [
    {"text": 42},
    {"voice": {"name": JOE}},
    {"text": "Hi.", "voice": "en_US-joe-medium"},
    {"text": "Hi.", "voice": {"name": 7}},
])
async def test_malformed_synthesize(server: ServerProcess, data: dict[str, object]) -> None:
    error = await _error_for(server, Event("synthesize", data))
    assert error.data["code"] == "bad-request"


async def test_chunk_outside_a_stream(server: ServerProcess) -> None:
    error = await _error_for(server, SynthesizeChunk("hello").event())
    assert error.data["code"] == "bad-request"


async def _raw(server: ServerProcess, payload: bytes) -> bytes:
    """Send raw bytes; return everything the server says before closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(payload)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)  # EOF: the server closed
    finally:
        writer.close()


@pytest.mark.parametrize("payload", [
    b"\x00\xff garbage \xfe\n",
    b"not json at all\n",
    b"[1, 2, 3]\n",
    b'{"data": {}}\n',
    b'{"type": "synthesize", "data_length": 99999999999}\n',
    b'{"type": "audio-chunk", "payload_length": 1000000000000}\n',
    b'{"type": "synthesize", "payload_length": -5}\n',
    b'{"type": "synthesize", "data_length": 5}\nnope!',
    b"x" * 200_000 + b"\n",
], ids=["binary", "text", "array", "no-type", "data-length", "payload-length",
        "negative", "bad-data", "huge-line"])
async def test_protocol_garbage_closes_only_that_connection(
        server: ServerProcess, payload: bytes) -> None:
    async with server.client() as bystander:
        said = await _raw(server, payload)
        lines = [json.loads(line) for line in said.splitlines() if line.startswith(b"{")]
        assert any(line.get("type") == "error" for line in lines), said[:300]
        info = await describe(bystander)  # everyone else is still served
    assert info.tts


_DEEP = b"[" * 2000 + b"]" * 2000
_DEEP_DATA = b'{"nested": ' + _DEEP + b"}"
_SURROGATE_DATA = b'{"text": "\\ud800 alone"}'


@pytest.mark.parametrize("payload", [
    b'{"type": "ping", "deep": ' + _DEEP + b"}\n",
    b'{"type": "ping", "data_length": %d}\n' % len(_DEEP_DATA) + _DEEP_DATA,
    b'{"type": "ping", "data": {"text": "\\udc00"}}\n',
    b'{"type": "ping", "data_length": %d}\n' % len(_SURROGATE_DATA) + _SURROGATE_DATA,
], ids=["deep-header", "deep-data", "surrogate-header", "surrogate-data"])
async def test_hostile_json_is_a_protocol_error_without_traceback(
        server: ServerProcess, payload: bytes) -> None:
    logged = len(server.output())
    said = await _raw(server, payload)  # returns at EOF: the server closed
    reader = asyncio.StreamReader()
    reader.feed_data(said)
    reader.feed_eof()
    error = await async_read_event(reader)
    assert error is not None and error.type == "error", said[:300]
    assert error.data["code"] == "protocol-error"
    assert await async_read_event(reader) is None
    await asyncio.sleep(0.2)
    assert "Traceback" not in server.output()[logged:]


async def test_busy_is_answered_at_once(tmp_path: Path) -> None:
    server = ServerProcess(["--max-requests", "1", "--workers", "1"], tmp_path / "log")
    try:
        async with server.client() as first, server.client() as second:
            await first.write_event(Synthesize("This one takes a while to say. " * 20).event())
            started = await asyncio.wait_for(first.read_event(), 30)
            assert started is not None and started.type == "audio-start"
            loop = asyncio.get_running_loop()
            sent = loop.time()
            await second.write_event(Synthesize("Me too.").event())
            [error] = await read_until(second, "audio-stop")
            assert error.type == "error" and error.data["code"] == "busy"
            assert loop.time() - sent < 1.0
            assert await asyncio.wait_for(second.read_event(), 1.0) is None  # then closed
            rest = await read_until(first, "audio-stop", limit=120)
            assert rest[-1].type == "audio-stop"
        async with server.client() as again:
            await again.write_event(Synthesize("Me too.").event())
            assert (await read_until(again, "audio-stop"))[-1].type == "audio-stop"
    finally:
        assert server.terminate() == 0


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(["--workers", "1"], tmp_path / "log")
    yield server
    server.terminate()


async def test_sigterm_finishes_in_flight_work_and_exits_zero(
        small_server: ServerProcess) -> None:
    async with small_server.client() as client:
        await client.write_event(Synthesize("A long goodbye, spoken slowly. " * 6).event())
        first = await asyncio.wait_for(client.read_event(), 30)
        assert first is not None and first.type == "audio-start"
        code_task = asyncio.create_task(asyncio.to_thread(small_server.terminate))
        events = await read_until(client, "audio-stop", limit=60)
        assert events[-1].type == "audio-stop"
        assert len(pcm_of(events)) / 2 / 22050 > 8.0
    assert await code_task == 0
    assert "Stopped" in small_server.output()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", small_server.port)



async def _until_not_busy(server: ServerProcess, within: float) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < within:
        async with server.client() as client:
            await client.write_event(Synthesize("Is the slot free?").event())
            events = await read_until(client, "audio-stop")
        if events[-1].type == "audio-stop":
            return loop.time() - started
        assert events[-1].data["code"] == "busy"
        await asyncio.sleep(0.5)
    raise AssertionError(f"still busy after {within} s")


async def test_a_client_that_stops_reading_loses_its_slot(tmp_path: Path) -> None:
    server = ServerProcess(["--max-requests", "1", "--client-timeout", "1"], tmp_path / "log")
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        request = {"type": "synthesize", "data": {"text": "Nobody listens to this. " * 100}}
        sock.sendall(json.dumps(request).encode() + b"\n")  # ~150 s of audio, never read
        try:
            # The server's socket buffer takes up to ~4 MB (about 95 s of audio) before a
            # write stalls, so how soon the stall comes depends on synthesis speed, i.e.
            # on the machine's load; once it has come, the slot is free within seconds.
            deadline = asyncio.get_running_loop().time() + 240
            while "left audio unread" not in server.output():
                assert asyncio.get_running_loop().time() < deadline, server.output()[-2000:]
                await asyncio.sleep(0.5)
            await _until_not_busy(server, within=10)
        finally:
            sock.close()
    finally:
        assert server.terminate() == 0


async def test_a_forgotten_stream_is_closed(tmp_path: Path) -> None:
    server = ServerProcess(["--max-requests", "1", "--stream-idle-timeout", "1"],
                           tmp_path / "log")
    try:
        async with server.client() as idle:
            await idle.write_event(SynthesizeStart().event())
            await idle.write_event(SynthesizeChunk("Half a sent").event())
            [timeout] = await read_until(idle, "synthesize-stopped", limit=10)
            assert timeout.data["code"] == "timeout"
            assert await asyncio.wait_for(idle.read_event(), 5) is None  # closed
        assert await _until_not_busy(server, within=5) < 5
    finally:
        assert server.terminate() == 0


@pytest.mark.parametrize("text", ["\x00\x01\x02 hello", "😀😀😀", "a" * 3000, "...", "\u200b",
                                  "Ünïcödé ñ 你好 مرحبا", "[[ hɛloʊ ]] world"])
async def test_odd_texts_get_audio_or_a_clear_error(server: ServerProcess, text: str) -> None:
    async with server.client() as client:
        await client.write_event(Synthesize(text).event())
        events = await read_until(client, "audio-stop")
    assert events[-1].type == "audio-stop", events[-1]
    assert events[0].type == "audio-start"


async def test_control_characters_only_is_empty_text(server: ServerProcess) -> None:
    error = await _error_for(server, Synthesize("\x00\x07\x1b").event())
    assert error.data["code"] == "empty-text"


async def test_stopping_with_an_idle_connection_logs_no_error(
        caplog: pytest.LogCaptureFixture, graph_cache_dir: Path) -> None:
    """In process, so the loop's own error log (asyncio's stream callback) is seen."""
    port = free_port()
    runtime = Runtime(ServerSettings(wyoming_uri=f"tcp://127.0.0.1:{port}", http=False,
                                     graph_cache_dir=graph_cache_dir))
    await runtime.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.sleep(0.2)  # the connection is served and waits for an event
        with caplog.at_level(logging.DEBUG):
            await runtime.stop()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, politely
            await asyncio.sleep(0.1)  # callbacks of the finished connection task run
    finally:
        writer.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_events_behind_a_failed_plain_request_stay_unanswered(
        server: ServerProcess) -> None:
    """After a failed plain ``synthesize`` the connection is ending: events the server
    had already read behind it get no answer (writing one after the half-close raised
    ``RuntimeError`` and logged a traceback), and the connection closes."""
    logged = len(server.output())
    request = (b'{"type": "synthesize", "data": {"text": "Hi.", '
               b'"voice": {"name": "no-such-voice"}}}\n')
    for _ in range(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        # One write: the server reads all of it at once, so its close is no reset.
        writer.write(request + b'{"type": "describe"}\n' * 30)
        writer.write_eof()
        answers: list[Event] = []
        try:
            async with asyncio.timeout(10):
                while (answer := await async_read_event(reader)) is not None:
                    answers.append(answer)
        finally:
            writer.close()
        kinds = [answer.type for answer in answers]
        assert "error" in kinds, kinds
        assert kinds[kinds.index("error") + 1:] == [], kinds  # nothing after the error
        assert set(kinds) <= {"info", "error"}, kinds
    await asyncio.sleep(0.2)
    assert "Traceback" not in server.output()[logged:], server.output()[logged:][-3000:]
