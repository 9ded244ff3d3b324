"""The Kokoro engine: kokoro-onnx for text -> phoneme tokens, onnxruntime for the audio.

Installed with ``chorus-tts[kokoro]``; :mod:`.registry` imports this module, and
nothing else does, so without the extra the server runs Piper alone. kokoro-onnx itself
is imported when the first Kokoro voice is read (its language is checked with espeak-ng),
not with this module: its package imports espeak-ng's bindings (phonemizer, joblib),
65-80 ms that every start of a server with the extra paid before its doors opened,
Kokoro voices or none.

**Voices.** A Kokoro voice is one model (Kokoro-82M, shared by all voices) plus one
style-vector file (a row of 256 floats per input length, the voice's own timbre). Its
entry in the voices directory is ``<voice>.kokoro.json`` (:mod:`chorus.common.layout`)::

    {"model": "kokoro-v1.0.int8.onnx", "style": "af_heart.bin", "language": "en_US"}

``model`` and ``style`` are file names in the same directory; the style file is raw
little-endian float32 (``voices/*.bin`` as Kokoro's ONNX releases and kokoro-js ship
them) or ``.npy``. ``language`` defaults from the voice name's first letter, Kokoro's
own convention (``a``: American English, ``b``: British, ``e``: Spanish, ...).

**The model once.** Every voice of one model file uses one onnxruntime session
(``run`` is thread-safe), kept while any of them is loaded; each loaded voice reports
its share of the model's memory, so the store's budget counts the model once.

**Phonemes.** English voices (``en_US``, ``en_GB``) are phonemized by misaki, Kokoro's
own G2P, where the ``kokoro-g2p`` extra installs it (:mod:`.kokoro_g2p`); other
languages, and English without it, by espeak-ng through kokoro-onnx.

**Units.** Phonemes are cut into batches the model takes whole (at most 510 tokens,
preferring sentence and clause ends); each batch is one unit, rendered whole: Kokoro's
graph is not cut into windows (``streaming`` is False), so a sentence's audio arrives
when the sentence is done. The model pads each
batch with silence; it is trimmed as kokoro-onnx trims it, and the utterance adds the
server's own sentence silence.

**Device.** The model's session runs where ``--device`` resolved to
(:class:`~.registry.EngineOptions` ``device``: the CPU, or a CUDA GPU through
onnxruntime-gpu); a blend speaks on its parts' session, so on the same device.

**Backend.** With ``--backend openvino`` or ``auto`` (on the CPU), the model may run on
OpenVINO instead, where it passes the quality gates at its first load
(:mod:`.kokoro_backends`); the choice is logged, shown in ``/voices`` and the metrics,
and kept in the graph cache.

**Blends.** A per-request blend (``af_bella(2)+af_sky(1)``, :mod:`chorus.server.voice_blends`)
is the weighted sum of its parts' style rows on the first part's model session: no
second session, no warm-up, and half a megabyte of rows built in well under a
millisecond. Kokoro-FastAPI blends the same way.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import onnxruntime

from chorus.common.kokoro import LANGUAGES, MEMORY_FACTOR
from chorus.common.layout import is_valid_voice_name

from . import onnx_runs
from .backend_gates import BackendChoice, PartChoice, Wanted
from .backends import OnnxRuntime, OpenVino, OrtPart, Part
from .base import PCM, LoadedVoice, StopSignal, SynthesisParams, Unit, VoiceConfigError, VoiceSpec
from .kokoro_backends import KokoroBackends
from .kokoro_g2p import Phonemize, english_g2p_note, english_phonemizer
from .registry import EngineOptions, require_libraries

if TYPE_CHECKING:
    from kokoro_onnx.tokenizer import Tokenizer

require_libraries("kokoro_onnx")  # the kokoro extra

__all__ = [
    "LANGUAGES",
    "MEMORY_FACTOR",
    "SPEED_RANGE",
    "KokoroEngine",
    "KokoroLoadedVoice",
    "espeak_language",
    "load_style",
    "model_session",
    "speed",
]

_LOGGER = logging.getLogger(__name__)

STYLE_DIM = 256
"""Floats per style row (Kokoro-82M)."""

STYLE_LIMIT = 100.0
"""The largest magnitude a style value may have. Kokoro's own 54 voices stay within
3.2; a file of other data read as floats passes the size and finiteness checks often
enough (a 1 KiB one about a third of the time) but holds values up to 1e38, which the
model would turn into noise or NaN audio instead of a refusal."""

SPEED_RANGE = (0.5, 2.0)
"""Speeds the model speaks well (kokoro-onnx refuses others); requests are clamped."""

_ESPEAK = {"en_us": "en-us", "en_gb": "en-gb", "es": "es", "fr": "fr-fr", "hi": "hi",
           "it": "it", "ja": "ja", "pt_br": "pt-br", "pt": "pt", "zh": "cmn"}

_CHECK_TEXT = "a"
"""Phonemized once per language when a voice is read: espeak-ng must know it."""

WARM_UP_TEXT = "Ready."

CALIBRATION_TEXT = "Ready. Please bring the quick brown fox a cup of tea!"
"""What the backend gates compare on (:mod:`.kokoro_backends`): one unit, 3.5 s of
audio, ~2 s of one core on onnxruntime (int8 model, 2-core EPYC)."""


def espeak_language(language: str) -> str:
    """The espeak-ng voice for a language code (``en_US`` -> ``en-us``; ``de_DE`` -> ``de``)."""
    code = language.replace("-", "_").lower()
    return _ESPEAK.get(code) or _ESPEAK.get(code.split("_")[0]) or code.split("_")[0]


def load_style(path: Path) -> npt.NDArray[np.float32]:
    """A style-vector file as rows of shape (1, 256); raises ValueError when it is none."""
    if path.suffix == ".npy":
        data = np.load(path, allow_pickle=False)
    else:
        data = np.fromfile(path, dtype="<f4")
    flat = np.asarray(data, dtype=np.float32).reshape(-1)
    if flat.size == 0 or flat.size % STYLE_DIM:
        raise ValueError(f"{path.name}: {flat.size} floats is not rows of {STYLE_DIM}")
    if not np.all(np.isfinite(flat)):
        raise ValueError(f"{path.name}: not finite")
    if np.abs(flat).max() > STYLE_LIMIT:
        raise ValueError(f"{path.name}: values up to {np.abs(flat).max():.3g}, not a "
                         f"Kokoro style (whose values stay within {STYLE_LIMIT:g})")
    return flat.reshape(-1, 1, STYLE_DIM)


def model_session(path: Path, threads: int, device: str = "cpu",
                  ) -> onnxruntime.InferenceSession:
    """The session a Kokoro model runs in: the server's kind, on ``device``, with
    onnxruntime's CPU arena, without which a third of a call's time on the CPU is page
    faults (:mod:`.onnx_runs`)."""
    return onnx_runs.session(str(path), threads, device=device, arena=True)


def _file_in(directory: Path, config: dict[str, Any], key: str, config_path: Path) -> Path:
    value = config.get(key)
    if not isinstance(value, str) or not is_valid_voice_name(value):
        raise VoiceConfigError(f"{config_path.name}: {key!r} must name a file in the same "
                               f"directory, got {value!r}")
    return directory / value


@dataclass
class _Model:
    """One model file's session (or, where chosen, its OpenVINO part), shared by the
    voices that use it."""

    part: Part
    device: str
    """Where ``part`` runs: ``cpu`` or ``cuda:N``."""
    fingerprint: tuple[int, ...]
    model_bytes: int
    tokens_input: str
    speed_dtype: np.dtype[Any]
    vocab: dict[str, int]
    backends: BackendChoice = field(default_factory=lambda: BackendChoice(
        {"model": PartChoice()}))
    """What runs it, and the gates' figures (:mod:`.kokoro_backends`)."""
    users: weakref.WeakSet[KokoroLoadedVoice] = field(default_factory=weakref.WeakSet)

    def feeds(self, tokens: Sequence[int], style: npt.NDArray[np.float32], value: float,
              ) -> dict[str, npt.NDArray[Any]]:
        """The model's inputs for one unit's tokens (padded with 0 at both ends, as
        Kokoro was trained), the style row for its length and the speed."""
        return {self.tokens_input: np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": style[min(len(tokens), len(style)) - 1],
                "speed": np.array([value], dtype=self.speed_dtype)}


