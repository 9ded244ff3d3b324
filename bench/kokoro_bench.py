"""Chorus's Kokoro engine against kokoro-onnx used directly in this process (the ceiling).

Run by hand from the repository root, with Kokoro-82M's ONNX model (for the int8 export the
tests use, join it once: ``.venv/bin/python -c "from pathlib import Path; from
tests.kokoro_files import join_model; print(join_model(Path('/tmp')))"``)::

    .venv/bin/python -m bench.kokoro_bench --model /tmp/kokoro-v1.0.int8.onnx \\
        [--style .tools/kokoro-js/voices/af_heart.bin] [--runs 2] [--requests 1] \\
        [--clients 1,2,4,8] [--full-paragraph] [--json]

Raw: ``kokoro_onnx.Kokoro`` on a session made as the Kokoro engine makes its own
(``kokoro.model_session``, one thread per call as ``--threads-per-worker`` defaults to),
``create(text, style, 1.0, "en-us")`` timed whole, ``--runs`` times after a warm-up, half
of them before the server starts and half after it stopped (their spread is the noise).
Chorus: ``chorus serve`` with the same model and style as its only voice, its default
settings otherwise (one worker per CPU), driven by the wyoming client as streaming
synthesis (``synthesize-start``, the text, ``synthesize-stop``), timed from the first
event sent to the first audio chunk and to ``audio-stop``. Both measure the same texts:

- the Wyoming bench's 199-character request: one client ``--runs`` times in a row
  (overhead = Chorus whole time / raw time, target at most 1.05), once more on a second
  server with ``--workers 1``: one request's sentences render on every worker at once,
  so the default server may beat raw's one core, and one worker is the like-for-like
  overhead; then on the default server 1/2/4/8 clients
  each sending ``--requests`` at once (throughput in audio seconds per wall second,
  target at 8 clients at least 1.0x raw single-stream throughput);
- a paragraph (the Wyoming bench's first four sentences; ``--full-paragraph``: all ten,
  1,000 characters): Chorus's first audio against raw's whole paragraph (target at most
  0.5x), and Chorus's whole paragraph against raw's.

Kokoro on a small machine is slow (measured here: 0.7-1.5 s per audio second on two
shared cores), so the default run takes about five minutes and its figures are rough; raise
``--runs`` and ``--requests`` for tighter ones. ``uptime``'s load is printed before and
after: the machine is shared, and load from elsewhere shows up in every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wyoming.tts import SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from bench.wyoming_bench import (
    CLIENT_COUNTS,
    PARAGRAPH_1000,
    TEXT_199,
    AudioReader,
    Problems,
    RequestFailed,
    SynthResult,
    chorus_spec,
    connected,
    environment,
    read_audio,
    running,
    wait_ready,
)
from chorus.common.layout import KOKORO_SUFFIX

TARGET_OVERHEAD = 1.05
"""Chorus whole time / raw time, one client, 199 characters: at most."""
TARGET_THROUGHPUT = 1.0
"""Chorus throughput at 8 clients / raw single-stream throughput: at least."""
TARGET_FIRST_AUDIO = 0.5
"""Chorus first audio of a paragraph / raw whole-paragraph time: at most."""

DEFAULT_STYLE = Path(".tools/kokoro-js/voices/af_heart.bin")
LANGUAGE = "en-us"
REQUEST_TIMEOUT_S = 900.0
"""Per request: a paragraph under 8 clients' load on two cores takes minutes."""
RESULTS = Path(__file__).parent / "results"


def paragraph(full: bool) -> str:
    """The Wyoming bench's paragraph, whole or its first four sentences."""
    if full:
        return PARAGRAPH_1000
    return " ".join(s + "." for s in PARAGRAPH_1000.split(". ")[:4])


# --------------------------------------------------------------------------- raw


@dataclass
class RawTimes:
    """kokoro-onnx in this process: seconds per whole ``create`` and audio seconds."""

    load_s: float
    sentence_s: list[float]
    sentence_audio_s: float
    paragraph_s: list[float]
    paragraph_audio_s: float


