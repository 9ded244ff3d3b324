"""Reference clips made in the test with PyAV and numpy (no tests in here): a speech-like
signal in every accepted container, and the wrong things a clone must refuse (too short,
too long, silent, not audio, a picture, a video with no sound, truncated)."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any, Literal

import av
import numpy as np

Kind = Literal["voice", "noise", "silence"]

CONTAINERS: dict[str, tuple[str, str, str]] = {
    "wav": ("wav", "pcm_s16le", "s16"),
    "flac": ("flac", "flac", "s16"),
    "mp3": ("mp3", "libmp3lame", "fltp"),
    "ogg": ("ogg", "libopus", "flt"),
}
"""Accepted container -> (muxer, encoder, the sample format it takes). Opus in Ogg: the
PyAV wheels carry libopus, not libvorbis."""
RATES = {"ogg": 48_000}
"""Containers whose codec takes only some rates: clips in them are made at this one."""


def signal(seconds: float, rate: int = 44_100, channels: int = 2, kind: Kind = "voice",
           level: float = 0.3, seed: int = 1) -> Any:
    """float32 samples, shape (channels, n): a voiced buzz (harmonics of a gliding pitch,
    syllable-like loudness), white noise, or digital silence."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    mono: Any
    if kind == "silence":
        mono = np.zeros(n)
    elif kind == "noise":
        mono = np.random.default_rng(seed).uniform(-1, 1, n)
    else:
        pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(pitch) / rate
        mono = sum(np.sin(k * phase) / k for k in range(1, 12))
        mono *= 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)  # about four syllables a second
    mono = level * mono / max(float(np.max(np.abs(mono))), 1e-9) if kind != "silence" else mono
    return np.tile(mono.astype(np.float32), (channels, 1))


def encode(samples: Any, rate: int, fmt: str) -> bytes:
    """``samples`` (channels, n) float32 in container ``fmt`` (a key of CONTAINERS)."""
    muxer, codec, sample_format = CONTAINERS[fmt]
    channels = samples.shape[0]
    layout = "mono" if channels == 1 else "stereo"
    out = io.BytesIO()
    with av.open(out, "w", format=muxer) as container:
        stream: Any = container.add_stream(codec, rate=rate)
        stream.layout = layout
        block = 4096
        for start in range(0, samples.shape[1], block):
            chunk = samples[:, start:start + block]
            if sample_format == "s16":
                data = (np.clip(chunk, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
            elif sample_format == "flt":  # packed: channels interleaved
                data = np.ascontiguousarray(chunk.T).reshape(1, -1)
            else:
                data = np.ascontiguousarray(chunk)
            frame = av.AudioFrame.from_ndarray(data, format=sample_format, layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def clip(fmt: str = "wav", seconds: float = 5.0, kind: Kind = "voice", rate: int = 44_100,
         channels: int = 2, level: float = 0.3) -> bytes:
    rate = RATES.get(fmt, rate)
    return encode(signal(seconds, rate, channels, kind, level), rate, fmt)


def png(width: int = 8, height: int = 8) -> bytes:
    """A real PNG picture (grey), by the book: signature, IHDR, IDAT, IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\0" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def video_only(muxer: str = "mp4", codec: str = "mpeg4", seconds: float = 1.0) -> bytes:
    """A video with no audio stream at all."""
    out = io.BytesIO()
    with av.open(out, "w", format=muxer) as container:
        stream: Any = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(int(seconds * 25)):
            picture = np.full((48, 64, 3), index * 8 % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def random_bytes(size: int = 200_000, seed: int = 7) -> bytes:
    return np.random.default_rng(seed).bytes(size)