class KokoroEngine:
    """Reads ``<voice>.kokoro.json`` entries and loads their voices."""

    name = "kokoro"

    def __init__(self, options: EngineOptions) -> None:
        self._threads = options.threads_per_voice
        self._device = options.device
        # OpenVINO runs on the CPU only: on a GPU the model stays on onnxruntime.
        wanted = Wanted(options.backend if options.device == "cpu" else "onnxruntime",
                        options.precision)
        self._backends = KokoroBackends(
            wanted, options.threads_per_voice,
            {"onnxruntime": OnnxRuntime(options.threads_per_voice, device=options.device),
             "openvino": OpenVino(options.threads_per_voice, max(1, options.workers))},
            options.graph_cache_dir)
        self._lock = threading.Lock()
        self._models: dict[Path, _Model] = {}
        self._model_locks: dict[Path, threading.Lock] = {}
        """Per model file: held while a voice gets its model, so voices loading at once
        share one session and one backend choice (seconds with ``--backend auto``)."""
        self._tokenizer: Tokenizer | None = None
        self._languages: dict[str, str | None] = {}
        """espeak language -> why it cannot be used (None: it can)."""
        self._phonemizers: dict[str, tuple[str, Phonemize]] = {}
        """language -> (G2P name, its phonemizer), built once per language."""

    @property
    def tokenizer(self) -> Tokenizer:
        """kokoro-onnx's espeak-ng phonemizer (one per process: espeak-ng is global)."""
        from kokoro_onnx.tokenizer import Tokenizer

        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = Tokenizer()
            return self._tokenizer

    def phonemizer(self, language: str) -> tuple[str, Phonemize]:
        """The G2P for a voice language and its name: misaki for English where it is
        installed, else espeak-ng."""
        with self._lock:
            known = self._phonemizers.get(language)
        if known is not None:
            return known
        misaki = english_phonemizer(language)
        if misaki is not None:
            chosen: tuple[str, Phonemize] = ("misaki", misaki)
        else:
            tokenizer, espeak = self.tokenizer, espeak_language(language)
            chosen = ("espeak-ng", lambda text: str(tokenizer.phonemize(text, espeak)))
        with self._lock:
            if language not in self._phonemizers:
                _LOGGER.info("Kokoro %s phonemized by %s%s", language, chosen[0],
                             english_g2p_note() if misaki is not None else "")
            return self._phonemizers.setdefault(language, chosen)

    def _check_language(self, espeak: str) -> str | None:
        if espeak not in self._languages:
            try:
                self.tokenizer.phonemize(_CHECK_TEXT, espeak)
            except Exception as err:  # noqa: BLE001 - an unsupported language, or espeak-ng
                # itself unusable (its library cannot be mapped from a noexec /tmp): the
                # voice is refused with the reason, the server and its other voices go on
                self._languages[espeak] = str(err) or type(err).__name__
            else:
                self._languages[espeak] = None
        return self._languages[espeak]

    def read_spec(self, config_path: Path, name: str) -> VoiceSpec:
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise VoiceConfigError(f"voice {name}: unusable config {config_path}: {err}",
                                   [config_path]) from err
        if not isinstance(config, dict):
            raise VoiceConfigError(f"voice {name}: {config_path} is not a JSON object",
                                   [config_path])
        directory = config_path.parent
        model = _file_in(directory, config, "model", config_path)
        style = _file_in(directory, config, "style", config_path)
        files = (config_path, model, style)
        language = config.get("language") or LANGUAGES.get(name[:1].lower())
        if not isinstance(language, str):
            raise VoiceConfigError(f"voice {name}: no 'language' in {config_path} and none "
                                   f"implied by the name (Kokoro prefixes: "
                                   f"{', '.join(sorted(LANGUAGES))})", files)
        try:
            fingerprint = tuple(v for path in files
                                for v in (path.stat().st_mtime_ns, path.stat().st_size))
            load_style(style)
        except (OSError, ValueError) as err:
            raise VoiceConfigError(f"voice {name}: {err}", files) from err
        problem = self._check_language(espeak_language(language))
        if problem is not None:
            raise VoiceConfigError(f"voice {name}: espeak-ng cannot speak "
                                   f"{espeak_language(language)!r}: {problem}", files)
        from kokoro_onnx.config import SAMPLE_RATE  # loaded by the language check above

        description = config.get("description")
        return VoiceSpec(
            name=name,
            engine=self.name,
            model_path=model,
            config_path=config_path,
            language=language,
            sample_rate=SAMPLE_RATE,
            description=(description if isinstance(description, str)
                         else f"Kokoro {language}: {name}"),
            version=str(config.get("version") or "") or None,
            model_bytes=model.stat().st_size,
            fingerprint=fingerprint,
            files=files,
        )

    def _model(self, spec: VoiceSpec, style: npt.NDArray[np.float32],
               g2p: tuple[str, Phonemize]) -> _Model:
        """The model's shared session, created when no loaded voice holds it yet, on the
        backend chosen for it (calibrated with this voice's ``style`` and ``g2p``)."""
        fingerprint = spec.fingerprint[2:4]  # the model file's (mtime, size)
        with self._lock:
            known = self._models.get(spec.model_path)
            if known is not None and known.fingerprint == fingerprint and known.users:
                return known
        from kokoro_onnx.session import embedded_vocab, input_dtypes

        session = model_session(spec.model_path, self._threads, self._device)
        dtypes = input_dtypes(session)
        tokens_input = "input_ids" if "input_ids" in dtypes else "tokens"
        missing = {tokens_input, "style", "speed"} - set(dtypes)
        if missing:
            raise ValueError(f"not a Kokoro model: no input {', '.join(sorted(missing))}")
        model = _Model(OrtPart(session), self._device, fingerprint, spec.model_bytes,
                       tokens_input, dtypes["speed"],
                       embedded_vocab(session) or self.tokenizer.vocab)
        del session  # held by the part, and dropped with it when another is chosen
        model.part, model.backends = self._backends.choose(
            spec.model_path, model.part,
            lambda: [model.feeds(tokens, style, 1.0)
                     for tokens in units(g2p[1], model.vocab, CALIBRATION_TEXT)])
        with self._lock:
            self._models[spec.model_path] = model
        return model

    def load(self, spec: VoiceSpec) -> KokoroLoadedVoice:
        with self._lock:
            model_lock = self._model_locks.setdefault(spec.model_path, threading.Lock())
        try:
            config = json.loads(spec.config_path.read_text(encoding="utf-8"))
            style = load_style(spec.config_path.parent / str(config["style"]))
            g2p = self.phonemizer(spec.language)
            with model_lock:  # until the voice is one of the model's users
                voice = KokoroLoadedVoice(spec, self._model(spec, style, g2p), style, g2p)
        except Exception as err:
            raise VoiceConfigError(f"voice {spec.name}: cannot load: {err}") from err
        try:
            voice.render(voice.prepare(WARM_UP_TEXT)[0], SynthesisParams())
        except Exception as err:
            raise VoiceConfigError(f"voice {spec.name}: warm-up failed: {err}") from err
        return voice

    def blend(self, spec: VoiceSpec, parts: Sequence[LoadedVoice]) -> KokoroLoadedVoice:
        """The weighted sum of the parts' style rows (the rows of the shortest style, were
        they of different lengths; Kokoro's are all 510), spoken with the first part's
        model session and ``spec``'s language."""
        voices = [part for part in parts if isinstance(part, KokoroLoadedVoice)]
        if len(voices) != len(parts) or len(parts) != len(spec.blend):
            raise VoiceConfigError(f"voice blend {spec.name}: parts are not Kokoro voices")
        rows = min(len(voice.style) for voice in voices)
        style = np.zeros((rows, 1, STYLE_DIM), dtype=np.float32)
        for voice, (_, weight) in zip(voices, spec.blend, strict=True):
            style += np.float32(weight) * voice.style[:rows]
        return KokoroLoadedVoice(spec, voices[0].model, style, self.phonemizer(spec.language),
                                 blended=True)


