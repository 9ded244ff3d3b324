"""The audio cache and the per-client limit, through a real ``chorus serve``.

One module server (its own cache dir, a copied voice it may replace, two requests per
client) covers hits, keys, invalidation, DELETE and 429; a restart pair shares a cache
directory; a small server (tiny size limit and TTL) covers eviction and expiry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chorus.server.runtime import Runtime
from chorus.server.settings import ServerSettings
from tests.conftest import ServerProcess, copy_joe, free_port
from tests.integration.conftest import CACHE_ON
from tests.integration.test_http import PARAGRAPH, SENTENCE, post, scrape

COPY = "en_US-cachecopy-medium"


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("cached")
    copy_joe(root / "voices", COPY)
    proc = ServerProcess(["--cache-dir", str(root / "cache"), "--voices-dir",
                          str(root / "voices"), "--rescan-interval", "0.2",
                          "--max-requests-per-client", "2", "--workers", "2"],
                         root / "server.log", env=CACHE_ON)
    proc.root = root  # type: ignore[attr-defined]
    yield proc
    assert proc.terminate() == 0, proc.output()


async def stats(session: aiohttp.ClientSession) -> dict[str, Any]:
    async with session.get("/cache/stats") as response:
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result


async def test_miss_then_byte_identical_hit(cached: ServerProcess) -> None:
    async with aiohttp.ClientSession(cached.http_url) as session:
        before = await scrape(session)
        body = {"text": "A cached sentence for the first test.", "format": "mp3"}
        status, first_headers, first = await post(session, "/synthesize", body)
        assert status == 200 and first_headers["X-Cache"] == "miss"
        started = time.perf_counter()
        status, headers, second = await post(session, "/synthesize", body)
        hit_seconds = time.perf_counter() - started
        assert status == 200 and headers["X-Cache"] == "hit"
        assert second == first
        assert hit_seconds < max(0.1, float(first_headers["X-Generation-Time"]))
        for name in ("Content-Type", "X-Voice", "X-Sample-Rate", "X-Audio-Duration"):
            assert headers[name] == first_headers[name], name
        after = await scrape(session)
        assert after["chorus_cache_hits_total{}"] - before["chorus_cache_hits_total{}"] == 1
        assert (after["chorus_cache_misses_total{}"]
                - before["chorus_cache_misses_total{}"]) == 1
        assert after["chorus_cache_entries{}"] >= 1
        assert after["chorus_cache_bytes{}"] > len(first)
        current = await stats(session)
        assert current["enabled"] and current["entries"] >= 1 and current["hits"] >= 1
        assert current["max_bytes"] == 512 * 1024 * 1024
        assert current["write_errors"] == after["chorus_cache_write_errors_total{}"] == 0
        # OpenAI's whole (flac) answers share the cache; its streamed ones bypass it.
        speech = {"input": "An OpenAI request.", "response_format": "flac"}
        _, openai_first, flac = await post(session, "/v1/audio/speech", speech)
        _, openai_second, flac_again = await post(session, "/v1/audio/speech", speech)
        assert (openai_first["X-Cache"], openai_second["X-Cache"]) == ("miss", "hit")
        assert flac_again == flac
        status, headers, _ = await post(session, "/synthesize/stream", body)
        assert status == 200 and "X-Cache" not in headers


async def test_every_parameter_is_part_of_the_key(cached: ServerProcess) -> None:
    base = {"text": "Parameters make a difference.", "format": "wav"}
    async with aiohttp.ClientSession(cached.http_url) as session:
        _, headers, _ = await post(session, "/synthesize", base)
        assert headers["X-Cache"] == "miss"
        for change in ({"format": "flac"}, {"speed": 1.5}, {"noise_scale": 0.1},
                       {"noise_w_scale": 0.2}, {"sample_rate": 16000}, {"voice": COPY},
                       {"text": "Parameters make a difference!"}):
            _, headers, _ = await post(session, "/synthesize", {**base, **change})
            assert headers["X-Cache"] == "miss", change
        _, headers, _ = await post(session, "/synthesize", base)
        assert headers["X-Cache"] == "hit"
        hits = (await stats(session))["hits"]
        status, headers, _ = await post(session, "/synthesize", {**base, "use_cache": False})
        assert status == 200 and headers["X-Cache"] == "miss"
        assert (await stats(session))["hits"] == hits
        status, _, body = await post(session, "/synthesize", {**base, "use_cache": "yes"})
        assert status == 422 and b"use_cache" in body


async def test_replacing_a_voice_file_invalidates(cached: ServerProcess) -> None:
    body = {"text": "The voice file will change.", "voice": COPY}
    async with aiohttp.ClientSession(cached.http_url) as session:
        _, headers, _ = await post(session, "/synthesize", body)
        assert headers["X-Cache"] == "miss"
        _, headers, _ = await post(session, "/synthesize", body)
        assert headers["X-Cache"] == "hit"
        copy_joe(cached.root / "voices", COPY)  # type: ignore[attr-defined]  # new mtime
        await asyncio.sleep(1.0)  # several rescans at 0.2 s
        status, headers, _ = await post(session, "/synthesize", body)
        assert status == 200 and headers["X-Cache"] == "miss"
        _, headers, _ = await post(session, "/synthesize", body)
        assert headers["X-Cache"] == "hit"


async def test_delete_empties_the_cache(cached: ServerProcess) -> None:
    body = {"text": "Soon to be forgotten."}
    async with aiohttp.ClientSession(cached.http_url) as session:
        await post(session, "/synthesize", body)
        assert (await stats(session))["entries"] >= 1
        async with session.delete("/cache") as response:
            assert response.status == 204
        current = await stats(session)
        assert (current["entries"], current["bytes"]) == (0, 0)
        assert not list((cached.root / "cache").glob("*.audio"))  # type: ignore[attr-defined]
        _, headers, _ = await post(session, "/synthesize", body)
        assert headers["X-Cache"] == "miss"


async def test_per_client_limit_answers_429(cached: ServerProcess) -> None:
    async with aiohttp.ClientSession(cached.http_url) as session:
        streams = [await session.post("/synthesize/stream",
                                      json={"text": PARAGRAPH, "use_cache": False})
                   for _ in range(2)]
        try:
            for stream in streams:
                assert stream.status == 200
                await stream.content.readany()
            async with session.post("/synthesize", json={"text": "One too many."}) as r:
                assert r.status == 429
                assert r.headers["Retry-After"] == "1"
                assert (await r.json())["error"]["code"] == "too-many-requests"
            async with session.get("/health/ready") as r:  # probes are never limited
                assert r.status == 200
            async with session.get("/metrics") as r:
                assert r.status == 200
        finally:
            streams[0].close()  # one hangs up, the other finishes
            await streams[1].read()
            streams[1].release()
        deadline = time.monotonic() + 10
        while True:  # the hung-up stream's slot comes back promptly
            status, _, _ = await post(session, "/synthesize", {"text": "My turn now."})
            if status == 200:
                break
            assert status == 429 and time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert (await scrape(session))[
            "chorus_request_errors_total{code=too-many-requests,door=http}"] >= 1


def test_cache_survives_a_restart_and_temp_files_are_removed(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    args = ["--cache-dir", str(cache_dir)]
    body = {"text": SENTENCE, "format": "opus"}

    async def request(server: ServerProcess) -> tuple[str, bytes]:
        async with aiohttp.ClientSession(server.http_url) as session:
            status, headers, audio = await post(session, "/synthesize", body)
        assert status == 200
        return headers["X-Cache"], audio

    first = ServerProcess(args, tmp_path / "first.log", env=CACHE_ON)
    try:
        state, _ = asyncio.run(request(first))
        assert state == "miss"
    finally:
        assert first.terminate() == 0, first.output()
    entry = next(cache_dir.glob("*.audio"))
    leftover = cache_dir / f".tmp-{entry.stem}-crashed"  # a write killed before its rename
    leftover.write_bytes(entry.read_bytes()[:100])
    entry.unlink()  # only the partial write remains for this key...
    (cache_dir / entry.name).write_bytes(b"")  # ...and a damaged final file
    second = ServerProcess(args, tmp_path / "second.log", env=CACHE_ON)
    try:
        assert not leftover.exists()
        state, again = asyncio.run(request(second))
        assert state == "miss"  # neither the temp file nor the damaged one is served
        state, third = asyncio.run(request(second))
        assert state == "hit" and third == again
    finally:
        assert second.terminate() == 0, second.output()
    third_server = ServerProcess(args, tmp_path / "third.log", env=CACHE_ON)
    try:
        state, survived = asyncio.run(request(third_server))
        assert state == "hit" and survived == again
    finally:
        assert third_server.terminate() == 0, third_server.output()


def test_size_eviction(tmp_path: Path) -> None:
    """No TTL here, so every miss below is the size bound's doing, however slow the machine."""
    server = ServerProcess(["--cache-dir", str(tmp_path / "cache"), "--cache-max-mb", "0.3"],
                           tmp_path / "server.log", env=CACHE_ON)

    async def scenario() -> None:
        async with aiohttp.ClientSession(server.http_url) as session:
            wav = {"format": "wav"}  # ~110 kB each: two fit in 0.3 MB, five do not
            texts = [f"Entry number {n}, with a few more words." for n in range(1, 6)]
            for text in texts:
                _, headers, _ = await post(session, "/synthesize", {"text": text, **wav})
                assert headers["X-Cache"] == "miss"
            current = await stats(session)
            assert current["max_bytes"] == int(0.3 * 1024 * 1024)
            assert 0 < current["bytes"] <= current["max_bytes"]
            assert 0 < current["entries"] < len(texts)
            _, headers, _ = await post(session, "/synthesize", {"text": texts[-1], **wav})
            assert headers["X-Cache"] == "hit"  # the newest stays
            _, headers, _ = await post(session, "/synthesize", {"text": texts[0], **wav})
            assert headers["X-Cache"] == "miss"  # the oldest went first

    try:
        asyncio.run(scenario())
    finally:
        assert server.terminate() == 0, server.output()


