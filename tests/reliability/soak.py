"""A mixed-load soak of a real ``chorus serve``: memory, fds and threads over time.

Wyoming clients (the real ``wyoming`` library) alternate Home-Assistant-style streams
(``synthesize-start``, the text in small chunks, the ``synthesize`` compatibility copy HA
also sends, ``synthesize-stop``) with plain ``synthesize`` requests of mixed lengths, on
fresh and on reused connections, over two voices; HTTP clients ask ``/synthesize`` in
every format, ``/synthesize/stream`` and ``/v1/audio/speech`` with the audio cache on,
repeating some texts so that cache hits mix with misses. The server's RSS, open fds and
threads are sampled every few seconds.

fds and threads are compared while the server is idle (no client connected): before
the load, after a warm-up burst that lets lazily grown pools (worker threads, the
default executor) reach their size, and after the load. Under load they move with the
number of open connections, which says nothing about a leak.

Run as ``python -m tests.reliability.soak --minutes M``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from wyoming.client import AsyncClient
from wyoming.info import Describe
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from tests.conftest import JOE, PARAGRAPH_SENTENCES, ServerProcess, copy_joe

SECOND_VOICE = "en_US-joecopy-medium"
HTTP_FORMATS = ("wav", "mp3", "opus", "flac", "pcm", "aac")
OPENAI_FORMATS = ("mp3", "opus", "wav", "flac", "pcm", "aac")
READ_LIMIT = 300.0
"""Seconds one exchange may take before it counts as a hang (two busy cores, 8+ clients)."""
THINK = (0.5, 3.0)
"""Seconds a client pauses between exchanges, as a listener would: the soak measures a
busy steady state, not an overload."""


@dataclass
class Tally:
    """Requests done per kind and the errors seen, shared by all clients."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def done(self, kind: str) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1

    def error(self, kind: str, what: str) -> None:
        self.errors.append(f"{kind}: {what}"[:300])


@dataclass
class Sample:
    at: float
    rss_mib: float
    fds: int
    threads: int


def sample(proc: psutil.Process, start: float) -> Sample:
    with proc.oneshot():
        return Sample(round(time.monotonic() - start, 1),
                      round(proc.memory_info().rss / (1 << 20), 1),
                      proc.num_fds(), proc.num_threads())


def text_of(rng: random.Random, serial: int, longest: int) -> str:
    """1..``longest`` consecutive sentences, numbered so that most texts are new."""
    count = rng.randint(1, longest)
    first = rng.randrange(len(PARAGRAPH_SENTENCES))
    picked = [PARAGRAPH_SENTENCES[(first + i) % len(PARAGRAPH_SENTENCES)]
              for i in range(count)]
    return f"Request {serial}. " + " ".join(picked)


async def _read_exchange(client: AsyncClient, last: str) -> tuple[list[str], int]:
    """Event types up to ``last`` (or an error) and the audio bytes received."""
    types: list[str] = []
    audio = 0
    while True:
        event = await asyncio.wait_for(client.read_event(), READ_LIMIT)
        if event is None:
            raise ConnectionError(f"connection closed after {types[-5:]}")
        types.append(event.type)
        if event.type == "audio-chunk":
            audio += len(event.payload or b"")
        if event.type == last:
            return types, audio
        if event.type == "error":
            raise RuntimeError(f"error event: {event.data}")


async def ha_stream(client: AsyncClient, text: str, voice: str | None) -> None:
    """What Home Assistant sends for a streamed LLM answer."""
    await client.write_event(SynthesizeStart(
        voice=SynthesizeVoice(name=voice) if voice else None).event())
    words = text.split(" ")
    for index in range(0, len(words), 3):
        await client.write_event(SynthesizeChunk(" ".join(words[index:index + 3]) + " ")
                                 .event())
    await client.write_event(Synthesize(text, voice=SynthesizeVoice(name=voice)
                                        if voice else None).event())
    await client.write_event(SynthesizeStop().event())
    types, audio = await _read_exchange(client, "synthesize-stopped")
    if types.count("audio-start") != 1 or types[-2:] != ["audio-stop", "synthesize-stopped"] \
            or audio == 0:
        raise RuntimeError(f"stream ended oddly: {types[:3]}...{types[-3:]}, {audio} bytes")


