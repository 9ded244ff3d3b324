"""The Piper engine: piper-tts for text → phoneme ids, onnxruntime for ids → audio.

One ONNX session per voice is shared by all worker threads (``InferenceSession.run``
is thread-safe). Measured on the joe voice with two workers: the same throughput as
one session per worker (17.0 vs 17.5 audio-s/s, within noise) for ~200 MB less
resident memory after load, because the weights exist once. Each session runs with
``intra_op_num_threads`` threads and spinning off, so ``workers x threads`` is the
CPU the server uses and idle workers do not burn cores.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from piper import PiperVoice, SynthesisConfig
from piper.config import PiperConfig

from chorus.common.layout import file_fingerprint

from .base import PCM, SynthesisParams, Unit, VoiceConfigError, VoiceSpec

__all__ = ["PiperEngine", "PiperLoadedVoice", "split_phonemes"]

_LOGGER = logging.getLogger(__name__)

MEMORY_FACTOR = 2.0
"""Resident bytes per model byte: a loaded session measured ~1.4x the file, plus arena."""

_CLAUSE_BREAKS = frozenset(",;:!?.\u2014\u2013")  # incl. em and en dash
_WARMUP_TEXT = "Ready."


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


@dataclass
class PiperEngine:
    """Reads and loads Piper voices (``<voice>.onnx`` + ``<voice>.onnx.json``)."""

    threads_per_voice: int
    max_phonemes: int
    """Longest phoneme sequence sent to the model in one call (see ServerSettings)."""
    name: str = "piper"

    def read_spec(self, model_path: Path, config_path: Path, name: str) -> VoiceSpec:
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            piper_config = PiperConfig.from_dict(config)
            fingerprint = file_fingerprint(model_path, config_path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise VoiceConfigError(f"voice {name}: unusable config {config_path}: {err}") from err
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
        )

    def _session(self, model_path: Path) -> onnxruntime.InferenceSession:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads_per_voice
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # Spinning threads burn a core while waiting for work; with several workers
        # sharing few cores that costs throughput (measured: 15.8 -> 18.5+ audio-s/s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"])

    def load(self, spec: VoiceSpec) -> PiperLoadedVoice:
        try:
            config = PiperConfig.from_dict(json.loads(spec.config_path.read_text("utf-8")))
            session = self._session(spec.model_path)
        except Exception as err:
            raise VoiceConfigError(f"voice {spec.name}: cannot load model: {err}") from err
        voice = PiperLoadedVoice(spec, PiperVoice(session=session, config=config),
                                 self.max_phonemes)
        try:
            for unit in voice.prepare(_WARMUP_TEXT):
                voice.render(unit, SynthesisParams())
        except Exception as err:
            raise VoiceConfigError(f"voice {spec.name}: warm-up failed: {err}") from err
        return voice


class PiperLoadedVoice:
    """A resident Piper voice; ``render`` may run on several threads at once."""

    def __init__(self, spec: VoiceSpec, voice: PiperVoice, max_phonemes: int) -> None:
        self._spec = spec
        self._voice = voice
        self._max_phonemes = max_phonemes
        self._inputs = {i.name for i in voice.session.get_inputs()}
        if spec.num_speakers > 1 and "sid" not in self._inputs:
            _LOGGER.warning("voice %s: config lists %d speakers but the model takes no "
                            "speaker id; speakers will sound the same", spec.name,
                            spec.num_speakers)
            # piper-tts passes a speaker id whenever the config says several speakers;
            # a model without that input would reject every call.
            voice.config.num_speakers = 1

    @property
    def spec(self) -> VoiceSpec:
        return self._spec

    @property
    def memory_bytes(self) -> int:
        return int(self._spec.model_bytes * MEMORY_FACTOR)

    def prepare(self, text: str) -> list[Unit]:
        units: list[Unit] = []
        for phonemes in self._voice.phonemize(text):
            for part in split_phonemes(phonemes, self._max_phonemes):
                if any(p.strip() for p in part):
                    units.append(self._voice.phonemes_to_ids(part))
        return units

    def render(self, unit: Unit, params: SynthesisParams) -> PCM:
        speaker_id = params.speaker_id if "sid" in self._inputs else None
        syn_config = SynthesisConfig(
            speaker_id=speaker_id,
            length_scale=params.length_scale,
            noise_scale=params.noise_scale,
            noise_w_scale=params.noise_w_scale,
        )
        audio = np.asarray(self._voice.phoneme_ids_to_audio(list(unit), syn_config))
        return _to_pcm(audio)


def _to_pcm(audio: np.ndarray[Any, Any]) -> PCM:
    """Peak-normalise and convert exactly as piper-tts does for its own output."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    audio = np.zeros_like(audio) if peak < 1e-8 else audio / peak
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    return np.clip(audio * 32767.0, -32767.0, 32767.0).astype(np.int16)