def test_ttl_expiry(tmp_path: Path) -> None:
    ttl = 5.0
    server = ServerProcess(["--cache-dir", str(tmp_path / "cache"), "--cache-ttl", str(ttl)],
                           tmp_path / "server.log", env=CACHE_ON)

    async def scenario() -> None:
        async with aiohttp.ClientSession(server.http_url) as session:
            body = {"text": "An entry that expires.", "format": "wav"}
            _, headers, _ = await post(session, "/synthesize", body)
            assert headers["X-Cache"] == "miss"
            stored = time.monotonic()
            _, headers, _ = await post(session, "/synthesize", body)
            if time.monotonic() - stored < ttl / 2:  # a hit is only owed while the entry is young
                assert headers["X-Cache"] == "hit"
            await asyncio.sleep(ttl + 0.5)
            _, headers, _ = await post(session, "/synthesize", body)
            assert headers["X-Cache"] == "miss"  # expired
            _, headers, _ = await post(session, "/synthesize", body)
            assert headers["X-Cache"] == "hit"  # and stored again

    try:
        asyncio.run(scenario())
    finally:
        assert server.terminate() == 0, server.output()


async def test_no_cache_answers_misses_and_empty_stats(server: ServerProcess) -> None:
    """The suite's shared server runs with --no-cache (see conftest): nothing is kept."""
    async with aiohttp.ClientSession(server.http_url) as session:
        for _ in range(2):
            status, headers, _ = await post(session, "/synthesize", {"text": "No cache."})
            assert status == 200 and headers["X-Cache"] == "miss"
        current = await stats(session)
        assert current["enabled"] is False and current["entries"] == 0
        assert current["write_errors"] == 0
        async with session.delete("/cache") as response:
            assert response.status == 204