async def plain(client: AsyncClient, text: str, voice: str | None) -> None:
    await client.write_event(Synthesize(text, voice=SynthesizeVoice(name=voice)
                                        if voice else None).event())
    types, audio = await _read_exchange(client, "audio-stop")
    if types[0] != "audio-start" or audio == 0:
        raise RuntimeError(f"plain request ended oddly: {types[:3]}, {audio} bytes")


async def describe(client: AsyncClient) -> None:
    await client.write_event(Describe().event())
    event = await asyncio.wait_for(client.read_event(), READ_LIMIT)
    if event is None or event.type != "info":
        raise RuntimeError(f"describe answered {event}")


async def wyoming_client(server: ServerProcess, index: int, until: float,
                         tally: Tally) -> None:
    """Odd clients keep one connection; even ones connect per exchange, as HA does."""
    rng = random.Random(index)
    reuse = index % 2 == 1
    serial = 0
    client: AsyncClient | None = None
    try:
        while time.monotonic() < until:
            serial += 1
            roll = rng.random()
            kind = "wyoming_stream" if roll < 0.45 else (
                "wyoming_describe" if roll < 0.5 else "wyoming_plain")
            voice = rng.choice([None, JOE, SECOND_VOICE])
            text = text_of(rng, index * 100_000 + serial, 6 if kind == "wyoming_stream" else 4)
            try:
                if client is None:
                    client = server.client()
                    await client.connect()
                if kind == "wyoming_stream":
                    await ha_stream(client, text, voice)
                elif kind == "wyoming_plain":
                    await plain(client, text, voice)
                else:
                    await describe(client)
                tally.done(kind)
            except Exception as err:  # noqa: BLE001 - every failure is counted, not raised
                tally.error(kind, f"{type(err).__name__}: {err}")
                reuse_now = False
            else:
                reuse_now = reuse
            if not reuse_now and client is not None:
                await client.disconnect()
                client = None
            await asyncio.sleep(rng.uniform(*THINK))
    finally:
        if client is not None:
            await client.disconnect()


async def _http_exchange(http: aiohttp.ClientSession, kind: str, path: str,
                         body: dict[str, Any], tally: Tally) -> None:
    try:
        async with http.post(path, json=body,
                             timeout=aiohttp.ClientTimeout(total=READ_LIMIT)) as response:
            data = await response.read()
            if response.status != 200 or not data:
                tally.error(kind, f"HTTP {response.status}: {data[:200]!r}")
                return
        tally.done(kind)
    except Exception as err:  # noqa: BLE001 - every failure is counted, not raised
        tally.error(kind, f"{type(err).__name__}: {err}")


async def http_client(server: ServerProcess, index: int, until: float, tally: Tally) -> None:
    """A third of the texts repeat (cache hits); the rest are new (cache writes)."""
    rng = random.Random(1000 + index)
    serial = 0
    async with aiohttp.ClientSession(server.http_url) as http:
        while time.monotonic() < until:
            serial += 1
            repeat = rng.random() < 0.35
            text = text_of(rng, rng.randrange(20) if repeat else index * 100_000 + serial, 3)
            voice = rng.choice([JOE, SECOND_VOICE])
            roll = rng.random()
            if roll < 0.5:
                await _http_exchange(http, "http_synthesize", "/synthesize", {
                    "text": text, "voice": voice, "format": rng.choice(HTTP_FORMATS)}, tally)
            elif roll < 0.65:
                await _http_exchange(http, "http_stream", "/synthesize/stream", {
                    "text": text, "voice": voice, "format": rng.choice(("opus", "mp3", "wav"))},
                    tally)
            else:
                await _http_exchange(http, "http_openai", "/v1/audio/speech", {
                    "model": "tts-1", "input": text, "voice": voice,
                    "response_format": rng.choice(OPENAI_FORMATS)}, tally)
            await asyncio.sleep(rng.uniform(*THINK))


