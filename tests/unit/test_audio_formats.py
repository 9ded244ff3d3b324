"""Encoding PCM into every HTTP format, whole and streamed, checked by decoding it back."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest

from chorus.server.audio_formats import (
    FORMATS,
    STREAMABLE,
    AudioEncoder,
    Resampler,
    check_sample_rate,
    encode,
    output_rate,
    wav_header,
)
from chorus.server.engines.base import PCM

RATE = 22050


def tone(seconds: float, rate: int = RATE) -> PCM:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)


def decoded_seconds(data: bytes) -> tuple[int, float]:
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, samples / stream.rate


@pytest.mark.parametrize("name", ["wav", "mp3", "opus", "flac", "aac"])
def test_whole_encoding_decodes_to_the_same_length(name: str) -> None:
    data = encode(FORMATS[name], tone(1.5), RATE)
    rate, seconds = decoded_seconds(data)
    assert rate == output_rate(FORMATS[name], RATE, None)
    assert seconds == pytest.approx(1.5, abs=0.15)


@pytest.mark.parametrize("name", sorted(STREAMABLE - {"pcm"}))
def test_streamed_bytes_arrive_per_chunk_and_decode(name: str) -> None:
    encoder = AudioEncoder(FORMATS[name], RATE, streaming=True)
    parts = [encoder.feed(tone(0.5)) for _ in range(4)]
    parts.append(encoder.finish())
    assert all(parts[1:4]), [len(p) for p in parts]  # every sentence leaves at once
    assert decoded_seconds(b"".join(parts))[1] == pytest.approx(2.0, abs=0.15)


def test_pcm_is_raw_little_endian_and_resampled_on_request() -> None:
    pcm = tone(1.0)
    assert encode(FORMATS["pcm"], pcm, RATE) == pcm.astype("<i2").tobytes()
    assert len(encode(FORMATS["pcm"], pcm, RATE, 16000)) == pytest.approx(32000, abs=64)


def test_wav_headers() -> None:
    whole = encode(FORMATS["wav"], tone(0.1), RATE)
    assert whole[:44] == wav_header(RATE, len(whole) - 44)
    assert struct.unpack("<I", whole[24:28])[0] == RATE
    streaming = AudioEncoder(FORMATS["wav"], RATE, streaming=True).feed(tone(0.1))
    assert struct.unpack("<I", streaming[40:44])[0] == 0xFFFFFFFF


def test_sample_rate_rules() -> None:
    assert check_sample_rate(FORMATS["wav"], 16000) is None
    assert check_sample_rate(FORMATS["wav"], 100) is not None
    assert check_sample_rate(FORMATS["opus"], 44100) is not None
    assert check_sample_rate(FORMATS["opus"], 24000) is None
    assert output_rate(FORMATS["opus"], RATE, None) == 48000
    assert output_rate(FORMATS["mp3"], RATE, None) == RATE
    assert output_rate(FORMATS["flac"], 16000, 8000) == 8000


def test_closing_an_unfinished_encoder_is_safe() -> None:
    encoder = AudioEncoder(FORMATS["mp3"], RATE, streaming=True)
    encoder.feed(tone(0.2))
    encoder.close()
    encoder.close()


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("streaming", [False, True])
def test_no_samples_with_a_resample_is_an_empty_answer(name: str, streaming: bool) -> None:
    """Text of punctuation only renders nothing; a rate the voice lacks must not turn that
    into an error (libswresample refuses an empty frame)."""
    fmt = FORMATS[name]
    encoder = AudioEncoder(fmt, RATE, 16000, streaming=streaming)
    data = encoder.feed(np.zeros(0, np.int16)) + encoder.finish()
    if name == "wav":
        assert data == (wav_header(16000, None) if streaming else wav_header(16000, 0))
    elif name == "pcm":
        assert data == b""


def test_resampling_in_pieces_is_resampling_the_whole() -> None:
    """The filter's state carries over: pieces give what the whole gives, no seams."""
    rate = 16000
    tone = (np.sin(2 * np.pi * 440 * np.arange(rate) / rate) * 10000).astype(np.int16)
    whole = Resampler(rate, 22050)
    expected = np.concatenate([whole.feed(tone), whole.flush()])
    pieces = Resampler(rate, 22050)
    parts = [pieces.feed(tone[at:at + 1000]) for at in range(0, len(tone), 1000)]
    got = np.concatenate([*parts, pieces.feed(tone[:0]), pieces.flush()])
    assert abs(len(got) - 22050) <= 32
    assert np.array_equal(got, expected)
