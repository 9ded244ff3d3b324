"""Parsing HTTP request bodies into speech requests, and error codes into statuses."""

from __future__ import annotations

from typing import Any

import pytest

from chorus.server.errors import (
    BadRequest,
    Busy,
    ChorusError,
    EmptyText,
    InvalidSsml,
    ShuttingDown,
    TextTooLong,
    UnknownSpeaker,
    UnknownVoice,
    VoiceUnavailable,
)
from chorus.server.http_api import error_status
from chorus.server.http_requests import (
    OPENAI_VOICES,
    MalformedBody,
    Unsupported,
    load_json,
    parse_native,
    parse_openai,
    query_body,
)
from chorus.server.text import CodeMode, EmojiMode, FrontEndOptions, TextFormat, TextRequest


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
    given = parse_openai({"model": "tts-1", "input": "Hi.", "voice": "alloy",
                          "response_format": "pcm", "speed": 0.5})
    speech = given.speech
    assert given.voice == "alloy" and speech.format.name == "pcm"
    assert speech.sample_rate == 24000 and not given.sse
    assert speech.params.length_scale == 2.0
    given = parse_openai({"input": "Hi.", "voice": {"id": "echo"}})
    assert given.voice == "echo" and given.speech.format.name == "mp3"


def test_openai_sample_rate_and_sse() -> None:
    assert parse_openai({"input": "Hi.", "response_format": "pcm",
                         "sample_rate": 16000}).speech.sample_rate == 16000
    assert parse_openai({"input": "Hi.", "response_format": "mp3",
                         "sample_rate": 44100}).speech.sample_rate == 44100
    assert parse_openai({"input": "Hi.", "response_format": "wav"}).speech.sample_rate is None
    with pytest.raises(BadRequest, match="sample_rate: must be one of") as caught:
        parse_openai({"input": "Hi.", "response_format": "opus", "sample_rate": 22050})
    assert caught.value.param == "sample_rate"
    for fmt in ("mp3", "opus", "aac", "wav", "pcm"):
        assert parse_openai({"input": "Hi.", "response_format": fmt,
                             "stream_format": "sse"}).sse
    with pytest.raises(Unsupported) as refused:
        parse_openai({"input": "Hi.", "response_format": "flac", "stream_format": "sse"})
    assert refused.value.param == "stream_format"
    assert refused.value.message.endswith("use one of aac, mp3, opus, pcm, wav")
    with pytest.raises(BadRequest, match="stream_format: must be one of audio, sse"):
        parse_openai({"input": "Hi.", "stream_format": "chunks"})


@pytest.mark.parametrize("voice", ["marin", "cedar", "alloy", "Verse"])
def test_current_openai_voice_names_are_known(voice: str) -> None:
    assert voice.lower() in OPENAI_VOICES
    assert parse_openai({"input": "Hi.", "voice": voice}).voice == voice


@pytest.mark.parametrize(("body", "param"), [
    ({"voice": "alloy"}, "input"), ({"input": 3}, "input"),
    ({"input": "x", "speed": 9}, "speed"), ({"input": "x", "response_format": "ogg"},
                                             "response_format"),
    ({"input": "x", "voice": 7}, "voice"), ({"input": "x", "model": []}, "model"),
])
def test_openai_errors_carry_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_openai(body)
    assert caught.value.param == param and caught.value.message.startswith(f"{param}:")


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


def test_text_fields_switch_front_end_steps() -> None:
    speech = parse_native({"text": "Hi.", "text_format": "SSML", "markdown": False,
                           "cleanup": True, "emoji": "describe", "code_blocks": "skip",
                           "paragraph_silence": 1.5})
    reading = speech.reading
    assert reading.format is TextFormat.SSML
    assert (reading.markdown, reading.cleanup, reading.normalize) == (False, True, None)
    assert (reading.emoji, reading.code) == (EmojiMode.DESCRIBE, CodeMode.SKIP)
    assert speech.params.paragraph_silence == 1.5
    options = reading.options(FrontEndOptions())
    assert not options.markdown and options.cleanup and options.normalize
    assert parse_openai({"input": "Hi.", "text_format": "text"}).speech.reading.format \
        is TextFormat.TEXT
    assert parse_native({"text": "Hi."}).reading == TextRequest()


@pytest.mark.parametrize(("body", "param"), [
    ({"text_format": "xml"}, "text_format"),
    ({"markdown": "no"}, "markdown"),
    ({"emoji": "sing"}, "emoji"),
    ({"code_blocks": 1}, "code_blocks"),
    ({"paragraph_silence": 11}, "paragraph_silence"),
])
def test_bad_text_fields_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_native({"text": "Hi.", **body})
    assert caught.value.param == param
    assert caught.value.message.startswith(f"{param}:")


def test_an_ssml_body_takes_its_fields_from_the_query() -> None:
    data = query_body({"voice": "en_US-joe-medium", "speed": "1.5", "use_cache": "false",
                       "format": "mp3"}, "<speak>Hi.</speak>", "text")
    speech = parse_native(data)
    assert speech.text == "<speak>Hi.</speak>"
    assert speech.reading.format is TextFormat.SSML
    assert speech.voice.name == "en_US-joe-medium"
    assert speech.params.length_scale == pytest.approx(1 / 1.5)
    assert (speech.use_cache, speech.format.name) == (False, "mp3")
    assert query_body({}, "<speak/>", "input")["input"] == "<speak/>"


def test_invalid_ssml_is_422() -> None:
    assert error_status(InvalidSsml("bad")) == 422
