"""The XTTS v2 engine: voices cloned from a few seconds of speech, on coqui-tts and torch.

Installed with ``chorus-tts[xtts]``; :mod:`.registry` imports this module, and nothing
else does, so without the extra the server runs the other engines alone and says once
which ``pip install`` brings XTTS in. torch and coqui-tts themselves are imported when
the first checkpoint loads (:func:`_import_libraries`), not at start-up.

**Voices.** An XTTS voice is ``<voice>.xtts.json`` (:class:`~chorus.common.xtts.XttsEntry`)
naming its reference clips, plain files beside it, and a checkpoint directory
``<root>/<checkpoint>/`` (``config.json``, ``model.pth``, ``vocab.json``, optionally
``speakers_xtts.pth``). Reading a voice checks that those files are there and that each
clip's header is audio, nothing more: a missing or unreadable file makes the voice
unusable with that file named, and the store reads it again when it appears.

**The model once.** Every voice of one checkpoint directory speaks with one loaded model,
kept while any of them is loaded, on torch's device (``--device`` as torch can keep it,
:func:`~.devices.resolve_torch`: ``cpu`` or ``cuda:N``). Each voice reports its share
of the model's memory (:func:`~chorus.common.xtts.memory_estimate`), so the store's
budget counts it once.
The model keeps state between the steps of a generation (the prompt it was conditioned
on), so its calls are serialised by a lock, and a stream puts its own prompt back before
each step it takes (:class:`XttsChunks`).

**Speaker conditioning.** A voice's GPT conditioning latents and speaker embedding are
computed once from its clips, as coqui-tts computes them, and cached beside the entry
(:func:`~chorus.common.xtts.latents_path`, a ``.npz`` without pickles) under a key of the
clips' sha256 and the checkpoint's ``model.pth`` (:func:`~chorus.common.xtts.latents_key`):
a later load, in this process or after a restart, reads them back; a changed clip or
checkpoint computes them again. A directory that cannot be written only costs the cache.

**Units and streaming.** Text is cut into units within XTTS's per-language character
limit (the tokenizer's; the smallest of the voice's languages, so any of them fits).
XTTS is autoregressive: the length of a unit's audio is known only when it is done, and
audio cannot be rendered out of order, so a unit's audio is a :class:`XttsChunks` stream
from coqui-tts's own ``inference_stream``: the scheduler pulls a chunk
(:data:`STREAM_CHUNK_TOKENS` codes, about 0.9 s of speech) per work item, the first audio
of a sentence leaves as soon as its first chunk is decoded, and a request that ended
stops its stream between chunks.
"""

# pyright: reportMissingImports=false
# (torch and coqui-tts are in the xtts venv only, not in the one pyright checks with)

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import soundfile

from chorus.common.files import file_sha256
from chorus.common.layout import TEMP_PREFIX
from chorus.common.xtts import (
    CHECKPOINT_FILES,
    CHECKPOINT_OPTIONAL_FILES,
    LICENSE_NAME,
    OUTPUT_SAMPLE_RATE,
    XttsEntry,
    latents_key,
    latents_path,
    memory_estimate,
)

from . import devices
from .base import PCM, StopSignal, SynthesisParams, Unit, VoiceConfigError, VoiceSpec
from .registry import EngineOptions, require_libraries

if TYPE_CHECKING:
    import torch
    import torchaudio.functional
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

require_libraries("torch", "torchaudio", "TTS")  # the xtts extra


def _import_libraries() -> None:
    """Import torch, torchaudio and coqui-tts, once, when a checkpoint first loads.

    Not at start-up: they take seconds to import (about 5 s on a 2-core VM, torch 1.6 s
    of it), which every start of a server with the extra would pay before its doors
    open, XTTS voices or none. A library that is there but cannot load (a broken native
    library) makes the XTTS voices unusable with the reason, not the server."""
    global torch, torchaudio, XttsConfig, Xtts  # bound here, on the first load
    import torch
    import torchaudio.functional
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

