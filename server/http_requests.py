"""Request bodies of the HTTP API, checked by hand into typed values.

pydantic is not a dependency, and the bodies are small: a few typed getters give
messages that name the field (``speed: must be a number between 0.25 and 4``), which
is what a client fixing its request needs. Two shapes are accepted: Chorus's own
(``/synthesize``) and OpenAI's (``/v1/audio/speech``); both become a
:class:`SpeechRequest`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .audio_formats import FORMATS, STREAMABLE, AudioFormat, check_sample_rate
from .engines.base import SynthesisParams
from .errors import BadRequest
from .synthesis import VoiceRequest
from .text import TextFormat, TextRequest
from .text_fields import TEXT_FIELDS, choice, text_request

__all__ = [
    "OPENAI_DEFAULT_FORMAT",
    "OPENAI_FORMATS",
    "OPENAI_VOICES",
    "SSML_CONTENT_TYPE",
    "STREAM_FORMATS",
    "MalformedBody",
    "OpenAISpeech",
    "SpeechRequest",
    "Unsupported",
    "load_json",
    "parse_native",
    "parse_openai",
    "query_body",
]

OPENAI_VOICES = ("alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin",
                 "nova", "onyx", "sage", "shimmer", "verse")
"""OpenAI's voice names: unmapped ones speak with the default voice."""

OPENAI_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
OPENAI_DEFAULT_FORMAT = "mp3"
OPENAI_PCM_RATE = 24000
"""OpenAI's ``pcm`` is documented as 24 kHz; clients play it at that rate untold."""
STREAM_FORMATS = ("audio", "sse")
"""OpenAI's ``stream_format``: the audio bytes themselves, or Server-Sent Events."""

MIN_SPEED, MAX_SPEED = 0.25, 4.0
MAX_NOISE = 2.0
MAX_SENTENCE_SILENCE = 10.0

_NATIVE_FIELDS = frozenset({"text", "voice", "speaker", "language", "speed", "noise_scale",
                            "noise_w_scale", "sentence_silence", "paragraph_silence",
                            "format", "sample_rate", "use_cache", *TEXT_FIELDS})
SSML_CONTENT_TYPE = "application/ssml+xml"
"""A body of this type is the SSML document itself; the other fields come as query
parameters."""


class MalformedBody(BadRequest):
    """The body is not JSON at all (HTTP 400, unlike field errors which are 422)."""


class Unsupported(BadRequest):
    """A valid request for something this server does not do (HTTP 400)."""


@dataclass(frozen=True)
class SpeechRequest:
    """What to say, with which voice and knobs, in which audio format."""

    text: str
    voice: VoiceRequest
    params: SynthesisParams
    format: AudioFormat
    sample_rate: int | None = None
    use_cache: bool = True
    """Whole responses may be answered from, and stored in, the audio cache."""
    reading: TextRequest = field(default_factory=TextRequest)
    """How the text is read: its format and the front-end steps the request switches."""


@dataclass(frozen=True)
class OpenAISpeech:
    """A ``/v1/audio/speech`` body: the request, the voice as named, how to stream."""

    speech: SpeechRequest
    voice: str | None
    """As the client named it; OpenAI names are mapped by the HTTP door's settings."""
    sse: bool = False
    """``stream_format: sse``: the audio as base64 in ``speech.audio.delta`` events."""


