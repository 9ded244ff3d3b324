"""Bounds of the front doors: pipelining, idle connections, the connection caps and slow
HTTP clients, against one server with short limits (real sockets, real clients)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import aiohttp
import pytest
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart

from tests.conftest import ServerProcess, describe, read_until

IDLE = 1.0
CAP = 4
BACKLOG = 300
MAX_REQUESTS = 8
LONG = "This sentence takes a little while to say out loud. " * 20


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("bounds") / "server.log"
    server = ServerProcess(["--workers", "1", "--idle-timeout", str(IDLE),
                            "--max-connections", str(CAP), "--max-http-connections", str(CAP),
                            "--max-pipelined", str(BACKLOG),
                            "--max-requests", str(MAX_REQUESTS),
                            "--http-keepalive-timeout", "1", "--http-body-timeout", "1"], log)
    yield server
    code = server.terminate()
    assert code == 0, server.output()
    assert "Task was destroyed" not in server.output()
    assert "RecursionError" not in server.output()


async def _gauge(server: ServerProcess, name: str) -> float:
    async with aiohttp.ClientSession() as session, \
            session.get(f"{server.http_url}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _pipeline(port: int, count: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    line = json.dumps({"type": "synthesize", "data": {"text": LONG}}).encode() + b"\n"
    sock.sendall(line * count)
    return sock


async def _counter(server: ServerProcess, name: str, door: str) -> float:
    return await _gauge(server, f'{name}{{door="{door}"}}')


async def _wait_for_zero(server: ServerProcess, within: float) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while (active := await _gauge(server, "chorus_active_requests")) > 0:
        assert loop.time() - started < within, f"{active} requests still active"
        await asyncio.sleep(0.05)
    return loop.time() - started


async def _served(server: ServerProcess) -> None:
    async with server.client() as client:
        await client.write_event(Synthesize("Still here.").event())
        events = await read_until(client, "audio-stop", limit=30)
    assert events[-1].type == "audio-stop", events[-1]


async def test_a_departed_pipeline_is_cancelled_at_once(bounded: ServerProcess) -> None:
    logged = len(bounded.output())
    sock = _pipeline(bounded.port, 200)
    sock.settimeout(30)
    assert sock.recv(1 << 16)  # the first request is being answered
    assert await _gauge(bounded, "chorus_active_requests") == 1
    sock.close()
    assert await _wait_for_zero(bounded, within=2.0) < 2.0
    await _served(bounded)  # its reservations were given back too
    tail = bounded.output()[logged:]
    assert "Traceback" not in tail and "ERROR" not in tail, tail


async def test_queued_requests_count_against_max_requests(bounded: ServerProcess) -> None:
    sock = _pipeline(bounded.port, MAX_REQUESTS)
    try:
        sock.settimeout(30)
        assert sock.recv(1 << 16)
        async with bounded.client() as other:
            await other.write_event(Synthesize("Room for me?").event())
            [error] = await read_until(other, "audio-stop")
        assert error.type == "error" and error.data["code"] == "busy", error
    finally:
        sock.close()
    await _wait_for_zero(bounded, within=2.0)
    await _served(bounded)


async def test_backlog_overflow_is_busy_then_closed(bounded: ServerProcess) -> None:
    client = AsyncTcpClient("127.0.0.1", bounded.port)
    async with client:
        for _ in range(BACKLOG + 10):
            await client.write_event(Synthesize(LONG).event())
        while True:
            event = await asyncio.wait_for(client.read_event(), 30)
            assert event is not None, "closed without the busy error"
            if event.type == "error" and "pipelined" in event.data["text"]:
                break
        assert event.data["code"] == "busy"
        while (event := await asyncio.wait_for(client.read_event(), 10)) is not None:
            assert event.type in {"audio-chunk", "audio-stop"}, event  # then closed
    await _wait_for_zero(bounded, within=2.0)


async def test_a_waiting_streams_chunks_count_in_the_backlog(bounded: ServerProcess) -> None:
    """A stream queued behind a request in progress holds its text in the backlog: each
    chunk counts, with the stream's start, against ``--max-pipelined``."""
    client = AsyncTcpClient("127.0.0.1", bounded.port)
    async with client:
        await client.write_event(Synthesize(LONG).event())  # in progress for a while
        await client.write_event(SynthesizeStart().event())
        for _ in range(BACKLOG + 10):
            await client.write_event(SynthesizeChunk("Word. ").event())
        while True:
            event = await asyncio.wait_for(client.read_event(), 30)
            assert event is not None, "closed without the busy error"
            if event.type == "error":
                break
        assert event.data["code"] == "busy", event
        assert f"{BACKLOG} wait behind" in event.data["text"], event
    await _wait_for_zero(bounded, within=2.0)