__all__ = [
    "CONDITIONING_RATE",
    "SPEED_RANGE",
    "STREAM_CHUNK_TOKENS",
    "XttsChunks",
    "XttsEngine",
    "XttsLoadedVoice",
    "compute_conditioning",
    "split_text",
]

_LOGGER = logging.getLogger(__name__)

CONDITIONING_RATE = 22_050
"""XTTS conditions on audio at this rate (its GPT's mel frames and the decoder's)."""

STREAM_CHUNK_TOKENS = 20
"""Audio codes per streamed chunk, coqui-tts's default: 20 x 1024 samples at 22.05 kHz,
0.93 s of speech."""

CHUNK_SECONDS = STREAM_CHUNK_TOKENS * 1024 / CONDITIONING_RATE

SPEED_RANGE = (0.5, 2.0)
"""Speeds requests are clamped to: XTTS stretches its latents, which beyond these
sounds broken."""

DEFAULT_CHAR_LIMIT = 250
"""Characters per unit for a language the tokenizer has no limit for."""


def speed(params: SynthesisParams) -> float:
    """XTTS's speed from Chorus's knobs: ``rate`` over ``length_scale``, clamped."""
    value = (params.rate or 1.0) / (params.length_scale or 1.0)
    low, high = SPEED_RANGE
    return min(max(value, low), high)


