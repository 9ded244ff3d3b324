"""Parsing HTTP request bodies into speech requests, and error codes into statuses."""

from __future__ import annotations

from typing import Any

import pytest

from chorus.server.errors import (
    BadRequest,
    Busy,
    ChorusError,
    EmptyText,
    ShuttingDown,
    TextTooLong,
    UnknownSpeaker,
    UnknownVoice,
    VoiceUnavailable,
)
from chorus.server.http_api import error_status
from chorus.server.http_requests import (
    MalformedBody,
    Unsupported,
    load_json,
    parse_native,
    parse_openai,
)


def test_native_body_with_every_field() -> None:
    speech = parse_native({"text": "Hi.", "voice": "v", "speaker": 2, "language": "de",
                           "speed": 2, "noise_scale": 0, "noise_w_scale": 0.5,
                           "format": "MP3", "sample_rate": 16000})
    assert speech.text == "Hi."
    assert (speech.voice.name, speech.voice.speaker, speech.voice.language) == ("v", "2", "de")
    assert speech.params.length_scale == 0.5
    assert (speech.params.noise_scale, speech.params.noise_w_scale) == (0.0, 0.5)
    assert speech.format.name == "mp3" and speech.sample_rate == 16000


def test_whole_floats_are_integers() -> None:
    """JSON (and the OpenAPI document's ``integer``) does not tell 16000.0 from 16000."""
    speech = parse_native({"text": "Hi.", "speaker": 1.0, "sample_rate": 16000.0})
    assert speech.voice.speaker == "1" and speech.sample_rate == 16000


def test_native_defaults() -> None:
    speech = parse_native({"text": "Hi."})
    assert speech.format.name == "wav" and speech.sample_rate is None
    assert speech.params.length_scale is None and speech.voice.name is None


@pytest.mark.parametrize(("body", "field"), [
    ({}, "text"), ({"text": None}, "text"), ({"text": 1}, "text"),
    ({"text": "x", "speed": 0.1}, "speed"), ({"text": "x", "speed": False}, "speed"),
    ({"text": "x", "format": 3}, "format"), ({"text": "x", "speaker": 1.5}, "speaker"),
    ({"text": "x", "sample_rate": 16000.5}, "sample_rate"), ({"text": "x", "foo": 1}, "foo"),
    ({"text": "x", "sample_rate": True}, "sample_rate"),
    ({"text": "x", "speaker": True}, "speaker"),
])
def test_native_errors_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_native(body)
    assert caught.value.message.startswith(f"{field}:")


def test_openai_body() -> None:
    speech, voice = parse_openai({"model": "tts-1", "input": "Hi.", "voice": "alloy",
                                  "response_format": "pcm", "speed": 0.5})
    assert voice == "alloy" and speech.format.name == "pcm" and speech.sample_rate == 24000
    assert speech.params.length_scale == 2.0
    speech, voice = parse_openai({"input": "Hi.", "voice": {"id": "echo"}})
    assert voice == "echo" and speech.format.name == "mp3"
    with pytest.raises(Unsupported):
        parse_openai({"input": "Hi.", "stream_format": "sse"})


def test_bodies_that_are_not_json_objects() -> None:
    with pytest.raises(MalformedBody):
        load_json(b"{")
    with pytest.raises(MalformedBody):
        load_json(b"\xff")
    with pytest.raises(BadRequest, match="object"):
        load_json(b"[]")


@pytest.mark.parametrize(("error", "status"), [
    (MalformedBody("x"), 400), (Unsupported("x"), 400), (BadRequest("x"), 422),
    (EmptyText("x"), 422), (TextTooLong("x"), 413), (UnknownVoice("x"), 404),
    (UnknownSpeaker("x"), 404), (Busy("x"), 503), (ShuttingDown("x"), 503),
    (VoiceUnavailable("x"), 503), (ChorusError("x"), 400),
])
def test_error_statuses(error: ChorusError, status: int) -> None:
    assert error_status(error) == status
