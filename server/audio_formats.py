"""Turning the engine's mono int16 PCM into the audio formats HTTP clients ask for.

Everything is done in-process with PyAV (libav*): no ffmpeg subprocess to spawn per
request, no temporary files. An :class:`AudioEncoder` is fed PCM unit by unit and hands
back the bytes that are ready, so the same code serves a whole response (everything at
once) and a streamed one (bytes leave after every sentence).

``wav`` and ``pcm`` need no codec: a RIFF header (with the 0xFFFFFFFF "unknown size"
convention when streaming, which ffmpeg, browsers and most players accept) plus raw
s16le samples. The others go through a PyAV container; those whose container wants
to seek back and patch a header at the end (``flac``'s STREAMINFO, mp3's Xing frame)
get a seekable buffer when the whole response is built at once.

PyAV is imported at the first resampler or encoder, not with this module: importing it
takes 45-60 ms, and every server imports this module before its doors open (see
``bench/startup_bench.py``), while most Wyoming servers never resample at all.
"""

from __future__ import annotations

import contextlib
import io
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .engines.base import PCM

__all__ = [
    "FORMATS",
    "STREAMABLE",
    "AudioEncoder",
    "AudioFormat",
    "Resampler",
    "check_sample_rate",
    "content_type",
    "encode",
    "output_rate",
    "wav_header",
]


@dataclass(frozen=True)
class AudioFormat:
    """One output format: how to mux it and which sample rates its codec can take."""

    name: str
    media_type: str
    container: str | None = None
    """libavformat muxer; ``None`` for the formats written by hand (wav, pcm)."""
    codec: str | None = None
    rates: frozenset[int] | None = None
    """Sample rates the codec accepts; ``None`` means any rate."""
    fixed_rate: int | None = None
    """Rate used when the client asks for none and the voice's own rate is not allowed."""


_MP3_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
_OPUS_RATES = frozenset({8000, 12000, 16000, 24000, 48000})
_AAC_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})

FORMATS: dict[str, AudioFormat] = {
    "wav": AudioFormat("wav", "audio/wav"),
    # Not audio/L16, which RFC 2586 defines as big-endian: the body is s16le, labelled
    # the way OpenAI-compatible clients expect (with its rate, see content_type).
    "pcm": AudioFormat("pcm", "audio/pcm"),
    "mp3": AudioFormat("mp3", "audio/mpeg", "mp3", "libmp3lame", _MP3_RATES, 22050),
    "opus": AudioFormat("opus", "audio/ogg; codecs=opus", "ogg", "libopus", _OPUS_RATES,
                        48000),
    "flac": AudioFormat("flac", "audio/flac", "flac", "flac"),
    "aac": AudioFormat("aac", "audio/aac", "adts", "aac", _AAC_RATES, 22050),
}

STREAMABLE = frozenset({"wav", "pcm", "mp3", "opus", "aac"})
"""Formats whose bytes are valid as they leave (flac wants its header patched at the end)."""

MIN_RATE = 8000
MAX_RATE = 48000


def check_sample_rate(fmt: AudioFormat, rate: int) -> str | None:
    """Why ``rate`` cannot be produced in ``fmt``, or ``None`` when it can."""
    if not MIN_RATE <= rate <= MAX_RATE:
        return f"must be between {MIN_RATE} and {MAX_RATE}"
    if fmt.rates is not None and rate not in fmt.rates:
        allowed = ", ".join(str(r) for r in sorted(fmt.rates))
        return f"must be one of {allowed} for format {fmt.name}"
    return None


def content_type(fmt: AudioFormat, rate: int) -> str:
    """The ``Content-Type`` of audio in ``fmt`` at ``rate``: raw pcm says its rate (the
    bytes alone cannot), every other format carries it inside."""
    if fmt.name == "pcm":
        return f"{fmt.media_type};rate={rate}"
    return fmt.media_type


def output_rate(fmt: AudioFormat, voice_rate: int, requested: int | None) -> int:
    """The rate the response will have: asked for, else the voice's own if allowed."""
    if requested is not None:
        return requested
    if fmt.rates is None or voice_rate in fmt.rates:
        return voice_rate
    return fmt.fixed_rate or MAX_RATE


def wav_header(rate: int, data_bytes: int | None) -> bytes:
    """A 44-byte RIFF/WAVE header for mono s16le; ``None`` size means "streaming"."""
    unknown = 0xFFFFFFFF
    data_size = unknown if data_bytes is None else data_bytes
    riff_size = unknown if data_bytes is None else 36 + data_bytes
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_size))


class _Sink:
    """A write-only file for PyAV: what the muxer writes is collected until taken.

    Having no ``seek`` makes libavformat treat the output as a pipe, which is what a
    streamed response is: nothing already sent can be patched.
    """

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def _av() -> Any:
    import av

    return av