class Raw:
    """``kokoro_onnx.Kokoro`` on the server's kind of session, kept for the whole run."""

    def __init__(self, model: Path, style: Path, scratch: Path) -> None:
        import numpy as np
        from kokoro_onnx import Kokoro

        from chorus.server.engines.kokoro import load_style, model_session

        voices = scratch / "voices.npz"
        self.style = load_style(style)
        np.savez(voices, voice=self.style)
        started = time.perf_counter()
        self.kokoro = Kokoro.from_session(model_session(model, 1), str(voices))
        self.create("Ready.")
        self.load_s = time.perf_counter() - started

    def create(self, text: str) -> tuple[float, float]:
        """Wall seconds of one whole ``create``, and the audio seconds it made."""
        started = time.perf_counter()
        audio, rate = self.kokoro.create(text, self.style, 1.0, LANGUAGE)
        return time.perf_counter() - started, len(audio) / rate


def measure_raw(raw: Raw, runs: int, text: str, into: RawTimes, paragraph_text: str,
                paragraph_runs: int) -> None:
    for _ in range(runs):
        took, into.sentence_audio_s = raw.create(text)
        into.sentence_s.append(took)
    for _ in range(paragraph_runs):
        took, into.paragraph_audio_s = raw.create(paragraph_text)
        into.paragraph_s.append(took)


# --------------------------------------------------------------------------- Chorus


async def stream(port: int, text: str, voice: str) -> SynthResult:
    """One streaming synthesis of ``text`` as one chunk, timed from synthesize-start."""
    async with connected(port) as client:
        sent = time.perf_counter()
        reader = AudioReader(sent)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                await client.write_event(SynthesizeStart(
                    voice=SynthesizeVoice(name=voice)).event())
                await client.write_event(SynthesizeChunk(text).event())
                await client.write_event(SynthesizeStop().event())
                await read_audio(client, reader)
        except TimeoutError as err:
            raise RequestFailed(f"timed out after {time.perf_counter() - sent:.0f} s") \
                from err
        return SynthResult(reader.audio_seconds(), reader.first_audio,
                           time.perf_counter() - sent, reader.anomalies)


@dataclass
class Point:
    clients: int
    per_client: int
    requests: int
    audio_s: float
    wall_s: float

    @property
    def throughput(self) -> float:
        return self.audio_s / self.wall_s


@dataclass
class ChorusTimes:
    ready_s: float
    sentence: list[SynthResult]
    points: list[Point]
    paragraph: list[SynthResult]


async def _checked(port: int, text: str, voice: str, problems: Problems,
                   where: str) -> SynthResult | None:
    try:
        result = await stream(port, text, voice)
    except RequestFailed as err:
        problems.add(where, str(err))
        return None
    for anomaly in result.anomalies:
        problems.add(where, anomaly)
    return result


async def _point(port: int, voice: str, clients: int, requests: int,
                 problems: Problems) -> Point:
    """``clients`` connections at once, each sending ``requests`` in a row."""
    async def client() -> list[SynthResult | None]:
        return [await _checked(port, TEXT_199, voice, problems, f"c={clients}")
                for _ in range(requests)]

    started = time.perf_counter()
    done = [r for rs in await asyncio.gather(*(client() for _ in range(clients)))
            for r in rs if r is not None]
    wall = time.perf_counter() - started
    return Point(clients, requests, len(done), sum(r.audio_s for r in done), wall)


async def _drive(server: Any, voice: str, args: argparse.Namespace, paragraph_text: str,
                 problems: Problems, only_sentence: bool) -> ChorusTimes:
    ready = await wait_ready(server)
    await _checked(server.port, TEXT_199, voice, problems, "warm-up")
    sentence = [r for _ in range(args.runs)
                if (r := await _checked(server.port, TEXT_199, voice, problems, "1 client"))]
    if only_sentence:
        return ChorusTimes(ready, sentence, [], [])
    points = [await _point(server.port, voice, n, args.requests, problems)
              for n in args.clients]
    whole = [r for _ in range(args.paragraph_runs)
             if (r := await _checked(server.port, paragraph_text, voice, problems,
                                     "paragraph"))]
    return ChorusTimes(ready, sentence, points, whole)