def load_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise MalformedBody(f"body is not valid JSON: {err}") from err
    except RecursionError as err:  # '[[[[…' a hundred thousand deep
        raise MalformedBody("body is nested too deeply") from err
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _string(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{key}: must be a string", param=key)
    return value


def _required_string(data: Mapping[str, Any], key: str) -> str:
    value = _string(data, key)
    if value is None:
        raise BadRequest(f"{key}: field required", param=key)
    return value


def _number(data: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            low <= value <= high):
        raise BadRequest(f"{key}: must be a number between {low:g} and {high:g}",
                         param=key)
    return float(value)


def _integer(value: Any) -> int | None:
    """``value`` as an int if it is a JSON integer: ``22050.0`` is one (JSON Schema says
    so, and some clients' serializers write whole floats that way), ``true`` is not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _speaker(data: Mapping[str, Any]) -> str | None:
    value = data.get("speaker")
    if value is None or isinstance(value, str):
        return value
    number = _integer(value)
    if number is None:
        raise BadRequest("speaker: must be a speaker name or a numeric id", param="speaker")
    return str(number)


def _sample_rate(data: Mapping[str, Any], fmt: AudioFormat) -> int | None:
    value = data.get("sample_rate")
    if value is None:
        return None
    value = _integer(value)
    if value is None:
        raise BadRequest("sample_rate: must be an integer (Hz)", param="sample_rate")
    problem = check_sample_rate(fmt, value)
    if problem:
        raise BadRequest(f"sample_rate: {problem}", param="sample_rate")
    return value


def query_body(query: Mapping[str, str], document: str, text_key: str) -> dict[str, Any]:
    """The body of an SSML request (:data:`SSML_CONTENT_TYPE`): the document as the text,
    every other field from the query string, read as JSON where it is JSON (numbers,
    ``true``) and as a string otherwise (voice names)."""
    data: dict[str, Any] = {}
    for key, value in query.items():
        try:
            data[key] = json.loads(value)
        except ValueError:
            data[key] = value
    data[text_key] = document
    data["text_format"] = TextFormat.SSML.value
    return data


def _length_scale(speed: float | None) -> float | None:
    """Speed 2 means half as long: Piper's length_scale is the inverse of speed."""
    return None if speed is None else 1.0 / speed


def parse_native(data: Mapping[str, Any]) -> SpeechRequest:
    """A ``/synthesize`` body. Unknown fields are refused: a typo must not pass silently."""
    unknown = sorted(set(data) - _NATIVE_FIELDS)
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown field (known: "
                         f"{', '.join(sorted(_NATIVE_FIELDS))})", param=unknown[0])
    text = _required_string(data, "text")
    fmt = FORMATS[choice(data, "format", list(FORMATS), "wav")]
    voice = VoiceRequest(name=_string(data, "voice") or None,
                         language=_string(data, "language") or None,
                         speaker=_speaker(data))
    params = SynthesisParams(
        length_scale=_length_scale(_number(data, "speed", MIN_SPEED, MAX_SPEED)),
        noise_scale=_number(data, "noise_scale", 0.0, MAX_NOISE),
        noise_w_scale=_number(data, "noise_w_scale", 0.0, MAX_NOISE),
        sentence_silence=_number(data, "sentence_silence", 0.0, MAX_SENTENCE_SILENCE),
        paragraph_silence=_number(data, "paragraph_silence", 0.0, MAX_SENTENCE_SILENCE))
    use_cache = data.get("use_cache", True)
    if not isinstance(use_cache, bool):
        raise BadRequest("use_cache: must be true or false", param="use_cache")
    return SpeechRequest(text, voice, params, fmt, _sample_rate(data, fmt), use_cache,
                         text_request(data))


def parse_openai(data: Mapping[str, Any]) -> OpenAISpeech:
    """A ``/v1/audio/speech`` body; the voice is mapped by the caller.

    Fields OpenAI has and Chorus ignores (``instructions``) are accepted, so existing
    clients work unchanged. ``sample_rate`` and the text fields (``text_format``,
    ``markdown``, ...) are Chorus's own additions, as on ``/synthesize``; without
    ``sample_rate``, ``pcm`` is 24 kHz as OpenAI documents.
    """
    _string(data, "model")
    text = _required_string(data, "input")
    voice = data.get("voice")
    if isinstance(voice, dict):  # newer API: {"id": "voice_..."}
        voice = voice.get("id")
    if voice is not None and not isinstance(voice, str):
        raise BadRequest("voice: must be a string", param="voice")
    fmt = FORMATS[choice(data, "response_format", OPENAI_FORMATS, OPENAI_DEFAULT_FORMAT)]
    sse = choice(data, "stream_format", STREAM_FORMATS, "audio") == "sse"
    if sse and fmt.name not in STREAMABLE:
        raise Unsupported(
            f"stream_format: 'sse' cannot carry response_format {fmt.name}, which is only "
            f"sent whole; use one of {', '.join(sorted(STREAMABLE & set(OPENAI_FORMATS)))}",
            param="stream_format")
    speed = _number(data, "speed", MIN_SPEED, MAX_SPEED)
    params = SynthesisParams(length_scale=_length_scale(speed))
    rate = _sample_rate(data, fmt)
    if rate is None and fmt.name == "pcm":
        rate = OPENAI_PCM_RATE
    return OpenAISpeech(SpeechRequest(text, VoiceRequest(), params, fmt, rate,
                                      reading=text_request(data)),
                        voice or None, sse)
