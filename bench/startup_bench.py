"""Time from spawn to the first answered ``describe``: Chorus against wyoming-piper.

Run by hand from the repository root::

    ORT_DISABLE_TELEMETRY=1 .venv/bin/python -m bench.startup_bench [--starts N]

Each server is started ``--starts`` times, alternating (wyoming-piper, then Chorus), so
that a machine's changing load hits both alike; each start polls ``describe`` every 20 ms
from the moment the process is spawned, and the server is stopped once answered. Both
serve the same voice (en_US-joe-medium); Chorus with its defaults (the embedded voice,
which it warms after its doors open, as wyoming-piper loads its voice at the first
request). Each server keeps one port for all its starts, as a deployment restarts with
the same settings: Chorus's first start writes the snapshot its later starts answer
``describe`` from before the rest of the server is imported (server/early_door.py); that
first start is printed, and left out of the medians when there are three or more.
Each start also sends one short request (``TEXT_51``) right after that describe
and takes the time from spawn to its first audio chunk: a restart as a user waiting to be
spoken to sees it, voice load included. Printed: every start, then the median and the
range per server and figure and the ratios of the medians; results in
``bench/results/<timestamp>-startup.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .wyoming_bench import (
    TEXT_51,
    RequestFailed,
    RunningServer,
    ServerSpec,
    chorus_spec,
    connected,
    environment,
    free_port,
    link_joe_voice,
    running,
    synthesize,
    wait_ready,
    wyoming_piper_spec,
)

RESULTS_DIR = Path(__file__).parent / "results"


async def _first_answers(server: RunningServer) -> tuple[float, float]:
    """Seconds from spawn to the first describe answer and to a short request's first
    audio (the request sent once describe is answered)."""
    started = time.perf_counter()  # wait_ready's clock starts here too, at spawn
    described = await wait_ready(server)
    async with connected(server.port) as client:
        sent = time.perf_counter() - started
        result = await synthesize(client, TEXT_51)
    if result.first_audio_s is None:
        raise RequestFailed("the short request got no audio")
    return described, sent + result.first_audio_s


def start_once(spec: ServerSpec, log: Path, port: int) -> tuple[float, float]:
    with running(spec, log, port) as server:
        return asyncio.run(_first_answers(server))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=7)
    parser.add_argument("--chorus-arg", action="append", default=[],
                        help="an extra argument for chorus serve (repeatable)")
    args = parser.parse_args(argv)
    figures = ("describe", "first audio")
    times: dict[str, dict[str, list[float]]] = {
        figure: {"wyoming-piper": [], "chorus": []} for figure in figures}
    with tempfile.TemporaryDirectory(prefix="chorus-startup-") as tmp:
        data = Path(tmp) / "wp"
        data.mkdir()
        link_joe_voice(data)
        specs = [wyoming_piper_spec(data), chorus_spec(args.chorus_arg)]
        ports = {spec.name: free_port() for spec in specs}
        for start in range(args.starts):
            for spec in specs:
                answers = start_once(spec, Path(tmp) / f"{spec.name}.log", ports[spec.name])
                for figure, seconds in zip(figures, answers, strict=True):
                    times[figure][spec.name].append(seconds)
                print(f"start {start + 1}: {spec.name:14} describe {answers[0] * 1000:6.0f} "
                      f"ms, first audio {answers[1] * 1000:6.0f} ms", flush=True)
    ratios: dict[str, float] = {}
    skip = 1 if args.starts >= 3 else 0  # the first start: no snapshot yet (see above)
    for figure, per_server in times.items():
        print(f"{figure:12} first start: " + ", ".join(
            f"{name} {values[0] * 1000:.0f} ms" for name, values in per_server.items()))
        medians = {name: statistics.median(values[skip:])
                   for name, values in per_server.items()}
        for name, values in per_server.items():
            values = values[skip:]
            print(f"{figure:12} {name:14} median {medians[name] * 1000:6.0f} ms "
                  f"(range {min(values) * 1000:.0f}-{max(values) * 1000:.0f} ms)")
        ratios[figure] = medians["chorus"] / medians["wyoming-piper"]
    print(f"Chorus / wyoming-piper: describe {ratios['describe']:.2f}x (target <= 1.0x), "
          f"first audio {ratios['first audio']:.2f}x")
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"{stamp}-startup.json"
    out.write_text(json.dumps({"date": stamp, "environment": environment(),
                               "chorus_args": args.chorus_arg, "seconds": times,
                               "first_start_left_out_of_medians": bool(skip),
                               "ratio_of_medians": {k: round(v, 3)
                                                    for k, v in ratios.items()}}, indent=1))
    print(f"results in {out}")


if __name__ == "__main__":
    main()