async def sampler(proc: psutil.Process, start: float, every: float,
                  into: list[Sample]) -> None:
    while True:
        into.append(sample(proc, start))
        print(json.dumps(into[-1].__dict__), file=sys.stderr, flush=True)  # progress
        await asyncio.sleep(every)


async def idle_sample(proc: psutil.Process, start: float, settle: float = 3.0) -> Sample:
    """A sample once the server has had ``settle`` seconds to close what clients left."""
    await asyncio.sleep(settle)
    return sample(proc, start)


async def load(server: ServerProcess, seconds: float, wyoming: int, http: int,
               tally: Tally) -> None:
    until = time.monotonic() + seconds
    await asyncio.gather(*(wyoming_client(server, i, until, tally) for i in range(wyoming)),
                         *(http_client(server, i, until, tally) for i in range(http)))


async def soak(work: Path, minutes: float, wyoming: int = 8, http: int = 3,
               every: float = 5.0, warmup: float = 60.0,
               baseline: float = 120.0) -> dict[str, Any]:
    """Run the load for ``minutes`` and return the figures (RSS in MiB)."""
    copy_joe(work / "voices", SECOND_VOICE)
    server = ServerProcess(
        ["--voices-dir", str(work / "voices"), "--cache-dir", str(work / "cache")],
        work / "server.log")
    try:
        proc = psutil.Process(server.proc.pid)
        start = time.monotonic()
        before = sample(proc, start)
        warm = Tally()
        await load(server, warmup, wyoming, http, warm)
        idle_start = await idle_sample(proc, start)
        tally = Tally()
        tally.errors.extend(warm.errors)
        samples: list[Sample] = []
        load_start = time.monotonic()
        watch = asyncio.create_task(sampler(proc, load_start, every, samples))
        try:
            await load(server, minutes * 60, wyoming, http, tally)
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        samples.append(sample(proc, load_start))
        idle_end = await idle_sample(proc, start)
    finally:
        exit_code = server.terminate()
    at_baseline = next((s for s in samples if s.at >= baseline), None)
    return {
        "minutes": minutes,
        "wyoming_clients": wyoming,
        "http_clients": http,
        "rss_mib_ready": before.rss_mib,
        "rss_mib_after_warmup": idle_start.rss_mib,
        "baseline_s": baseline,
        "rss_mib_at_baseline": at_baseline.rss_mib if at_baseline else None,
        "rss_mib_end": samples[-1].rss_mib,
        "rss_mib_max": max(s.rss_mib for s in samples),
        "rss_mib_idle_end": idle_end.rss_mib,
        "fds_idle_start": idle_start.fds,
        "fds_idle_end": idle_end.fds,
        "fds_max": max(s.fds for s in samples),
        "threads_idle_start": idle_start.threads,
        "threads_idle_end": idle_end.threads,
        "threads_max": max(s.threads for s in samples),
        "requests": dict(sorted(tally.requests.items())),
        "requests_total": sum(tally.requests.values()),
        "warmup_requests": sum(warm.requests.values()),
        "errors": len(tally.errors),
        "error_samples": tally.errors[:10],
        "server_exit_code": exit_code,
        "server_log_tail": server.output()[-2000:] if exit_code or tally.errors else "",
        "samples": [[s.at, s.rss_mib, s.fds, s.threads] for s in samples],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--wyoming-clients", type=int, default=8)
    parser.add_argument("--http-clients", type=int, default=3)
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of warm-up load")
    parser.add_argument("--baseline", type=float, default=120.0,
                        help="seconds into the load of the reference RSS sample")
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        figures = asyncio.run(soak(work, args.minutes, args.wyoming_clients,
                                   args.http_clients, args.sample_every, args.warmup,
                                   args.baseline))
    json.dump(figures, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
