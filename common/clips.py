"""Reference clips for cloned XTTS voices: checked and normalised the same way by the
clone API and the CLI.

A clip is judged by its content, never by its file name: PyAV probes the container, and
only :data:`~chorus.common.xtts.CLIP_FORMATS` (wav, flac, mp3, ogg) with an audio stream
are taken. What is stored is what XTTS conditions on: 16-bit mono WAV at
:data:`~chorus.common.xtts.CLIP_SAMPLE_RATE`, so the engine never meets a codec and two
clips of one voice are alike whatever they were uploaded as.

Each refusal is a :class:`ClipError` whose :attr:`~ClipError.kind` says which kind of
wrong it is, so that a front door can answer by it: ``too-large`` (more than
:data:`~chorus.common.xtts.CLIP_MAX_BYTES`, HTTP 413), ``unsupported`` (not audio, a
container that is not accepted, no audio stream: 415) and ``invalid`` (audio, but too
short, too long, silent, damaged or truncated: 422).

PyAV (``av``) and numpy come with the server's extras, which the XTTS extra includes;
they are imported when a clip is checked, so that importing this module needs neither.
"""

from __future__ import annotations

import io
import math
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from .xtts import CLIP_FORMATS, CLIP_MAX_BYTES, CLIP_MAX_SECONDS, CLIP_MIN_SECONDS, CLIP_SAMPLE_RATE

__all__ = [
    "SILENCE_DBFS",
    "Clip",
    "ClipError",
    "ClipErrorKind",
    "check_clip",
    "read_clip_file",
]

SILENCE_DBFS = -50.0
"""A clip whose RMS level over its whole length is below this (dB relative to full
scale) is refused as silent: a real recording of speech sits around -30 to -15 dBFS, a
quiet one well above -50; below it the model would clone room noise."""

TRUNCATION_TOLERANCE_S = 0.5
"""How far the decoded length may fall short of the length the container declares
before the clip counts as truncated (MP3 declares an estimate)."""

ClipErrorKind = Literal["too-large", "unsupported", "invalid"]

_MISSING_AV = ("checking clips needs PyAV and numpy, which come with "
               "pip install 'chorus-tts[xtts]'")


