"""The Piper engine: piper-tts for text → phoneme ids, onnxruntime for ids → audio.

One ONNX session per voice (per graph part, when streaming below sentence level) is
shared by all worker threads (``InferenceSession.run`` is thread-safe). Measured on the
joe voice with two workers: the same throughput as one session per worker (17.0 vs 17.5
audio-s/s, within noise) for ~200 MB less resident memory after load, because the
weights exist once. Each session runs with ``intra_op_num_threads`` threads and spinning
off, so ``workers x threads`` is the CPU the server uses and idle workers do not burn
cores.

**Sub-sentence streaming.** Unless turned off, each voice's graph is cut into parts
(:mod:`chorus.server.engines.piper_graph`, built and verified by
:mod:`chorus.server.engines.piper_build`) and a sentence is rendered as an encoder call
followed by windows of frames (:mod:`chorus.server.engines.piper_windows`), each its own
scheduler unit; the audio equals whole-sentence synthesis sample for sample. A voice
whose graph cannot be cut, or whose windows do not match, is rendered whole, with one log
line saying why.

**Loudness: a fixed gain per voice.** piper-tts divides every sentence by its own peak.
That cannot be known before the whole sentence is decoded, so a window could never carry
its final samples, and it makes loudness jump from sentence to sentence. Chorus instead
multiplies the model's raw output by one gain per voice, computed at load from a fixed
calibration text synthesized without noise (:func:`calibration_gain`): deterministic for
a given voice file, the same for whole sentences and windows, and steady across
sentences. Samples beyond full scale are clipped, as piper-tts clips. The peak is kept in
the graph cache beside the parts' verification, so a voice's later loads skip rendering
the text (:func:`~.piper_build.remember`).

**Small windows only where a listener waits.** The window plan's small first windows
buy early audio with extra compute (each window decodes its context frames again, and
small model calls cost more per frame). The scheduler tells each unit's first call how
much audio its first window may hold and still be ready in time (``lead``, from the
audio its listener has yet to hear and the voice's measured pace); :meth:`plan` then
starts the plan at the largest size that fits, so a paragraph's later sentences are
usually one window each and cost what whole-sentence synthesis costs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime
from piper import PiperVoice
from piper.config import PhonemeType, PiperConfig

from chorus.common.layout import file_fingerprint

from . import onnx_runs
from .backend_gates import (
    REFERENCE,
    BackendChoice,
    PartChoice,
    Wanted,
    apply_recorded,
    choice_key,
    choose,
)
from .backends import Backend, OnnxRuntime, OpenVino, openvino_available
from .base import PCM, StopSignal, SynthesisParams, Unit, VoiceConfigError, VoiceSpec
from .piper_build import Builder, SplitReport, remember
from .piper_windows import DEFAULT_WINDOWS, Sentence, SplitGraph, plan_windows

__all__ = [
    "CALIBRATION_PEAK",
    "CALIBRATION_TEXT",
    "PiperEngine",
    "PiperLoadedVoice",
    "PiperWindows",
    "calibration_gain",
    "calibration_key",
    "split_phonemes",
    "to_pcm",
]

_LOGGER = logging.getLogger(__name__)

MEMORY_FACTOR = 2.0
"""Resident bytes per model byte: a loaded session measured ~1.4x the file, plus arena."""

_CLAUSE_BREAKS = frozenset(",;:!?.\u2014\u2013")  # incl. em and en dash

CALIBRATION_TEXT = ("Ready. Please bring the quick brown fox a cup of tea! How loud is "
                    "this voice when it speaks a long and ordinary sentence, with a pause?")
"""Synthesized without noise at every load: warms the sessions and sets the gain."""

CALIBRATION_PEAK = 0.7
"""Where the calibration text's loudest sample lands: 3 dB below full scale, so a sentence
up to 1.4x louder than the calibration's loudest is not clipped (measured on the joe
voice: raw sentence peaks 0.32-0.75 over 24 sentences, calibration peak 0.60, gain 1.16,
so those sentences peak at 0.37-0.87 of full scale)."""


def calibration_key() -> str:
    """What a recorded calibration peak depends on besides the parts' verification:
    piper-tts (its phonemizer turns the text into ids) and the text itself."""
    digest = hashlib.sha256(CALIBRATION_TEXT.encode()).hexdigest()[:16]
    return f"piper-tts {metadata.version('piper-tts')}, text {digest}"


def calibration_gain(peak: float) -> float:
    """The voice's gain from the raw peak of its calibration audio, rounded to three
    significant digits so that float rounding in the peak cannot change it."""
    if not math.isfinite(peak) or peak < 1e-4:
        return 1.0
    gain = CALIBRATION_PEAK / peak
    return float(f"{gain:.3g}")


def to_pcm(audio: npt.NDArray[Any], gain: float) -> PCM:
    """Scale raw model output by the voice's gain and convert as piper-tts does.

    Sample by sample, so a window converts exactly like the same samples of a sentence.
    """
    scaled = np.clip(np.asarray(audio, dtype=np.float32) * np.float32(gain), -1.0, 1.0)
    pcm: PCM = np.clip(scaled * 32767.0, -32767.0, 32767.0).astype(np.int16)
    return pcm


def split_phonemes(phonemes: list[str], max_len: int) -> list[list[str]]:
    """Split one sentence's phonemes into parts of at most ``max_len``.

    Prefer cutting after clause punctuation, then at a word boundary, and only as a
    last resort mid-word, always in the second half of the window so parts stay long
    enough to sound natural.
    """
    parts: list[list[str]] = []
    rest = phonemes
    while len(rest) > max_len:
        window = rest[: max_len + 1]
        lower = max_len // 2
        cut = next((i + 1 for i in range(max_len - 1, lower, -1)
                    if window[i] in _CLAUSE_BREAKS and window[i + 1] == " "), None)
        if cut is None:
            cut = next((i for i in range(max_len, lower, -1) if window[i] == " "), max_len)
        parts.append(rest[:cut])
        rest = rest[cut:]
        while rest and rest[0] == " ":
            rest = rest[1:]
    if rest:
        parts.append(rest)
    return parts


def _describe(name: str, config: dict[str, Any], language: str, quality: str | None) -> str:
    lang = config.get("language") or {}
    english = lang.get("name_english") if isinstance(lang, dict) else None
    country = lang.get("country_english") if isinstance(lang, dict) else None
    dataset = config.get("dataset") or name
    where = f"{english} ({country})" if english and country else (english or language)
    return f"{where}: {dataset}" + (f", {quality}" if quality else "")


def _check_phonemizer(config: PiperConfig, name: str, config_path: Path) -> None:
    """Refuse a config piper-tts would refuse at its first sentence (an espeak voice
    espeak-ng does not have), so that such a voice is never advertised.

    espeak voices only: the other phonemizers load models of their own, too slow to run
    on every scan.
    """
    if config.phoneme_type != PhonemeType.ESPEAK:
        return
    try:
        PiperVoice(session=None, config=config).phonemize("a")
    except Exception as err:  # espeakbridge raises RuntimeError; be safe with others
        raise VoiceConfigError(f"voice {name}: unusable config {config_path}: espeak "
                               f"voice {config.espeak_voice!r}: {err}") from err


@dataclass
class PiperEngine:
    """Reads and loads Piper voices (``<voice>.onnx`` + ``<voice>.onnx.json``)."""

    threads_per_voice: int
    max_phonemes: int
    """Longest phoneme sequence sent to the model in one call (see ServerSettings)."""
    stream_windows: Sequence[int] | None = field(default=DEFAULT_WINDOWS)
    """Frames per window below sentence level; ``None`` renders whole sentences."""
    graph_cache_dir: Path | None = None
    """Where graph parts are cached; ``None`` builds them in memory at every load."""
    prebuilt_graphs: Path | None = None
    """A read-only graph cache made ahead (``--prebuilt-graphs``), looked in second."""
    name: str = "piper"
    backend: str = "onnxruntime"
    """``--backend``: what runs the streaming parts (see :mod:`.backend_gates`)."""
    precision: str = "auto"
    """``--precision`` (used by OpenVINO only; onnxruntime runs f32)."""
    workers: int = 1
    """Model calls that may run at once (OpenVINO compiles one stream per worker)."""
    device: str = "cpu"
    """Where the sessions run: ``cpu`` or ``cuda:N`` (``--device``, resolved by
    :mod:`.devices`). On a GPU every part runs onnxruntime: OpenVINO is CPU only."""

    def read_spec(self, config_path: Path, name: str) -> VoiceSpec:
        model_path = config_path.with_suffix("")  # <voice>.onnx.json -> <voice>.onnx
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            piper_config = PiperConfig.from_dict(config)
            fingerprint = file_fingerprint(model_path, config_path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise VoiceConfigError(f"voice {name}: unusable config {config_path}: {err}") from err
        _check_phonemizer(piper_config, name, config_path)
        lang = config.get("language")
        language = (lang.get("code") if isinstance(lang, dict) else None) or str(
            piper_config.espeak_voice)
        audio = config.get("audio") or {}
        quality = audio.get("quality") if isinstance(audio, dict) else None
        speaker_map = piper_config.speaker_id_map or {}
        speakers = tuple(sorted(speaker_map, key=lambda s: speaker_map[s]))
        return VoiceSpec(
            name=name,
            engine=self.name,
            model_path=model_path,
            config_path=config_path,
            language=str(language),
            sample_rate=int(piper_config.sample_rate),
            speakers=speakers,
            num_speakers=int(piper_config.num_speakers),
            quality=quality,
            description=_describe(name, config, str(language), quality),
            version=piper_config.piper_version,
            model_bytes=fingerprint[1],
            fingerprint=fingerprint,
            files=(model_path, config_path),
        )

    def session(self, model: bytes | str, *, optimized_to: str | None = None,
                preoptimized: bool = False) -> onnxruntime.InferenceSession:
        """A session as the server runs one: a whole graph or one part (path or bytes)."""
        return onnx_runs.session(model, self.threads_per_voice, device=self.device,
                                 optimized_to=optimized_to, preoptimized=preoptimized)

    def load(self, spec: VoiceSpec) -> PiperLoadedVoice:
        try:
            config = PiperConfig.from_dict(json.loads(spec.config_path.read_text("utf-8")))
        except Exception as err:
            raise VoiceConfigError(f"voice {spec.name}: cannot load config: {err}") from err
        full: list[onnxruntime.InferenceSession] = []

        def full_session() -> onnxruntime.InferenceSession:
            if not full:
                full.append(self.session(str(spec.model_path)))
            return full[0]

        voice = PiperLoadedVoice(spec, config, self.max_phonemes, self.device)
        report = self._streaming_parts(spec, voice, full_session) if self.stream_windows else None
        if report is not None and report.graph is not None:
            report = self._backends(spec, voice, report)
        elif self.backend_wanted != "onnxruntime":
            _LOGGER.info("Voice %s renders whole sentences: onnxruntime f32 (--backend %s "
                         "applies to streaming parts)", spec.name, self.backend)
        try:
            if report is None or report.graph is None:
                voice.attach_session(full_session())
            else:
                voice.attach_split(report, tuple(self.stream_windows or DEFAULT_WINDOWS))
        except Exception as err:
            raise VoiceConfigError(f"voice {spec.name}: cannot load model: {err}") from err
        full.clear()  # the whole graph is not kept when the parts serve
        # A peak holds for the parts it was measured on: as verified (onnxruntime f32),
        # or as the recorded backend choice builds them.
        split = report if report is not None and report.graph is not None else None
        parts = voice.backend_choice.parts
        measured_for = calibration_key() + (
            "" if all(part.label == REFERENCE for part in parts.values()) else
            f", {choice_key(Wanted(self.backend_wanted, self.precision))}: "
            + ", ".join(f"{name} {part.label}" for name, part in parts.items()))
        known = split.calibrations.get(measured_for) if split is not None else None
        try:
            peak = voice.calibrate(known)
        except Exception as err:
            raise VoiceConfigError(f"voice {spec.name}: warm-up failed: {err}") from err
        if split is not None and known is None:
            remember(split, "calibrations", measured_for, peak)
        return voice

    def _backends(self, spec: VoiceSpec, voice: PiperLoadedVoice,
                  report: SplitReport) -> SplitReport:
        """The report with its parts on the chosen backends (behind the quality gates),
        the choice kept on ``voice`` and logged."""
        if report.graph is None:
            return report
        backend = self.backend_wanted
        if backend != "onnxruntime" and not openvino_available():
            _LOGGER.warning("Voice %s: --backend %s: OpenVINO is not installed (the "
                            "chorus-tts[openvino] extra); onnxruntime f32 for every part",
                            spec.name, self.backend)
        wanted = Wanted(backend, self.precision)
        backends: dict[str, Backend] = {
            "onnxruntime": OnnxRuntime(self.threads_per_voice, device=self.device),
            "openvino": OpenVino(self.threads_per_voice, max(1, self.workers))}
        key = choice_key(wanted)
        recorded = report.backends.get(key) if backend != "onnxruntime" else None
        chosen = None
        if recorded is not None:
            try:
                chosen = apply_recorded(report.graph, report.sources,
                                        BackendChoice.from_json(recorded), backends)
                _LOGGER.info("Voice %s: backends as chosen at an earlier load (recorded in "
                             "%s)", spec.name, report.cache_entry)
            except Exception as err:  # noqa: BLE001 - converters raise assorted errors
                _LOGGER.warning("Voice %s: the backend choice recorded in %s could not be "
                                "used (%s); choosing again", spec.name, report.cache_entry,
                                err)
        if chosen is None:
            chosen = choose(
                report.graph, report.sources,
                [voice.feeds(u, SynthesisParams(noise_scale=0.0, noise_w_scale=0.0))
                 for u in voice.prepare(CALIBRATION_TEXT)],
                tuple(self.stream_windows or DEFAULT_WINDOWS), wanted, backends,
                lambda line: _LOGGER.warning("Voice %s: %s", spec.name, line))
            if backend != "onnxruntime":
                remember(report, "backends", key, chosen[1].to_record())
        graph, choice = chosen
        voice.backend_choice = choice
        if backend != "onnxruntime":
            _LOGGER.info("Voice %s: backends (--backend %s --precision %s): %s", spec.name,
                         self.backend, self.precision, choice.summary())
        return dataclasses.replace(report, graph=graph, sources={})

    @property
    def backend_wanted(self) -> str:
        """``--backend`` as it applies here: onnxruntime on a GPU (OpenVINO, and so
        ``auto``'s candidates, run on the CPU only; see :mod:`.devices`)."""
        return "onnxruntime" if self.device != "cpu" else self.backend

    def _streaming_parts(self, spec: VoiceSpec, voice: PiperLoadedVoice,
                         full_session: Any) -> SplitReport:
        """The voice's graph parts, or why it must render whole sentences (logged)."""
        builder = Builder(
            session=self.session, threads=self.threads_per_voice,
            windows=tuple(self.stream_windows or DEFAULT_WINDOWS),
            cache_dir=self.graph_cache_dir, prebuilt_dir=self.prebuilt_graphs,
            full_session=full_session, device=self.device,
            calibration=lambda: [voice.feeds(u, SynthesisParams(noise_scale=0.0,
                                                                 noise_w_scale=0.0))
                                 for u in voice.prepare(CALIBRATION_TEXT)])
        report = builder.build(spec.model_path)
        if report.graph is None:
            _LOGGER.warning("Voice %s: sub-sentence streaming off, whole sentences only: %s",
                            spec.name, report.fallback)
            return report
        layout = report.graph.layout
        notes = report.notes
        _LOGGER.info("Voice %s: streaming in windows of %s frames (%d parts, context "
                     "flow %d / decoder %d frames, %s)%s", spec.name,
                     ",".join(map(str, self.stream_windows or ())), len(layout.parts),
                     layout.flow_context, layout.dec_context,
                     "bit-exact" if report.exact else "not bit-exact",
                     "; " + "; ".join(notes) if notes else "")
        return report


class PiperWindows:
    """One unit's audio as windows of frames; each window is one model call (any thread)."""

    def __init__(self, owner: PiperLoadedVoice, sentence: Sentence) -> None:
        self._owner = owner
        self._sentence = sentence
        self.windows = sentence.windows

    def __len__(self) -> int:
        return len(self._sentence)

    def samples(self, index: int) -> int:
        start, end = self.windows[index]
        return (end - start) * self._sentence.graph.layout.hop

    def cost(self, index: int) -> float:
        hop = self._sentence.graph.layout.hop
        return self._sentence.cost(index) * hop / (self._owner.spec.sample_rate or 1)

    def render(self, index: int) -> PCM:
        return to_pcm(self._sentence.render(index), self._owner.gain)


class PiperLoadedVoice:
    """A resident Piper voice; ``render`` and ``start`` may run on several threads at once."""

    def __init__(self, spec: VoiceSpec, config: PiperConfig, max_phonemes: int,
                 device: str = "cpu") -> None:
        self._spec = spec
        self._device = device
        self._config = config
        self._max_phonemes = max_phonemes
        self._piper = PiperVoice(session=None, config=config)  # phonemization
        self._session: onnxruntime.InferenceSession | None = None
        self._split: SplitGraph | None = None
        self._split_report: SplitReport | None = None
        self._windows: tuple[int, ...] = ()
        self.backend_choice = BackendChoice({"model": PartChoice()})
        """What runs each graph part (set by the engine when it streams in parts)."""
        self.gain = 1.0
        """Raw model output x gain = audio (see the module docstring)."""

    def _check_speakers(self, inputs: set[str]) -> None:
        self._speaker_input = "sid" in inputs
        if self._spec.num_speakers > 1 and not self._speaker_input:
            _LOGGER.warning("voice %s: config lists %d speakers but the model takes no "
                            "speaker id; speakers will sound the same", self._spec.name,
                            self._spec.num_speakers)
            # A model without that input would reject every call with a speaker id.
            self._config.num_speakers = 1

    def attach_session(self, session: onnxruntime.InferenceSession) -> None:
        """Render whole sentences with the voice's whole graph."""
        self._check_speakers({i.name for i in session.get_inputs()})
        self._session = session

    def attach_split(self, report: SplitReport, windows: tuple[int, ...]) -> None:
        """Render through the report's graph parts, streaming in ``windows``."""
        split = report.graph
        if split is None:
            raise ValueError(f"voice {self._spec.name} has no graph parts to stream with: "
                             f"{report.fallback}")
        self._check_speakers(set(split.layout.part_inputs["encoder"]))
        self._split = split
        self._split_report = report
        self._windows = windows

    @property
    def streaming(self) -> bool:
        """Whether units are rendered in windows below sentence level."""
        return self._split is not None

    @property
    def split_report(self) -> SplitReport | None:
        """How the graph parts it streams with were built (``None``: whole sentences)."""
        return self._split_report

    @property
    def spec(self) -> VoiceSpec:
        return self._spec

    @property
    def backends(self) -> dict[str, Any]:
        return self.backend_choice.to_json()

    @property
    def device(self) -> str:
        """Where its sessions run: ``cpu`` or ``cuda:N``."""
        return self._device

    @property
    def memory_bytes(self) -> int:
        return int(self._spec.model_bytes * MEMORY_FACTOR)

    @property
    def piper(self) -> PiperVoice:
        """piper-tts's voice object, used here for phonemization."""
        return self._piper

    def calibrate(self, peak: float | None = None) -> float:
        """Set :attr:`gain` from the calibration text's raw peak, rendered here unless
        ``peak`` is the one recorded for these parts (the graph cache); the peak used."""
        if peak is None:
            quiet = SynthesisParams(noise_scale=0.0, noise_w_scale=0.0)
            peak = max((float(np.max(np.abs(self.raw(unit, quiet))))
                        for unit in self.prepare(CALIBRATION_TEXT)), default=0.0)
        self.gain = calibration_gain(peak)
        return peak

    def prepare(self, text: str) -> list[Unit]:
        units: list[Unit] = []
        for phonemes in self.piper.phonemize(text):
            for part in split_phonemes(phonemes, self._max_phonemes):
                if any(p.strip() for p in part):
                    units.append(self.piper.phonemes_to_ids(part))
        return units

    def feeds(self, unit: Unit, params: SynthesisParams) -> dict[str, npt.NDArray[Any]]:
        """The model inputs for one unit, exactly as piper-tts builds them."""
        config = self._config
        scales = np.array([
            config.noise_scale if params.noise_scale is None else params.noise_scale,
            (config.length_scale if params.length_scale is None else params.length_scale)
            / (params.rate or 1.0),
            config.noise_w_scale if params.noise_w_scale is None else params.noise_w_scale,
        ], dtype=np.float32)
        ids = np.expand_dims(np.array(list(unit), dtype=np.int64), 0)
        feeds: dict[str, npt.NDArray[Any]] = {
            "input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
            "scales": scales}
        if config.num_speakers > 1:
            speaker = params.speaker_id if params.speaker_id is not None else (
                config.default_speaker_id or 0)
            feeds["sid"] = np.array([speaker], dtype=np.int64)
        return feeds

    def raw(self, unit: Unit, params: SynthesisParams, stop: StopSignal | None = None,
            ) -> npt.NDArray[np.float32]:
        """The model's raw output for a whole unit (before the gain)."""
        feeds = self.feeds(unit, params)
        if self._split is not None:
            return self._split.whole(feeds, stop)
        session = self._session
        if session is None:
            raise RuntimeError(f"voice {self._spec.name} has no model loaded")
        names = [i.name for i in session.get_inputs()]
        result = onnx_runs.run(session, {n: feeds[n] for n in names}, stop)
        return np.asarray(result[0]).reshape(-1)

    def render(self, unit: Unit, params: SynthesisParams, stop: StopSignal | None = None,
               ) -> PCM:
        return to_pcm(self.raw(unit, params, stop), self.gain)

    def plan(self, frames: int, lead: float) -> list[tuple[int, int]]:
        """Windows for a unit of ``frames`` whose first window may hold ``lead`` seconds
        of audio: the window plan from its largest size whose first window fits, else
        from its first size."""
        sizes = self._windows
        hop = self._split.layout.hop if self._split is not None else 256
        rate = self._spec.sample_rate or 1
        for skip in range(len(sizes) - 1, 0, -1):
            windows = plan_windows(frames, sizes[skip:])
            start, end = windows[0]
            if (end - start) * hop / rate <= lead:
                return windows
        return plan_windows(frames, sizes)

    def start(self, unit: Unit, params: SynthesisParams, lead: float = 0.0,
              stop: StopSignal | None = None) -> PCM | PiperWindows:
        """A unit's first call: its whole audio, or its encoder pass and windows (also
        a single one: the call stays short, so the scheduler can start the next unit)."""
        if self._split is None:
            return self.render(unit, params, stop)
        encoded = self._split.encode(self.feeds(unit, params), stop)
        windows = self.plan(encoded.frames, lead)
        _LOGGER.debug("Voice %s: unit of %d frames, first window up to %.2f s: windows %s",
                      self._spec.name, encoded.frames, lead,
                      [end - start for start, end in windows])
        return PiperWindows(self, Sentence(self._split, encoded, windows, stop))
