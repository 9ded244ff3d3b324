"""Time from spawn to the first answered ``describe``: Chorus against wyoming-piper.

Run by hand from the repository root::

    ORT_DISABLE_TELEMETRY=1 .venv/bin/python -m bench.startup_bench [--starts N]

Each server is started ``--starts`` times, alternating (wyoming-piper, then Chorus), so
that a machine's changing load hits both alike; each start polls ``describe`` every 20 ms
from the moment the process is spawned, and the server is stopped once answered. Both
serve the same voice (en_US-joe-medium); Chorus with its defaults (the embedded voice,
which it warms after its doors open, as wyoming-piper loads its voice at the first
request). Printed: every start, then the median and the range per server and the ratio
of the medians; results in ``bench/results/<timestamp>-startup.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .wyoming_bench import (
    ServerSpec,
    chorus_spec,
    environment,
    link_joe_voice,
    running,
    wait_ready,
    wyoming_piper_spec,
)

RESULTS_DIR = Path(__file__).parent / "results"


def start_once(spec: ServerSpec, log: Path) -> float:
    with running(spec, log) as server:
        return asyncio.run(wait_ready(server))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=7)
    parser.add_argument("--chorus-arg", action="append", default=[],
                        help="an extra argument for chorus serve (repeatable)")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {"wyoming-piper": [], "chorus": []}
    with tempfile.TemporaryDirectory(prefix="chorus-startup-") as tmp:
        data = Path(tmp) / "wp"
        data.mkdir()
        link_joe_voice(data)
        specs = [wyoming_piper_spec(data), chorus_spec(args.chorus_arg)]
        for start in range(args.starts):
            for spec in specs:
                seconds = start_once(spec, Path(tmp) / f"{spec.name}.log")
                times[spec.name].append(seconds)
                print(f"start {start + 1}: {spec.name:14} {seconds * 1000:7.0f} ms",
                      flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:14} median {medians[name] * 1000:6.0f} ms "
              f"(range {min(values) * 1000:.0f}-{max(values) * 1000:.0f} ms)")
    ratio = medians["chorus"] / medians["wyoming-piper"]
    print(f"Chorus / wyoming-piper: {ratio:.2f}x (target <= 1.0x)")
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"{stamp}-startup.json"
    out.write_text(json.dumps({"date": stamp, "environment": environment(),
                               "chorus_args": args.chorus_arg, "seconds": times,
                               "ratio_of_medians": round(ratio, 3)}, indent=1))
    print(f"results in {out}")


if __name__ == "__main__":
    main()