def test_cache_endpoints_need_the_key_and_a_keyed_client_is_its_address(tmp_path: Path) -> None:
    server = ServerProcess(["--cache-dir", str(tmp_path / "cache"),
                            "--max-requests-per-client", "1"], tmp_path / "server.log",
                           env={**CACHE_ON, "CHORUS_API_KEY": "k3y"})

    async def scenario() -> None:
        async with aiohttp.ClientSession(server.http_url) as session:
            async with session.get("/cache/stats") as response:
                assert response.status == 401
            async with session.delete("/cache") as response:
                assert response.status == 401
        auth = {"Authorization": "Bearer k3y"}
        async with aiohttp.ClientSession(server.http_url, headers=auth) as session:
            assert (await stats(session))["enabled"] is True
            async with session.delete("/cache") as response:
                assert response.status == 204
            async with session.post("/synthesize/stream", json={"text": PARAGRAPH}) as long:
                assert long.status == 200
                await long.content.readany()
                # a second connection from the same address: the same client, over its limit
                async with aiohttp.ClientSession(server.http_url, headers=auth) as other:
                    async with other.post("/synthesize", json={"text": "Hi."}) as r:
                        assert r.status == 429
                    async with other.get("/voices") as r:  # GETs are never limited
                        assert r.status == 200
                await long.read()

    try:
        asyncio.run(scenario())
    finally:
        assert server.terminate() == 0, server.output()


async def test_an_answer_rendered_for_a_departed_client_is_still_stored(
        tmp_path: Path, graph_cache_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The client hangs up while its rendered answer is being written to the cache: the
    handler is cancelled (the client is gone), the write is not, and the next asker hits.

    In process, to hold the cache's (real) write until the client has left.
    """
    port = free_port()
    runtime = Runtime(ServerSettings(
        wyoming_uri=f"tcp://127.0.0.1:{free_port()}", http_port=port,
        cache_dir=tmp_path / "cache", graph_cache_dir=graph_cache_dir))
    await runtime.start()
    cache = runtime.cache
    assert cache is not None
    writing, release = threading.Event(), threading.Event()
    write = cache._write

    def held_write(key: str, data: bytes) -> float:
        writing.set()
        release.wait(30)
        return write(key, data)

    cache._write = held_write  # type: ignore[method-assign]
    body = json.dumps({"text": "Kept for the next asker."}).encode()
    try:
        with caplog.at_level(logging.INFO):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /synthesize HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\n" + f"Content-Length: {len(body)}\r\n\r\n"
                         .encode() + body)
            assert await asyncio.to_thread(writing.wait, 60), "no cache write started"
            writer.transport.abort()  # a reset, the rudest way to leave
            await asyncio.sleep(0.5)  # the server sees the connection go
            release.set()
            deadline = time.monotonic() + 10
            while cache.entries == 0:
                assert time.monotonic() < deadline, "the rendered answer was not stored"
                await asyncio.sleep(0.05)
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
                status, headers, _ = await post(session, "/synthesize",
                                                {"text": "Kept for the next asker."})
            assert (status, headers["X-Cache"]) == (200, "hit")
    finally:
        release.set()
        await runtime.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]