class ClipError(ValueError):
    """A clip that cannot be a reference clip, and why (the message names the clip)."""

    def __init__(self, kind: ClipErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ClipErrorKind = kind
        self.message = message


@dataclass(frozen=True)
class Clip:
    """A clip that passed every check, normalised."""

    wav: bytes
    """16-bit mono WAV at :data:`~chorus.common.xtts.CLIP_SAMPLE_RATE`."""
    seconds: float
    source_format: str
    """The container it came in (``wav``, ``flac``, ``mp3``, ``ogg``)."""
    rms_dbfs: float


def read_clip_file(path: Path, label: str | None = None) -> bytes:
    """The bytes of a clip file, reading at most one byte more than the limit: a clip
    larger than :data:`~chorus.common.xtts.CLIP_MAX_BYTES` (or an endless device) is
    refused without being read whole. OSError when it cannot be opened."""
    label = label or str(path)
    with path.open("rb") as stream:
        data = read_bounded(stream, CLIP_MAX_BYTES)
    if data is None:
        raise ClipError("too-large", f"{label} is larger than {CLIP_MAX_BYTES} bytes "
                        f"({CLIP_MAX_BYTES // (1024 * 1024)} MiB), the most a clip may be")
    return data


def read_bounded(stream: BinaryIO, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of ``stream``; ``None`` when there are more."""
    data = stream.read(limit + 1)
    return None if len(data) > limit else data


def check_clip(data: bytes, label: str = "clip") -> Clip:
    """Decode ``data`` by its content, check it and normalise it; :class:`ClipError`
    naming ``label`` and what is wrong."""
    if len(data) > CLIP_MAX_BYTES:
        raise ClipError("too-large", f"{label} is larger than {CLIP_MAX_BYTES} bytes")
    try:
        import av
        import numpy as np
    except ImportError as err:  # pragma: no cover - the extras bring both
        raise RuntimeError(_MISSING_AV) from err
    if not data:
        raise ClipError("unsupported", f"{label} is empty")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, EOFError) as err:
        raise ClipError("unsupported", f"{label} is not audio in a format that is "
                        f"accepted ({', '.join(CLIP_FORMATS)}): {_reason(err)}") from err
    with container:
        names = container.format.name.split(",")
        fmt = next((name for name in names if name in CLIP_FORMATS), None)
        if fmt is None:
            raise ClipError("unsupported", f"{label} is {container.format.long_name} "
                            f"({container.format.name}); accepted: "
                            f"{', '.join(CLIP_FORMATS)}")
        if not container.streams.audio:
            raise ClipError("unsupported", f"{label} ({fmt}) has no audio stream")
        stream = container.streams.audio[0]
        samples = _decode(container, stream, label, fmt, np)
        declared = (float(container.duration) / av.time_base
                    if container.duration is not None and container.duration > 0 else None)
    if fmt == "wav":  # libav clamps a WAV's duration to the bytes there are
        declared = _wav_declared_seconds(data)
    seconds = len(samples) / CLIP_SAMPLE_RATE
    if declared is not None and seconds < declared - TRUNCATION_TOLERANCE_S \
            and seconds < declared * 0.95:
        raise ClipError("invalid", f"{label} ({fmt}) is truncated: its header declares "
                        f"{declared:.1f} s, only {seconds:.1f} s decode")
    if seconds < CLIP_MIN_SECONDS:
        raise ClipError("invalid", f"{label} ({fmt}) is {seconds:.1f} s long; a clip must "
                        f"be {CLIP_MIN_SECONDS:g} to {CLIP_MAX_SECONDS:g} s")
    level = _dbfs(samples, np)
    if level < SILENCE_DBFS:
        raise ClipError("invalid", f"{label} ({fmt}) is silent: its level is "
                        f"{_level_text(level)}, below {SILENCE_DBFS:g} dBFS")
    return Clip(_wav(samples), seconds, fmt, level)


def _decode(container: Any, stream: Any, label: str, fmt: str, np: Any) -> Any:
    """The first audio stream as int16 mono at CLIP_SAMPLE_RATE, refusing (before the
    whole is decoded) one longer than CLIP_MAX_SECONDS: a small MP3 can hold hours."""
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=CLIP_SAMPLE_RATE)
    limit = int((CLIP_MAX_SECONDS + 1) * CLIP_SAMPLE_RATE)
    pieces: list[Any] = []
    total = 0

    def add(frames: list[Any]) -> None:
        nonlocal total
        for frame in frames:
            array = frame.to_ndarray().reshape(-1)
            pieces.append(array)
            total += len(array)

    try:
        for frame in container.decode(stream):
            add(resampler.resample(frame))
            if total > limit:
                break
        if total <= limit:
            add(resampler.resample(None))
    except (av.error.FFmpegError, ValueError) as err:
        decoded = total / CLIP_SAMPLE_RATE
        kind: ClipErrorKind = "invalid" if total else "unsupported"
        raise ClipError(kind, f"{label} ({fmt}) cannot be decoded"
                        + (f" after {decoded:.1f} s" if total else "")
                        + f": {_reason(err)}") from err
    if total > CLIP_MAX_SECONDS * CLIP_SAMPLE_RATE:
        raise ClipError("invalid", f"{label} ({fmt}) is longer than {CLIP_MAX_SECONDS:g} s; "
                        f"a clip must be {CLIP_MIN_SECONDS:g} to {CLIP_MAX_SECONDS:g} s")
    if not pieces:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(pieces).astype(np.int16, copy=False)


def _wav_declared_seconds(data: bytes) -> float | None:
    """The length a RIFF/WAVE header declares (its ``data`` chunk's size over the byte
    rate of its ``fmt`` chunk); None when it declares none (a streamed WAV's sizes are
    0 or 0xFFFFFFFF) or the header cannot say."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, byte_rate = 12, 0
    while offset + 8 <= len(data):
        kind = data[offset:offset + 4]
        size = int(struct.unpack_from("<I", data, offset + 4)[0])
        if kind == b"fmt " and offset + 16 <= len(data):
            byte_rate = int(struct.unpack_from("<I", data, offset + 16)[0])
        elif kind == b"data":
            if byte_rate <= 0 or size in (0, 0xFFFFFFFF):
                return None
            return size / byte_rate
        offset += 8 + size + (size & 1)
    return None


def _dbfs(samples: Any, np: Any) -> float:
    if len(samples) == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64) / 32768.0))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def _level_text(level: float) -> str:
    return "digital silence" if level == -math.inf else f"{level:.1f} dBFS"


def _reason(err: BaseException) -> str:
    """libav's words without the errno prefix PyAV adds."""
    text = getattr(err, "strerror", None) or str(err)
    return str(text)


def _wav(samples: Any) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(CLIP_SAMPLE_RATE)
        writer.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()