async def test_an_idle_connection_is_closed_after_the_timeout(bounded: ServerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", bounded.port)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    waited = time.monotonic() - started
    writer.close()
    assert IDLE * 0.8 < waited < IDLE + 3, waited


async def test_a_request_in_progress_is_not_idle(bounded: ServerProcess) -> None:
    async with bounded.client() as client:
        await client.write_event(Synthesize(LONG).event())
        started = time.monotonic()
        events = await read_until(client, "audio-stop", limit=60)
        assert events[-1].type == "audio-stop"
        assert time.monotonic() - started > IDLE  # the answer took longer than the limit
        assert await describe(client)  # and the connection is still open


async def _still_open(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 0.5) != b""
    except TimeoutError:
        return True
    except ConnectionError:
        return False


async def test_at_the_cap_the_longest_idle_connection_makes_room(
        bounded: ServerProcess) -> None:
    held = [await asyncio.open_connection("127.0.0.1", bounded.port) for _ in range(CAP)]
    try:
        await asyncio.sleep(0.2)
        async with bounded.client() as fresh:
            assert await describe(fresh)
        assert not await _still_open(held[0][0])  # the oldest went to make room
        assert await _still_open(held[-1][0])  # the newest did not
        assert await _counter(bounded, "chorus_connections_evicted_total",
                              "wyoming") >= 1
    finally:
        for _, writer in held:
            writer.close()


async def test_when_every_connection_is_busy_a_newcomer_is_refused(
        bounded: ServerProcess) -> None:
    streams = []
    try:
        for _ in range(CAP):  # an open stream is a request in progress
            client = bounded.client()
            await client.connect()
            await client.write_event(SynthesizeStart().event())
            streams.append(client)
        await asyncio.sleep(0.3)
        async with bounded.client() as extra:
            error = await asyncio.wait_for(extra.read_event(), 5)
            assert error is not None and error.type == "error", error
            assert error.data["code"] == "busy"
            assert await asyncio.wait_for(extra.read_event(), 5) is None
        await streams.pop(0).disconnect()  # one leaves: room again
        await asyncio.sleep(0.3)
        async with bounded.client() as fresh:
            assert await describe(fresh)
    finally:
        for client in streams:
            await client.disconnect()
    assert await _counter(bounded, "chorus_connections_refused_total", "wyoming") >= 1


async def test_http_at_the_cap_the_longest_idle_connection_makes_room(
        bounded: ServerProcess) -> None:
    assert bounded.http_port is not None
    held = [await asyncio.open_connection("127.0.0.1", bounded.http_port)
            for _ in range(CAP)]
    try:
        await asyncio.sleep(0.2)
        async with aiohttp.ClientSession() as session, \
                session.get(f"{bounded.http_url}/health/live") as response:
            assert response.status == 200
        assert not await _still_open(held[0][0])
        assert await _still_open(held[-1][0])
    finally:
        for _, writer in held:
            writer.close()


async def test_http_when_every_connection_is_busy_a_newcomer_gets_503(
        bounded: ServerProcess) -> None:
    assert bounded.http_port is not None
    body = json.dumps({"text": " ".join([LONG[:52]] * 3), "use_cache": False}).encode()
    busy = []
    for n in range(CAP):  # from several addresses: the per-client limit stays out of it
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", bounded.http_port, local_addr=(f"127.0.0.{n + 2}", 0))
        writer.write(b"POST /synthesize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        busy.append((reader, writer))
    try:
        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession() as session, \
                session.get(f"{bounded.http_url}/health/live") as response:
            assert response.status == 503, await response.text()
            assert response.headers["Retry-After"] == "1"
            assert (await response.json())["error"]["code"] == "busy"
        for reader, _ in busy:  # and the requests in progress are answered in full
            assert (await asyncio.wait_for(reader.readline(), 60)).startswith(
                b"HTTP/1.1 200")
    finally:
        for _, writer in busy:
            writer.close()
    await _wait_for_zero(bounded, within=30.0)
    assert await _counter(bounded, "chorus_connections_refused_total", "http") >= 1


async def test_a_slowloris_http_client_is_cut_off(bounded: ServerProcess) -> None:
    assert bounded.http_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", bounded.http_port)
    writer.write(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    answer: bytes | None = None
    while answer is None and time.monotonic() - started < 15:
        try:
            writer.write(b"X-Slow: a\r\n")  # a header line now and then, never the end
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(1), 0.3)
        except TimeoutError:
            continue
        except ConnectionError:
            answer = b""
    assert answer == b"", answer  # closed, not answered
    assert time.monotonic() - started < 5
    writer.close()


async def test_a_slow_http_body_gets_408(bounded: ServerProcess) -> None:
    assert bounded.http_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", bounded.http_port)
    writer.write(b"POST /synthesize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"text\"")
    await writer.drain()
    started = time.monotonic()
    status = await asyncio.wait_for(reader.readline(), 10)
    assert status.startswith(b"HTTP/1.1 408"), status
    assert time.monotonic() - started < 5
    writer.close()