def units(phonemize: Phonemize, vocab: Mapping[str, int], text: str) -> list[list[int]]:
    """``text``'s tokens in batches the model takes whole (at most 510 tokens, cut where
    kokoro-onnx cuts), phonemes the vocabulary lacks dropped, empty batches left out."""
    from kokoro_onnx.chunker import split_phonemes
    from kokoro_onnx.config import MAX_PHONEME_LENGTH

    phonemes = " ".join(phonemize(text).split())
    batches: list[list[int]] = []
    for batch in split_phonemes(phonemes, MAX_PHONEME_LENGTH):
        tokens = [vocab[p] for p in batch if p in vocab]
        if any(p.strip() for p in batch) and tokens:
            batches.append(tokens)
    return batches


def speed(params: SynthesisParams) -> float:
    """Kokoro's speed from Chorus's knobs: ``rate`` over ``length_scale``, clamped."""
    value = (params.rate or 1.0) / (params.length_scale or 1.0)
    low, high = SPEED_RANGE
    return min(max(value, low), high)


class KokoroLoadedVoice:
    """A resident Kokoro voice; ``render`` and ``start`` may run on several threads."""

    streaming = False
    """Whole units: Kokoro's graph is not cut into windows."""

    def __init__(self, spec: VoiceSpec, model: _Model, style: npt.NDArray[np.float32],
                 g2p: tuple[str, Phonemize], *, blended: bool = False) -> None:
        """``g2p``: its phonemizer and that G2P's name (:meth:`KokoroEngine.phonemizer`).
        ``blended``: a per-request blend, which borrows its parts' model: it is not
        one of the model's users, so the resident voices' shares still add up to it."""
        self._spec = spec
        self._model = model
        self._style = style
        self._g2p, self._phonemize = g2p
        self._blended = blended
        if not blended:
            model.users.add(self)

    @property
    def spec(self) -> VoiceSpec:
        return self._spec

    @property
    def g2p(self) -> str:
        """Which G2P phonemizes its text: ``misaki`` or ``espeak-ng``."""
        return self._g2p

    @property
    def model(self) -> _Model:
        """The model session it speaks with (a blend borrows its first part's)."""
        return self._model

    @property
    def style(self) -> npt.NDArray[np.float32]:
        """Its style rows, shape (rows, 1, 256); read-only by convention."""
        return self._style

    @property
    def backends(self) -> dict[str, Any]:
        """What runs its model (one part, ``model``), chosen at the model's first load."""
        return self._model.backends.to_json()

    @property
    def device(self) -> str:
        """Where its model's session runs: ``cpu`` or ``cuda:N``."""
        return self._model.device

    @property
    def memory_bytes(self) -> int:
        """Its style rows plus its share of the model, which its voices split evenly (a
        blend's rows alone: the model is its parts')."""
        if self._blended:
            return int(self._style.nbytes)
        share = int(self._model.model_bytes * MEMORY_FACTOR) // max(len(self._model.users), 1)
        return int(self._style.nbytes) + share

    def prepare(self, text: str) -> list[Unit]:
        return list(units(self._phonemize, self._model.vocab, text))

    def raw(self, unit: Unit, params: SynthesisParams, stop: StopSignal | None = None,
            ) -> npt.NDArray[np.float32]:
        """The model's audio for one unit, silence trimmed, as floats in [-1, 1]."""
        model = self._model
        feeds = model.feeds(list(unit), self._style, speed(params))
        audio = np.asarray(model.part.run(feeds, stop)[0], dtype=np.float32).reshape(-1)
        from kokoro_onnx.trim import trim

        trimmed, _ = trim(audio)
        return np.asarray(trimmed, dtype=np.float32)

    def render(self, unit: Unit, params: SynthesisParams, stop: StopSignal | None = None,
               ) -> PCM:
        audio = np.clip(self.raw(unit, params, stop), -1.0, 1.0)
        pcm: PCM = (audio * 32767.0).astype(np.int16)
        return pcm

    def start(self, unit: Unit, params: SynthesisParams, lead: float = 0.0,
              stop: StopSignal | None = None) -> PCM:
        return self.render(unit, params, stop)