def install_voice(model: Path, style: Path, scratch: Path) -> Path:
    """A voices directory holding the style's voice on the model."""
    voices = scratch / "voices"
    voices.mkdir()
    voice = style.stem
    try:
        os.link(model, voices / model.name)
    except OSError:
        shutil.copyfile(model, voices / model.name)
    shutil.copyfile(style, voices / f"{voice}{style.suffix}")
    entry = {"model": model.name, "style": f"{voice}{style.suffix}", "language": "en_US"}
    (voices / f"{voice}{KOKORO_SUFFIX}").write_text(json.dumps(entry), encoding="utf-8")
    return voices


def measure_chorus(voices: Path, voice: str, log: Path, args: argparse.Namespace,
                   paragraph_text: str, problems: Problems, one_worker: bool = False,
                   ) -> ChorusTimes:
    """The server with the voice as its only one; ``one_worker``: with ``--workers 1``,
    the raw run's one core, and only the one-client sentence runs."""
    spec = chorus_spec(["--voices-dir", str(voices), "--no-embedded-voice",
                        "--default-voice", voice, "--no-cache",
                        *(["--workers", "1"] if one_worker else [])])
    with running(spec, log) as server:
        times = asyncio.run(_drive(server, voice, args, paragraph_text, problems,
                                   one_worker))
    if server.exit_code != 0:
        problems.add("chorus", f"exit code {server.exit_code}")
    return times


# --------------------------------------------------------------------------- report


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def report(raw: RawTimes, chorus: ChorusTimes, single: ChorusTimes,
           ) -> tuple[list[str], dict[str, float]]:
    """Markdown lines and the headline ratios."""
    raw_s, raw_p = _median(raw.sentence_s), _median(raw.paragraph_s)
    raw_tp = raw.sentence_audio_s / raw_s
    ch_s = _median([r.total_s for r in chorus.sentence])
    ch_first = _median([r.first_audio_s or float("nan") for r in chorus.sentence])
    p_first = _median([r.first_audio_s or float("nan") for r in chorus.paragraph])
    p_whole = _median([r.total_s for r in chorus.paragraph])
    ch_audio = chorus.sentence[-1].audio_s if chorus.sentence else float("nan")
    p_audio = chorus.paragraph[-1].audio_s if chorus.paragraph else float("nan")
    at8 = next((p.throughput for p in chorus.points if p.clients == 8), float("nan"))
    one_s = _median([r.total_s for r in single.sentence])
    ratios = {"overhead_1_client": ch_s / raw_s, "overhead_1_worker": one_s / raw_s,
              "throughput_8_over_raw": at8 / raw_tp,
              "first_audio_over_raw_paragraph": p_first / raw_p,
              "paragraph_whole_over_raw": p_whole / raw_p}
    spread = (f"{min(raw.sentence_s):.2f}-{max(raw.sentence_s):.2f}"
              if raw.sentence_s else "-")
    lines = [
        "| measure | raw kokoro-onnx | Chorus | Chorus/raw | target |",
        "|---|---:|---:|---:|---|",
        f"| 199 chars, 1 client: whole time (s, median; raw spread {spread}) "
        f"| {raw_s:.2f} | {ch_s:.2f} | {ratios['overhead_1_client']:.2f}x "
        f"| <= {TARGET_OVERHEAD}x: {_verdict(ratios['overhead_1_client'] <= TARGET_OVERHEAD)} |",
        f"| same, Chorus with --workers 1 (raw's one core) | {raw_s:.2f} | {one_s:.2f} "
        f"| {ratios['overhead_1_worker']:.2f}x | <= {TARGET_OVERHEAD}x: "
        f"{_verdict(ratios['overhead_1_worker'] <= TARGET_OVERHEAD)} |",
        f"| 199 chars: audio (s) | {raw.sentence_audio_s:.2f} | {ch_audio:.2f} "
        f"| {ch_audio / raw.sentence_audio_s:.2f}x | - |",
        f"| 199 chars, 1 client: first audio (s) | {raw_s:.2f} (whole) | {ch_first:.2f} "
        f"| {ch_first / raw_s:.2f}x | - |",
    ]
    for p in chorus.points:
        lines.append(f"| throughput, {p.clients} client(s) x {p.per_client} "
                     f"(audio s / wall s) | {raw_tp:.2f} (1 stream) | {p.throughput:.2f} "
                     f"| {p.throughput / raw_tp:.2f}x | "
                     + (f">= {TARGET_THROUGHPUT}x: "
                        f"{_verdict(p.throughput / raw_tp >= TARGET_THROUGHPUT)}"
                        if p.clients == 8 else "-") + " |")
    lines += [
        f"| paragraph ({len(chorus.paragraph) and p_audio:.1f} s of audio): first audio "
        f"(s) | {raw_p:.2f} (whole) | {p_first:.2f} "
        f"| {ratios['first_audio_over_raw_paragraph']:.2f}x | <= {TARGET_FIRST_AUDIO}x: "
        f"{_verdict(ratios['first_audio_over_raw_paragraph'] <= TARGET_FIRST_AUDIO)} |",
        f"| paragraph: whole time (s) | {raw_p:.2f} | {p_whole:.2f} "
        f"| {ratios['paragraph_whole_over_raw']:.2f}x | - |",
    ]
    return lines, ratios