def split_text(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut after clause punctuation
    where one is in the second half of the limit, else at a space, else anywhere."""
    text = " ".join(text.split())
    pieces: list[str] = []
    while len(text) > limit:
        window = text[:limit + 1]
        cut = max(window.rfind(mark, limit // 2) for mark in (", ", "; ", ": "))
        if cut >= 0:
            cut += 1
        else:
            cut = window.rfind(" ", limit // 2)
            if cut < 0:
                cut = limit
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return [piece for piece in pieces if piece]


def _stat_pair(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)



def _read_clip(path: Path) -> torch.Tensor:
    """A clip as a (1, samples) float tensor at :data:`CONDITIONING_RATE`, channels
    averaged (coqui-tts's ``load_audio`` does the same through torchaudio's I/O, which
    needs torchcodec)."""
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))[None, :]
    if rate != CONDITIONING_RATE:
        mono = torchaudio.functional.resample(mono, rate, CONDITIONING_RATE)
    return mono


def compute_conditioning(model: Xtts, clips: Sequence[Path],
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The GPT conditioning latents and the speaker embedding of ``clips``, as
    coqui-tts's ``get_conditioning_latents`` computes them with the checkpoint's cloning
    settings: each clip's speaker embedding, averaged; the latents of the clips joined."""
    config = model.config
    audios = []
    embeddings = []
    for clip in clips:
        audio = _read_clip(clip)[:, : CONDITIONING_RATE * int(config.max_ref_len)]
        audio = audio.to(model.device)
        if config.sound_norm_refs:
            audio = (audio / torch.abs(audio).max()) * 0.75
        embeddings.append(model.get_speaker_embedding(audio, CONDITIONING_RATE))
        audios.append(audio)
    latents = model.get_gpt_cond_latents(torch.cat(audios, dim=-1), CONDITIONING_RATE,
                                         length=int(config.gpt_cond_len),
                                         chunk_length=int(config.gpt_cond_chunk_len))
    embedding = torch.stack(embeddings).mean(dim=0)
    return latents, embedding


@dataclass
class _Model:
    """One checkpoint directory's loaded model, shared by the voices that use it."""

    xtts: Xtts
    fingerprint: tuple[int, ...]
    model_bytes: int
    char_limits: dict[str, int]
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held for every call into the model: it keeps a generation's prompt between steps."""
    users: weakref.WeakSet[XttsLoadedVoice] = field(default_factory=weakref.WeakSet)
    device: str = "cpu"
    """Where its weights live (``cpu`` or ``cuda:N``)."""

    def char_limit(self, language: str) -> int:
        return self.char_limits.get(language.split("-")[0], DEFAULT_CHAR_LIMIT)


class XttsEngine:
    """Reads ``<voice>.xtts.json`` entries and loads their voices."""

    name = "xtts"

    def __init__(self, options: EngineOptions) -> None:
        self._device = devices.resolve_torch(options.requested_device).name
        self._lock = threading.Lock()
        """Held while a checkpoint loads: voices of one checkpoint load it once."""
        self._models: dict[Path, _Model] = {}
        self._unwritable: set[Path] = set()

    # -- reading ------------------------------------------------------------------------

    def read_spec(self, config_path: Path, name: str) -> VoiceSpec:
        try:
            entry = XttsEntry.read(config_path)
        except (OSError, ValueError) as err:
            raise VoiceConfigError(f"voice {name}: unusable entry {config_path}: {err}",
                                   [config_path]) from err
        root = config_path.parent
        clips = tuple(root / clip for clip in entry.clips)
        checkpoint = root / entry.checkpoint
        required = tuple(checkpoint / file for file in CHECKPOINT_FILES)
        optional = tuple(checkpoint / file for file in CHECKPOINT_OPTIONAL_FILES)
        files = (config_path, *clips, *required, *optional)
        for path in (*clips, *required):
            if not path.is_file():
                what = "clip" if path in clips else f"checkpoint {entry.checkpoint!r} file"
                hint = ("" if path in clips else
                        f" (the XTTS v2 checkpoint, licence {LICENSE_NAME}: the voice "
                        "manager fetches it once its licence is accepted)")
                raise VoiceConfigError(f"voice {name}: {what} {path} is missing{hint}",
                                       files)
        for clip in clips:
            try:
                info = soundfile.info(str(clip))
            except (OSError, RuntimeError) as err:  # soundfile's errors are RuntimeErrors
                raise VoiceConfigError(f"voice {name}: clip {clip} is not audio: {err}",
                                       files) from err
            if info.frames <= 0 or info.samplerate <= 0:
                raise VoiceConfigError(f"voice {name}: clip {clip} holds no audio", files)
        fingerprint = tuple(value for path in files for value in _stat_pair(path))
        languages = entry.all_languages
        return VoiceSpec(
            name=name,
            engine=self.name,
            model_path=checkpoint / "model.pth",
            config_path=config_path,
            language=entry.language,
            languages=languages if len(languages) > 1 else (),
            sample_rate=OUTPUT_SAMPLE_RATE,
            description=entry.description or (
                f"XTTS v2 cloned voice ({', '.join(languages)}): {name}"),
            model_bytes=(checkpoint / "model.pth").stat().st_size,
            fingerprint=fingerprint,
            files=files,
        )

    # -- loading ------------------------------------------------------------------------

    def _model(self, spec: VoiceSpec) -> _Model:
        """The checkpoint's shared model, loaded when no loaded voice holds it yet."""
        directory = spec.model_path.parent
        fingerprint = tuple(v for file in CHECKPOINT_FILES
                            for v in _stat_pair(directory / file))
        with self._lock:
            known = self._models.get(directory)
            if known is not None and known.fingerprint == fingerprint and known.users:
                return known
            began = time.perf_counter()
            try:
                _import_libraries()
            except (ImportError, OSError, RuntimeError) as err:
                raise VoiceConfigError(
                    f"voice {spec.name}: torch or coqui-tts cannot be loaded: {err} "
                    "(reinstall the xtts extra: pip install 'chorus-tts[xtts]')",
                    spec.files) from err
            config = XttsConfig()
            config.load_json(str(directory / "config.json"))
            xtts = Xtts(config)
            xtts.load_checkpoint(config, checkpoint_dir=str(directory), eval=True)
            xtts.to(torch.device(self._device))
            model = _Model(xtts, fingerprint, spec.model_bytes,
                           dict(xtts.tokenizer.char_limits), device=self._device)
            self._models[directory] = model
            _LOGGER.info("XTTS checkpoint %s loaded on %s in %.1f s", directory,
                         self._device, time.perf_counter() - began)
            return model

    def _conditioning(self, spec: VoiceSpec, model: _Model,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The voice's conditioning from its cache, or computed and cached."""
        entry = XttsEntry.read(spec.config_path)
        root = spec.config_path.parent
        clips = [root / clip for clip in entry.clips]
        mtime, size = _stat_pair(spec.model_path)
        key = latents_key([file_sha256(clip) for clip in clips], f"{size}:{mtime}")
        cache = latents_path(root, spec.name)
        device = torch.device(self._device)
        cached = _read_latents(cache, key)
        if cached is not None:
            _LOGGER.info("Voice %s: speaker conditioning read from %s", spec.name, cache.name)
            latents, embedding = cached
            return (torch.from_numpy(latents).to(device),
                    torch.from_numpy(embedding).to(device))
        began = time.perf_counter()
        with model.lock:
            latents_t, embedding_t = compute_conditioning(model.xtts, clips)
        _LOGGER.info("Voice %s: speaker conditioning computed from %d clip(s) in %.1f s",
                     spec.name, len(clips), time.perf_counter() - began)
        self._write_latents(cache, key, latents_t, embedding_t)
        return latents_t, embedding_t

    def _write_latents(self, path: Path, key: str, latents: torch.Tensor,
                       embedding: torch.Tensor) -> None:
        partial = path.with_name(f"{TEMP_PREFIX}{path.name}")
        try:
            with partial.open("wb") as out:
                np.savez(out, key=np.array(key),
                         gpt_cond_latent=latents.detach().float().cpu().numpy(),
                         speaker_embedding=embedding.detach().float().cpu().numpy())
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)
        except OSError as err:
            partial.unlink(missing_ok=True)
            if path.parent not in self._unwritable:
                self._unwritable.add(path.parent)
                _LOGGER.warning("Cannot cache XTTS speaker conditioning in %s (%s): it is "
                                "computed again at every load", path.parent, err)

    def load(self, spec: VoiceSpec) -> XttsLoadedVoice:
        try:
            model = self._model(spec)
        except Exception as err:
            raise VoiceConfigError(f"voice {spec.name}: cannot load XTTS checkpoint "
                                   f"{spec.model_path.parent}: {err}") from err
        try:
            latents, embedding = self._conditioning(spec, model)
        except Exception as err:
            raise VoiceConfigError(f"voice {spec.name}: cannot compute its speaker "
                                   f"conditioning from its clips: {err}") from err
        return XttsLoadedVoice(spec, model, latents, embedding)


def _read_latents(path: Path, key: str,
                  ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None:
    """Cached conditioning whose key is ``key``; ``None`` when absent, stale or unreadable
    (it is then computed again and the file replaced)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            latents = np.asarray(data["gpt_cond_latent"], dtype=np.float32)
            embedding = np.asarray(data["speaker_embedding"], dtype=np.float32)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as err:
        _LOGGER.warning("Ignoring unreadable XTTS conditioning cache %s: %s", path, err)
        return None
    if latents.ndim != 3 or embedding.ndim != 3 or not (
            np.all(np.isfinite(latents)) and np.all(np.isfinite(embedding))):
        return None
    return latents, embedding


def _to_pcm(chunk: torch.Tensor) -> PCM:
    audio = np.clip(chunk.detach().float().cpu().numpy().reshape(-1), -1.0, 1.0)
    pcm: PCM = (audio * 32767.0).astype(np.int16)
    return pcm


class XttsChunks:
    """One unit's audio from ``inference_stream``, a chunk per :meth:`next`.

    The model conditions a generation on a prompt (the speaker's latents and the text)
    that it keeps between steps; streams of other units take steps on the same model in
    between, so each pull puts this stream's prompt back under the model's lock first.
    """

    def __init__(self, voice: XttsLoadedVoice, text: str, language: str, speed: float,
                 stop: StopSignal | None) -> None:
        self._voice = voice
        self._text = text
        self._language = language
        self._speed = speed
        self._stop = stop
        self._stream: Iterator[torch.Tensor] | None = None
        self._prompt: torch.Tensor | None = None
        self._closed = False

    def next(self) -> PCM | None:
        """The next chunk; :class:`~.base.Cancelled` once the request has ended."""
        if self._stop is not None:
            self._stop.check()
        if self._closed:
            return None
        model = self._voice.model
        with model.lock:
            inference = model.xtts.gpt.gpt_inference
            if self._stream is None:
                self._stream = self._voice.stream(self._text, self._language, self._speed)
            else:
                inference.store_prefix_emb(self._prompt)
            try:
                chunk = next(self._stream)
            except StopIteration:
                self.close()
                return None
            self._prompt = inference.cached_prefix_emb
        return _to_pcm(chunk)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        stream, self._stream, self._prompt = self._stream, None, None
        if stream is not None and hasattr(stream, "close"):
            with contextlib.suppress(ValueError):  # running in another thread: ends there
                stream.close()

    def cost(self) -> float:
        return CHUNK_SECONDS


class XttsLoadedVoice:
    """A resident XTTS voice: its conditioning on a shared model."""

    streaming = True
    """Its units answer with chunk streams: the next unit waits for the one before."""

    def __init__(self, spec: VoiceSpec, model: _Model, latents: torch.Tensor,
                 embedding: torch.Tensor) -> None:
        self._spec = spec
        self._model = model
        self._latents = latents
        self._embedding = embedding
        self._limit = min(model.char_limit(language) for language in spec.all_languages)
        model.users.add(self)

    @property
    def spec(self) -> VoiceSpec:
        return self._spec

    @property
    def model(self) -> _Model:
        return self._model

    @property
    def device(self) -> str:
        """Where its model runs (``/voices``, ``chorus_voice_device``)."""
        return self._model.device

    @property
    def memory_bytes(self) -> int:
        """Its conditioning plus its share of the checkpoint, which its voices split."""
        own = (self._latents.numel() * self._latents.element_size()
               + self._embedding.numel() * self._embedding.element_size())
        share = memory_estimate([self._model.model_bytes]) // max(len(self._model.users), 1)
        return int(own) + share

    def prepare(self, text: str) -> list[Unit]:
        """Pieces within the smallest character limit of the voice's languages, each a
        unit of code points (the model reads text, not phonemes)."""
        return [[ord(c) for c in piece] for piece in split_text(text, self._limit)]

    def stream(self, text: str, language: str, speed_: float) -> Iterator[torch.Tensor]:
        """coqui-tts's streaming inference for one unit (call with the model's lock)."""
        config = self._model.xtts.config
        stream: Iterator[torch.Tensor] = self._model.xtts.inference_stream(
            text, language, self._latents, self._embedding,
            stream_chunk_size=STREAM_CHUNK_TOKENS, speed=speed_,
            temperature=config.temperature, length_penalty=config.length_penalty,
            repetition_penalty=config.repetition_penalty, top_k=config.top_k,
            top_p=config.top_p, enable_text_splitting=False)
        return stream

    def _language(self, params: SynthesisParams) -> str:
        """The request's language where the voice speaks it (the synthesizer checked it
        against the request's voice; a voice SSML switches to may speak others), else the
        voice's own."""
        if params.language in self._spec.all_languages:
            return params.language
        return self._spec.language

    def start(self, unit: Unit, params: SynthesisParams, lead: float = 0.0,
              stop: StopSignal | None = None) -> XttsChunks:
        return XttsChunks(self, "".join(map(chr, unit)), self._language(params),
                          speed(params), stop)

    def render(self, unit: Unit, params: SynthesisParams, stop: StopSignal | None = None,
               ) -> PCM:
        chunks = self.start(unit, params, stop=stop)
        pieces: list[PCM] = []
        try:
            while (chunk := chunks.next()) is not None:
                pieces.append(chunk)
        finally:
            chunks.close()
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)