def _frame(pcm: PCM, rate: int) -> Any:
    frame = _av().AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16)
                                       .reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    return frame


class Resampler:
    """Mono int16 PCM from one sample rate to another, piece by piece: the filter's state
    carries over between pieces (resampling each alone would click at every seam), and
    :meth:`flush` returns the samples it still holds at the end."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._av = _av().AudioResampler(format="s16", layout="mono", rate=out_rate)

    def feed(self, pcm: PCM) -> PCM:
        if not len(pcm):  # libswresample refuses an empty frame (ENOMEM)
            return np.zeros(0, dtype=np.int16)
        return self._join(self._av.resample(_frame(pcm, self.in_rate)))

    def flush(self) -> PCM:
        return self._join(self._av.resample(None))

    @staticmethod
    def _join(frames: list[Any]) -> PCM:
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([f.to_ndarray().reshape(-1).astype(np.int16) for f in frames])


class AudioEncoder:
    """Mono int16 PCM in, encoded bytes out; call :meth:`feed` per unit, then :meth:`finish`.

    With ``streaming`` the bytes returned by each call can be sent at once; without it
    they may all arrive from :meth:`finish` (seekable muxers patch their headers there).
    """

    def __init__(self, fmt: AudioFormat, in_rate: int, out_rate: int | None = None,
                 streaming: bool = False) -> None:
        self.format = fmt
        self.in_rate = in_rate
        self.out_rate = output_rate(fmt, in_rate, out_rate)
        self.streaming = streaming
        self.samples_in = 0
        self._raw: list[bytes] = []  # wav/pcm without streaming: sized at the end
        self._header_sent = False
        self._resampler: Resampler | None = None
        if fmt.container is None and self.out_rate != in_rate:
            self._resampler = Resampler(in_rate, self.out_rate)
        self._container: Any = None
        self._stream: Any = None
        self._buffer: io.BytesIO | _Sink | None = None
        if fmt.container is not None:
            self._open_container(fmt)

    def _open_container(self, fmt: AudioFormat) -> None:
        options: dict[str, str] = {}
        if fmt.container == "ogg":
            # Ogg pages hold up to a second by default: a streamed sentence would sit in
            # the muxer until the next one. Short pages cost a few bytes of overhead.
            options["page_duration"] = "60000"
        self._buffer = _Sink() if self.streaming else io.BytesIO()
        self._container = _av().open(self._buffer, "w", format=fmt.container, options=options)
        # The encoder resamples and converts sample format itself (PyAV inserts an
        # AudioResampler matching the codec context), so frames go in as they come.
        self._stream = self._container.add_stream(fmt.codec, rate=self.out_rate)
        self._stream.layout = "mono"

    def _frame(self, pcm: PCM) -> Any:
        return _frame(pcm, self.in_rate)

    def _take(self) -> bytes:
        if isinstance(self._buffer, _Sink):
            return self._buffer.take()
        return b""

    def feed(self, pcm: PCM) -> bytes:
        """Encode one chunk of samples; returns the bytes that may be sent now."""
        self.samples_in += len(pcm)
        if self._container is None:
            data = (self._resampler.feed(pcm) if self._resampler is not None
                    else pcm).astype("<i2").tobytes()
            if not self.streaming:
                self._raw.append(data)
                return b""
            return self._wav_start() + data
        if len(pcm):
            for packet in self._stream.encode(self._frame(pcm)):
                self._container.mux(packet)
        return self._take()

    def _wav_start(self) -> bytes:
        if self.format.name != "wav" or self._header_sent:
            return b""
        self._header_sent = True
        return wav_header(self.out_rate, None)

    def finish(self) -> bytes:
        """Flush the encoder and close the container; returns the remaining bytes."""
        if self._container is None:
            tail = self._resampler.flush().astype("<i2").tobytes() \
                if self._resampler is not None else b""
            if not self.streaming:
                data = b"".join(self._raw) + tail
                if self.format.name == "wav":
                    return wav_header(self.out_rate, len(data)) + data
                return data
            return self._wav_start() + tail
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None
        if isinstance(self._buffer, io.BytesIO):
            return self._buffer.getvalue()
        return self._take()

    def close(self) -> None:
        """Release the codec when a response ends early (client gone, error)."""
        if self._container is not None:
            with contextlib.suppress(_av().FFmpegError, ValueError):
                self._container.close()
            self._container = None

    @property
    def duration(self) -> float:
        """Seconds of audio fed so far (before encoder padding)."""
        return self.samples_in / self.in_rate


def encode(fmt: AudioFormat, pcm: PCM, in_rate: int, out_rate: int | None = None) -> bytes:
    """A whole response body at once (runs in a worker thread for long texts)."""
    encoder = AudioEncoder(fmt, in_rate, out_rate)
    encoder.feed(pcm)
    return encoder.finish()