def _uptime() -> str:
    load = os.getloadavg()
    return f"load average {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} on {os.cpu_count()} CPUs"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True,
                        help="Kokoro-82M ONNX model (e.g. kokoro-v1.0.int8.onnx)")
    parser.add_argument("--style", type=Path, default=DEFAULT_STYLE,
                        help=f"style-vector file, raw float32 or .npy (default {DEFAULT_STYLE})")
    parser.add_argument("--runs", type=int, default=2,
                        help="raw runs and one-client Chorus runs of the 199 characters")
    parser.add_argument("--paragraph-runs", type=int, default=1)
    parser.add_argument("--requests", type=int, default=1,
                        help="requests each client sends in the throughput points")
    parser.add_argument("--clients", type=lambda s: [int(n) for n in s.split(",")],
                        default=list(CLIENT_COUNTS))
    parser.add_argument("--full-paragraph", action="store_true",
                        help="all ten sentences (1,000 characters), not the first four")
    parser.add_argument("--json", action="store_true", help="also write bench/results/")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    text = paragraph(args.full_paragraph)
    problems = Problems()
    print(f"before: {_uptime()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-kokoro-") as tmp:
        scratch = Path(tmp)
        raw = Raw(args.model, args.style, scratch)
        times = RawTimes(raw.load_s, [], 0.0, [], 0.0)
        before = (args.runs + 1) // 2
        measure_raw(raw, before, TEXT_199, times, text, (args.paragraph_runs + 1) // 2)
        print(f"raw before: {times.sentence_s} s, paragraph {times.paragraph_s} s", flush=True)
        voices = install_voice(args.model.resolve(), args.style.resolve(), scratch)
        chorus = measure_chorus(voices, args.style.stem, scratch / "chorus.log", args, text,
                                problems)
        single = measure_chorus(voices, args.style.stem, scratch / "chorus-1.log", args,
                                text, problems, one_worker=True)
        measure_raw(raw, args.runs - before, TEXT_199, times, text,
                    args.paragraph_runs // 2)
        print(f"raw all: {times.sentence_s} s, paragraph {times.paragraph_s} s", flush=True)
        log_tail = (scratch / "chorus.log").read_text(errors="replace")[-2000:]
    print(f"after: {_uptime()}")
    if not chorus.sentence or not chorus.paragraph:
        print("Chorus gave no usable answer; its log ends:\n" + log_tail)
        return 1
    lines, ratios = report(times, chorus, single)
    print(f"{len(text)}-character paragraph; Chorus ready in {chorus.ready_s:.1f} s; "
          f"raw load {times.load_s:.1f} s")
    print("\n".join(lines))
    for line in problems.lines():
        print(f"problem: {line}")
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{time.strftime('%Y%m%dT%H%M%S')}-kokoro.json"
        path.write_text(json.dumps({
            "environment": environment(), "args": {k: str(v) for k, v in vars(args).items()},
            "raw": asdict(times), "chorus": asdict(chorus),
            "chorus_one_worker": asdict(single), "ratios": ratios,
            "problems": problems.lines()}, indent=2))
        print(f"wrote {path}")
    return 1 if problems.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
