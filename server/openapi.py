"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json`` and ``/docs``.

One place describes every endpoint :class:`~chorus.server.http_api.HttpApi` registers.
Enums and bounds come from the constants the request parser and the encoders use
(:mod:`chorus.server.http_requests`, :mod:`chorus.server.audio_formats`), and the text
limit from the running server's ``--max-text-chars``, so the document cannot drift
from what is accepted. ``tests/unit/test_openapi.py`` checks that every registered
route is described and nothing else is; ``tests/integration/test_openapi_fuzz.py``
fuzzes a real server from this document with schemathesis.

``/docs`` is ``web/docs.html``, a self-contained page (inline CSS and script, nothing
fetched from elsewhere: the servers this runs on often reach no CDN) that reads
``openapi.json`` and lists the endpoints, their parameters, bodies and responses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from aiohttp import web

from chorus.common.clips import SILENCE_DBFS
from chorus.common.clones import MAX_DESCRIPTION
from chorus.common.xtts import (
    CLIP_FORMATS,
    CLIP_MAX_BYTES,
    CLIP_MAX_SECONDS,
    CLIP_MIN_SECONDS,
    CLIP_SAMPLE_RATE,
    LANGUAGES,
    MAX_CLIPS,
)

from .audio_formats import FORMATS, MAX_RATE, MIN_RATE, STREAMABLE
from .http_requests import (
    _NATIVE_FIELDS,
    MAX_NOISE,
    MAX_SENTENCE_SILENCE,
    MAX_SPEED,
    MIN_SPEED,
    OPENAI_DEFAULT_FORMAT,
    OPENAI_FORMATS,
    OPENAI_PCM_RATE,
    OPENAI_VOICES,
    SSML_CONTENT_TYPE,
    STREAM_FORMATS,
)
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .sse import CONTENT_TYPE as SSE_CONTENT_TYPE
from .text import CodeMode, EmojiMode, TextFormat
from .voice_cloning import MAX_FIELD_BYTES
from .webpage import WEB_DIR as _WEB_DIR

__all__ = ["DOC_PATHS", "OPENAI_MODELS", "PUBLIC_ROUTES", "add_doc_routes", "build_openapi"]

DOC_PATHS = ("/openapi.json", "/docs")
"""Served without the API key, like the web page: a client needs them to find out how."""

OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
"""OpenAI model names listed by ``/v1/models`` (any model name is accepted and ignored)."""

PUBLIC_ROUTES: dict[str, tuple[str, ...]] = {
    "voices": ("/voices", "/voices/{name}", "/v1/audio/voices"),
    "models": ("/v1/models", "/v1/audio/models"),
    "metrics": ("/metrics",),
}
"""The routes (GET) of each group ``--public-routes`` can open (``PUBLIC_ROUTE_GROUPS``)."""

_JSON = "application/json"
_REF = "#/components/schemas/"
_RESPONSES = "#/components/responses/"

_ERROR_CODES = {
    400: "the body is not JSON (or, for a clone, not a well-formed multipart upload), or "
         "asks for something this server does not do (OpenAI `stream_format: sse` with "
         "`flac`) (`bad-request`)",
    401: "an API key is configured and the request has no valid "
         "`Authorization: Bearer <key>` (`unauthorized`)",
    403: "voice cloning is turned off on this server (`voice-cloning-disabled`, "
         "`--no-voice-cloning`)",
    404: "unknown voice (the message lists close names) or language, or an unknown "
         "speaker with --strict-speakers (`unknown-voice`, `unknown-speaker`)",
    405: "`/voices/clone` takes only POST: it is no voice's path (`method-not-allowed`)",
    409: "a voice of that name is installed already, whatever its engine "
         "(`voice-exists`), or the voice to delete is not a cloned one "
         "(`voice-not-deletable`: Piper and Kokoro voices, and XTTS voices the voice "
         "manager installed, belong to their manifest)",
    413: "the text is longer than the server's limit, or the body larger than the "
         "request size limit (`text-too-long`); a reference clip, or the whole upload, "
         "over its limit (`clip-too-large`)",
    415: "a reference clip is not audio in an accepted container (wav, flac, mp3, ogg) "
         "or has no audio stream, or the upload is not multipart/form-data "
         "(`unsupported-clip`)",
    422: "a field has the wrong type or value, an unknown field, or empty text "
         "(`bad-request`, `empty-text`); the message names the field; a voice blend "
         "that is malformed or mixes voices that cannot mix (`invalid-voice-blend`); a "
         "reference clip too short, too long, silent, damaged or truncated "
         "(`invalid-clip`)",
    429: "this client (address, or API key) already has its allowance of requests in "
         "progress (`too-many-requests`, `--max-requests-per-client`)",
    501: "this server cannot clone voices: the XTTS engine is not installed (the message "
         "names the `pip install` that adds it), or it has no `--voices-dir` to write "
         "into (`voice-cloning-unavailable`)",
    503: "the scheduler's queue is full (`busy`), the server is shutting down "
         "(`shutting-down`), the voice could not be loaded (`voice-unavailable`), a "
         "voice offered for download on first use could not be downloaded "
         "(`voice-download-failed`), or the XTTS checkpoint a clone needs is not "
         "installed yet (`xtts-checkpoint-missing`)",
    507: "the voices directory could not be written (a full disk, a read-only volume) "
         "(`voices-dir-unwritable`)",
    500: "a bug in the server (`internal`); never caused by the request",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``null`` is accepted wherever a field is optional: it means "not given"."""
    kind = schema["type"]
    kinds = kind if isinstance(kind, list) else [kind]
    nullable = {**schema, "type": [*kinds, "null"]}
    if "enum" in schema:
        nullable["enum"] = [*schema["enum"], None]
    return nullable


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _ERROR_CODES[status],
        "content": {_JSON: {"schema": _ref("Error")}},
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {
            "description": "`Bearer`", "required": True, "schema": {"type": "string"}}}
    if status in (429, 503):
        response["headers"] = {"Retry-After": {
            "description": "Seconds to wait before retrying (absent for "
                           "`voice-unavailable`, which retrying does not cure).",
            "required": status == 429, "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
    return response


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"{_RESPONSES}E{status}"} for status in statuses}


_SPEAKABLE = ("[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f"
              "\\u205f\\u3000]")
"""Something besides control characters and what ``str.strip`` removes (else
``empty-text``): spelled out, since a regex ``\\s`` is not Python's whitespace."""


def _speech_properties(max_text: int | None) -> dict[str, Any]:
    text: dict[str, Any] = {"type": "string", "pattern": _SPEAKABLE, "description": (
        "What to say. Must contain something besides whitespace and control characters "
        "(else 422 `empty-text`)." + ("" if max_text is None else
                                      f" Longer than {max_text} characters: 413."))}
    if max_text is not None:
        text["maxLength"] = max_text
    return text


def _reading_properties() -> dict[str, Any]:
    """The text front end's fields, the same on every synthesis route."""
    def switch(what: str) -> dict[str, Any]:
        return _nullable({"type": "boolean", "description": (
            f"{what} Absent or null: as the server is set (on unless switched off).")})

    return {
        "text_format": _nullable({"type": "string", "enum": [f.value for f in TextFormat],
                                  "default": "auto", "description": (
            "`ssml`: the text is an SSML document (a subset: speak, p, s, break, prosody "
            "rate, say-as, sub, voice, lang, emphasis); `text`: never SSML; `auto`: SSML "
            "when it starts with `<speak` or `<?xml`. SSML that cannot be spoken: 422 "
            "`invalid-ssml` naming the line and column. A body of type "
            "`application/ssml+xml` is the document itself, with the other fields as "
            "query parameters.")}),
        "markdown": switch("Read markdown as what it shows (no asterisks, hashes or link "
                           "targets read out)."),
        "cleanup": switch("Emoji, web and mail addresses, runs of punctuation made "
                          "speakable."),
        "normalize": switch("Numbers, currencies, dates, times, phone numbers and "
                            "abbreviations written out as words in the voice's language."),
        "emoji": _nullable({"type": "string", "enum": [m.value for m in EmojiMode],
                            "description": "What emoji become (server default "
                                           "`--emoji`, else `drop`)."}),
        "code_blocks": _nullable({"type": "string", "enum": [m.value for m in CodeMode],
                                  "description": "What a markdown code block becomes "
                                                 "(server default `--code-blocks`, else "
                                                 "`announce`)."}),
    }


def _ssml_document(max_text: int | None) -> dict[str, Any]:
    """An ``application/ssml+xml`` body. The pattern admits only documents that are
    always spoken (a ``speak`` element around plain text); richer SSML is described, not
    patterned, since no JSON Schema can tell well-formed XML."""
    document: dict[str, Any] = {
        "type": "string", "pattern": "^<speak>[^<>&\ufffe\uffff]*</speak>$",
        "description": (
            "An SSML document (see `text_format`): `speak` around text and `p`, `s`, "
            "`break`, `prosody`, `say-as`, `sub`, `voice`, `lang`, `emphasis`; the "
            "request's other fields as query parameters (`?voice=...&format=mp3`). Not "
            "SSML that can be spoken (malformed, a DTD, too deep): 422 `invalid-ssml` "
            "with the line and column.")}
    if max_text is not None:
        document["maxLength"] = max_text
    return document


def _native_body(formats: list[str], max_text: int | None, streaming: bool) -> dict[str, Any]:
    rates = {name: sorted(fmt.rates) for name in formats
             if (fmt := FORMATS[name]).rates is not None}
    properties: dict[str, Any] = {
        "text": _speech_properties(max_text),
        "voice": _nullable({"type": "string", "description": (
            "Installed voice name (`GET /voices`), or a blend of Kokoro voices "
            "(`af_bella+af_sky`, `af_bella(2)+af_sky(1)`); empty or absent: the voice for "
            "`language`, else the default voice. Unknown: 404 with close names.")}),
        "speaker": {"type": ["string", "integer", "null"], "description": (
            "Speaker name or numeric id of a multi-speaker voice; an unknown one is "
            "spoken by speaker 0 (a warning is logged), or 404 with --strict-speakers.")},
        "language": _nullable({"type": "string", "description": (
            "Language code (`en_US`, `en`) used to pick a voice when `voice` is not "
            "given; no installed voice speaks it: 404. For a voice that speaks several "
            "(`languages` in `GET /voices`), the one it speaks; one it does not: 404.")}),
        "speed": _nullable({"type": "number", "minimum": MIN_SPEED, "maximum": MAX_SPEED,
                            "description": "2 speaks twice as fast; default 1."}),
        "noise_scale": _nullable({"type": "number", "minimum": 0.0, "maximum": MAX_NOISE,
                                  "description": "Piper's noise (voice's own default)."}),
        "noise_w_scale": _nullable({"type": "number", "minimum": 0.0, "maximum": MAX_NOISE,
                                    "description": "Piper's phoneme-width noise."}),
        "sentence_silence": _nullable({
            "type": "number", "minimum": 0.0, "maximum": MAX_SENTENCE_SILENCE,
            "description": "Seconds of silence after each sentence (server default "
                           "`--sentence-silence`, else 0)."}),
        "paragraph_silence": _nullable({
            "type": "number", "minimum": 0.0, "maximum": MAX_SENTENCE_SILENCE,
            "description": "Seconds of silence after a paragraph, instead of the "
                           "sentence's (server default `--paragraph-silence`, else 0.5)."}),
        **_reading_properties(),
        "format": _nullable({"type": "string", "enum": formats, "default": "wav",
                             "description": "Audio format (case-insensitive)."
                             + (" `flac` cannot be streamed: use `/synthesize`."
                                if streaming else "")}),
        "sample_rate": _nullable({
            "type": "integer", "minimum": MIN_RATE, "maximum": MAX_RATE,
            "description": "Output rate in Hz (default: the voice's own, or the nearest "
                           "the codec takes). Rates the codec takes: " + "; ".join(
                               f"{name}: {', '.join(map(str, r))}"
                               for name, r in rates.items()) + "; others: any."}),
        "use_cache": {"type": "boolean", "default": True, "description": (
            "Whole responses may come from, and go to, the audio cache."
            if not streaming else "Accepted; streamed responses never use the cache.")},
    }
    if set(properties) != _NATIVE_FIELDS:  # a field added to the parser must be described
        raise RuntimeError(f"openapi: native fields differ: {set(properties) ^ _NATIVE_FIELDS}")
    return {
        "type": "object",
        "required": ["text"],
        "properties": properties,
        "additionalProperties": False,
        # A codec takes only some rates: spelled out so that a validator knows too.
        "allOf": [{"if": {"properties": {"format": {"const": name}}, "required": ["format"]},
                   "then": {"properties": {"sample_rate": {"enum": [*r, None]}}}}
                  for name, r in rates.items()],
    }


def _openai_body(max_text: int | None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["input"],
        "description": "OpenAI's body. Fields Chorus does not use (`instructions`, ...) are "
                       "accepted and ignored, so existing clients work unchanged.",
        "properties": {
            "model": _nullable({"type": "string", "examples": list(OPENAI_MODELS),
                                "description": "Accepted and ignored: the voice decides."}),
            "input": _speech_properties(max_text),
            "voice": {
                "description": (
                    "An installed voice name, a blend of Kokoro voices "
                    "(`af_bella(2)+af_sky(1)`), or an OpenAI name ("
                    + ", ".join(OPENAI_VOICES) + ") mapped by `--openai-voice NAME=VOICE` "
                    "(unmapped OpenAI names speak with the default voice); also "
                    "`{\"id\": ...}` as newer clients send. Unknown: 404."),
                "anyOf": [
                    {"type": ["string", "null"]},
                    {"type": "object", "properties": {"id": {"type": ["string", "null"]}}},
                ]},
            "response_format": _nullable({
                "type": "string", "enum": list(OPENAI_FORMATS), "default": OPENAI_DEFAULT_FORMAT,
                "description": "Case-insensitive. `pcm` is s16le (`audio/pcm;rate=N`), at "
                               f"{OPENAI_PCM_RATE} Hz unless `sample_rate` says otherwise; "
                               "`flac` is sent whole, the others streamed."}),
            "stream_format": _nullable({
                "type": "string", "enum": list(STREAM_FORMATS), "default": "audio",
                "description": "`audio`: the bytes themselves, streamed. `sse`: Server-Sent "
                               "Events, `speech.audio.delta` (base64 `audio`) then "
                               "`speech.audio.done`, or `error` if synthesis fails on the "
                               "way; not with `flac` (400)."}),
            "speed": _nullable({"type": "number", "minimum": MIN_SPEED,
                                "maximum": MAX_SPEED}),
            "sample_rate": _nullable({
                "type": "integer", "minimum": MIN_RATE, "maximum": MAX_RATE,
                "description": "Chorus's addition, as on `/synthesize`: output rate in Hz "
                               "(mp3, opus and aac take only their codecs' rates)."}),
            **_reading_properties(),
        },
        # A codec takes only some rates: spelled out so that a validator knows too.
        "allOf": [*({"if": {"properties": {"response_format": {"const": name}},
                            "required": ["response_format"]},
                     "then": {"properties": {"sample_rate": {"enum": [*rates, None]}}}}
                    for name in OPENAI_FORMATS
                    if (rates := sorted(FORMATS[name].rates or ()))),
                  # no response_format (or null) is mp3, with mp3's rates
                  {"if": {"anyOf": [{"not": {"required": ["response_format"]}},
                                    {"properties": {"response_format": {"type": "null"}},
                                     "required": ["response_format"]}]},
                   "then": {"properties": {"sample_rate": {"enum": [
                       *sorted(FORMATS[OPENAI_DEFAULT_FORMAT].rates or ()), None]}}}},
                  # Events carry pieces of a stream: a format sent only whole cannot.
                  {"if": {"properties": {"stream_format": {"const": "sse"}},
                          "required": ["stream_format"]},
                   "then": {"properties": {"response_format": {"enum": [
                       *(name for name in OPENAI_FORMATS if name in STREAMABLE), None]}}}}],
    }


def _audio_headers(whole: bool) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "X-Voice": {"description": "The voice that spoke.", "required": True,
                    "schema": {"type": "string"}},
        "X-Sample-Rate": {"description": "Sample rate of the audio in Hz.",
                          "required": True,
                          "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    }
    if whole:
        headers.update({
            "X-Audio-Duration": {"description": "Seconds of audio.", "required": True,
                                 "schema": {"type": "string",
                                            "pattern": r"^[0-9]+\.[0-9]{3}$"}},
            "X-Generation-Time": {"description": "Seconds spent synthesizing (0 on a "
                                                 "cache hit).", "required": True,
                                  "schema": {"type": "string",
                                             "pattern": r"^[0-9]+\.[0-9]{3}$"}},
            "X-Cache": {"description": "Whether the audio cache answered.",
                        "required": True,
                        "schema": {"type": "string", "enum": ["hit", "miss"]}},
        })
    return headers


def _audio(formats: list[str] | tuple[str, ...], description: str,
           whole: bool) -> dict[str, Any]:
    return {"description": description, "headers": _audio_headers(whole),
            "content": {FORMATS[name].media_type: {
                "schema": {"type": "string", "contentMediaType": FORMATS[name].media_type},
            } for name in formats}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _object(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties,
            "required": [name for name in properties if name not in optional]}


_SYNTH_ERRORS = (400, 401, 404, 413, 422, 429, 503, 500)
_GET_ERRORS = (401, 500)


def _components(max_text: int | None) -> dict[str, Any]:
    all_formats = list(FORMATS)
    streamable = [name for name in FORMATS if name in STREAMABLE]
    return {
        "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "Only when the server has an API key (`--api-key`, "
                           "`CHORUS_API_KEY`); without one every endpoint is open."}},
        "schemas": {
            "Error": _object({"error": _error_object()}),
            "SynthesizeRequest": _native_body(all_formats, max_text, streaming=False),
            "SynthesizeStreamRequest": _native_body(streamable, max_text, streaming=True),
            "OpenAISpeechRequest": _openai_body(max_text),
            "SsmlDocument": _ssml_document(max_text),
            "Voice": _object({
                "engine": {"type": "string"},
                "name": {"type": "string"},
                "language": {"type": "string", "description": (
                    "The language it speaks unless a request's `language` picks another "
                    "of `languages`.")},
                "languages": {"type": "array", "items": {"type": "string"}, "description": (
                    "Every language it speaks, `language` first (an XTTS voice may speak "
                    "several; a request's `language` picks one).")},
                "quality": {"type": ["string", "null"]},
                "speakers": {"type": "array", "items": {"type": "string"}},
                "num_speakers": {"type": "integer", "minimum": 1},
                "sample_rate": {"type": ["integer", "null"],
                                "description": "Null for a voice not installed yet."},
                "description": {"type": "string"},
                "resident": {"type": "boolean", "description": "Loaded in memory now."},
                "default": {"type": "boolean"},
                "installed": {"type": "boolean", "description": (
                    "False for a voice offered for download on first use "
                    "(`--download-voices`): the first request for it installs it.")},
                "backends": {"type": ["object", "null"], "description": (
                    "For a resident voice: `parts`, each graph part's `backend` and "
                    "`precision` (chosen at load by `--backend`/`--precision` behind "
                    "quality gates) with its `snr_db` against onnxruntime f32 and "
                    "calibration timings (`ms`, `reference_ms`) or why a candidate was "
                    "`refused`; `windows_snr_db`; null when not loaded.")},
                "device": {"type": ["string", "null"], "description": (
                    "For a resident voice: where its model runs, `cpu` or `cuda:N` "
                    "(`--device`, resolved at start-up); null when not loaded.")},
            }),
        },
        "responses": {f"E{status}": _error_response(status) for status in _ERROR_CODES},
    }


def _operation(summary: str, tag: str, responses: dict[str, Any], *,
               public: bool = False, body: str | None = None,
               description: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        operation["description"] = description
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {
            _JSON: {"schema": _ref(body)},
            SSML_CONTENT_TYPE: {"schema": _ref("SsmlDocument")}}}
    if public:
        operation["security"] = []
    return operation


def _error_object() -> dict[str, Any]:
    """The inner object of every error body (:mod:`.http_errors`)."""
    return {**_object({
        "code": {"type": "string", "examples": [
            "bad-request", "empty-text", "invalid-ssml", "text-too-long", "unknown-voice",
            "unknown-speaker", "busy", "unauthorized", "too-many-requests", "voice-exists",
            "unsupported-clip", "invalid-clip", "clip-too-large",
            "voice-cloning-unavailable"]},
        "message": {"type": "string"},
        "type": {"type": "string", "description": "OpenAI's error type for the status",
                 "enum": ["invalid_request_error", "authentication_error",
                          "permission_error", "not_found_error", "rate_limit_error",
                          "server_error"]},
        "param": {"type": ["string", "null"], "description": (
            "The request field at fault, as the route's body names it, or null.")},
    }), "additionalProperties": False}


def _sse_event() -> dict[str, Any]:
    """One Server-Sent Event of ``stream_format: sse``, as SSE parsers hand it over."""
    delta = _object({"type": {"const": "speech.audio.delta"},
                     "audio": {"type": "string", "contentEncoding": "base64"}})
    done = _object({"type": {"const": "speech.audio.done"}, "usage": _object({
        "input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"}})})
    error = _object({"type": {"const": "error"}, "error": _error_object()})
    return {
        "type": "object", "required": ["data"],
        "description": "With `stream_format: sse`: `speech.audio.delta` events (encoded "
                       "audio in `response_format`, base64), then `speech.audio.done`; "
                       "an `error` event if synthesis fails after the first.",
        "properties": {"event": {"type": "string"}, "data": {
            "type": "string", "contentMediaType": _JSON,
            "contentSchema": {"oneOf": [delta, done, error]}}}}


_CLIP_TYPES = "audio/wav, audio/flac, audio/mpeg, audio/ogg, application/octet-stream"


def _clone_body() -> dict[str, Any]:
    """The multipart form of ``POST /voices/clone`` (:mod:`.voice_cloning`)."""
    languages = {"type": "string", "enum": list(LANGUAGES)}
    return {
        "type": "object",
        "required": ["clip", "name", "language"],
        "additionalProperties": False,
        "properties": {
            "clip": {"type": "array", "minItems": 1, "maxItems": MAX_CLIPS,
                     "items": {"type": "string", "format": "binary"}, "description": (
                f"1 to {MAX_CLIPS} reference clips of the speaker (a `clip` part each): "
                f"{', '.join(CLIP_FORMATS)}, told apart by their content, "
                f"{CLIP_MIN_SECONDS:g} to {CLIP_MAX_SECONDS:g} s, at most {CLIP_MAX_BYTES} "
                f"bytes each (413 beyond), not silent (RMS level above {SILENCE_DBFS:g} "
                f"dBFS). Stored as 16-bit mono WAV at {CLIP_SAMPLE_RATE} Hz. Not accepted "
                "audio: 415; too short, long, silent, damaged or truncated: 422.")},
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
                     "description": "The new voice's name (no `..`, not `clone`); a voice "
                                    "of that name installed already, any engine: 409."},
            "language": {**languages, "description": "The language it speaks when a "
                                                      "request names none."},
            "languages": {"type": "array", "items": languages, "description": (
                "Further languages it is offered in (a part each, or comma-separated).")},
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION,
                            "description": "Free text shown in voice listings."},
        },
    }


def _clone_operation() -> dict[str, Any]:
    created = _json("The voice, as `GET /voices/{name}` describes it; it is listed, "
                    "described over Wyoming and speakable from now on.", _ref("Voice"))
    created["headers"] = {"Location": {"description": "`/voices/{name}`", "required": True,
                                       "schema": {"type": "string"}}}
    operation = _operation(
        "Clone a voice from reference clips (XTTS v2)", "voices",
        {"201": created, **_errors(400, 401, 403, 409, 413, 415, 422, 429, 501, 503, 507,
                                    500)},
        description=(
            "Writes a cloned XTTS voice into the server's first `--voices-dir`: its clips, "
            "then its entry. Needs the XTTS engine (`chorus-tts[xtts]`, else 501) and its "
            "checkpoint in that directory (else 503). A body announcing more than "
            f"{MAX_CLIPS} clips at their limit can hold is refused (413) before it is "
            f"read; text fields are at most {MAX_FIELD_BYTES} bytes."))
    operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {
        "schema": _clone_body(), "encoding": {"clip": {"contentType": _CLIP_TYPES}}}}}
    return operation


def _paths() -> dict[str, Any]:
    streamable = [name for name in FORMATS if name in STREAMABLE]
    openai_streamed = [name for name in OPENAI_FORMATS if name in STREAMABLE]
    openai_whole = [name for name in OPENAI_FORMATS if name not in STREAMABLE]
    speech_ok = _audio(openai_streamed, "Audio; streamed (chunked) for every format but "
                       "flac, which is sent whole with the headers of `/synthesize`.",
                       whole=False)
    speech_ok["content"].update(_audio(openai_whole, "", whole=True)["content"])
    speech_ok["content"][SSE_CONTENT_TYPE] = {"schema": _sse_event()}
    for name, header in _audio_headers(whole=True).items():  # flac only: not required
        speech_ok["headers"].setdefault(name, {**header, "required": False})
    name_param = {"name": "name", "in": "path", "required": True,
                  "schema": {"type": "string", "not": {"const": "clone"}},
                  "description": "Voice name (`clone` is the clone route's own path)."}
    return {
        "/synthesize": {"post": _operation(
            "Speak a text; the whole audio in one response", "synthesis",
            {"200": _audio(list(FORMATS), "The audio in the requested format.", whole=True),
             **_errors(*_SYNTH_ERRORS)},
            body="SynthesizeRequest",
            description="Whole responses may be answered from the audio cache.")},
        "/synthesize/stream": {"post": _operation(
            "Speak a text, streamed as each sentence is ready", "synthesis",
            {"200": _audio(streamable, "Chunked audio; wav has a streaming header (size "
                           "0xFFFFFFFF). An error after the first bytes cuts the body short.",
                           whole=False),
             **_errors(*_SYNTH_ERRORS)},
            body="SynthesizeStreamRequest")},
        "/voices": {"get": _operation(
            "Installed voices", "voices",
            {"200": _json("Every installed voice; with --download-voices, then those "
                          "offered for download on first use (`installed` false).", _object(
                {"voices": {"type": "array", "items": _ref("Voice")}})),
             **_errors(*_GET_ERRORS)})},
        "/voices/clone": {"post": _clone_operation()},
        "/voices/{name}": {
            "get": {**_operation(
                "One installed voice", "voices",
                {"200": _json("The voice.", _ref("Voice")),
                 **_errors(401, 404, 405, 503, 500)}), "parameters": [name_param]},
            "delete": {**_operation(
                "Delete a cloned voice", "voices",
                {"204": {"description": "Deleted: its entry first (it is listed no more), "
                                        "then its clips and conditioning cache."},
                 **_errors(401, 403, 404, 405, 409, 507, 500)},
                description="Only voices made by `POST /voices/clone` or `chorus voices "
                            "clone`; any other voice: 409 saying why."),
                "parameters": [name_param]}},
        "/v1/audio/speech": {"post": _operation(
            "OpenAI-compatible speech", "openai",
            {"200": speech_ok, **_errors(*_SYNTH_ERRORS)}, body="OpenAISpeechRequest")},
        "/v1/audio/voices": {"get": _operation(
            "Voices, shaped as Open WebUI reads them", "openai",
            {"200": _json("Installed voices, then OpenAI names with the voice each speaks "
                          "with.", _object({"voices": {"type": "array", "items": _object({
                              "id": {"type": "string"}, "name": {"type": "string"},
                              "voice": {"type": "string"}}, optional=("voice",))}})),
             **_errors(*_GET_ERRORS)})},
        "/v1/audio/models": {"get": _operation(
            "Speech models, shaped as Open WebUI reads them", "openai",
            {"200": _json("Model names accepted (and ignored).", _object({
                "models": {"type": "array", "items": _object({
                    "id": {"type": "string", "enum": list(OPENAI_MODELS)},
                    "name": {"type": "string"}})}})),
             **_errors(*_GET_ERRORS)})},
        "/v1/models": {"get": _operation(
            "OpenAI model list", "openai",
            {"200": _json("Model names accepted (and ignored).", _object({
                "object": {"const": "list"},
                "data": {"type": "array", "items": _object({
                    "id": {"type": "string", "enum": list(OPENAI_MODELS)},
                    "object": {"const": "model"}, "created": {"type": "integer"},
                    "owned_by": {"type": "string"}})}})),
             **_errors(*_GET_ERRORS)})},
        "/health/live": {"get": _operation(
            "Liveness probe", "health",
            {"200": _json("The process answers.", _object({"status": {"const": "live"}})),
             **_errors(500)}, public=True)},
        "/health/ready": {"get": _operation(
            "Readiness probe", "health",
            {"200": _json("The default voice is loaded and warm.",
                          _object({"status": {"const": "ready"}})),
             "503": _json("Starting, shutting down, or the default voice not loaded.",
                          _object({"status": {"const": "not-ready"},
                                   "reason": {"type": "string"}})),
             **_errors(500)}, public=True)},
        "/metrics": {"get": _operation(
            "Prometheus metrics", "operations",
            {"200": {"description": "Prometheus text exposition format.",
                     "content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}}},
             **_errors(*_GET_ERRORS)})},
        "/cache/stats": {"get": _operation(
            "Audio cache statistics", "operations",
            {"200": _json("Counters of the audio cache (all zero when it is off).", _object({
                "enabled": {"type": "boolean"}, "entries": {"type": "integer"},
                "bytes": {"type": "integer"}, "max_bytes": {"type": "integer"},
                "hits": {"type": "integer"}, "misses": {"type": "integer"},
                "ttl": {"type": "number", "description": "Seconds an entry lives."},
                "write_errors": {"type": "integer", "description": (
                    "Answers that could not be stored (a full disk, a read-only volume); "
                    "they were served all the same.")},
                "directory": {"type": "string"}}, optional=("directory",))),
             **_errors(*_GET_ERRORS)})},
        "/cache": {"delete": _operation(
            "Empty the audio cache", "operations",
            {"204": {"description": "Emptied (or there is no cache)."},
             **_errors(*_GET_ERRORS)})},
        "/": {"get": _operation(
            "The web page", "pages",
            {"200": {"description": "Speak from a browser.",
                     "content": {"text/html": {"schema": {"type": "string"}}}},
             **_errors(500)}, public=True)},
        "/static/{filename}": {"get": {**_operation(
            "The web page's assets", "pages",
            {"200": {"description": "A static file.", "content": {
                mime: {"schema": {"type": "string"}} for mime in (
                    "text/css", "text/javascript", "application/javascript",
                    "text/html")}},
             "404": {"description": "No such asset (`not-found`).",
                     "content": {_JSON: {"schema": _ref("Error")}}},
             **_errors(500)}, public=True),
            "parameters": [{"name": "filename", "in": "path", "required": True,
                            "schema": {"type": "string"}}]}},
        "/openapi.json": {"get": _operation(
            "This document", "pages",
            {"200": _json("OpenAPI 3.1.", {"type": "object"}), **_errors(500)},
            public=True)},
        "/docs": {"get": _operation(
            "This document as a page", "pages",
            {"200": {"description": "Self-contained HTML reading `openapi.json`.",
                     "content": {"text/html": {"schema": {"type": "string"}}}},
             **_errors(500)}, public=True)},
    }


def _version() -> str:
    try:
        return metadata.version("chorus-tts")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "0+unknown"


def build_openapi(max_text_chars: int | None = None,
                  server_url: str | None = None, *, auth: bool = True,
                  public: Iterable[str] = ()) -> dict[str, Any]:
    """The OpenAPI 3.1 document; ``max_text_chars`` is the server's text limit, ``auth``
    whether it has an API key (without one, generated clients must not send a token),
    ``public`` the routes ``--public-routes`` opens (served without the key)."""
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Chorus speech server",
            "version": _version(),
            "description": (
                "Text to speech over HTTP. Errors are JSON `{\"error\": {\"code\", "
                "\"message\", \"type\", \"param\"}}` on every route (OpenAI's shape "
                "plus Chorus's `code`). With an API key configured every endpoint except "
                "the health probes, the web page, this documentation and the listings "
                "named by `--public-routes` needs `Authorization: Bearer <key>`. Every GET "
                "also answers HEAD; CORS preflights (OPTIONS) are answered for the "
                "configured origins."),
        },
        "tags": [{"name": name} for name in
                 ("synthesis", "voices", "openai", "health", "operations", "pages")],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": _components(max_text_chars),
    }
    if server_url is not None:
        document["servers"] = [{"url": server_url}]
    for path in public:
        get = document["paths"][path]["get"]
        get["security"] = []
        get["responses"].pop("401", None)
    if not auth:
        _drop_auth(document)
    return document


def _drop_auth(document: dict[str, Any]) -> None:
    """An open server: no security requirement, scheme or 401 answer anywhere."""
    del document["security"]
    components = document["components"]
    del components["securitySchemes"]
    components["responses"].pop("E401", None)
    for item in document["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue  # path-level parameters
            operation.pop("security", None)
            operation["responses"].pop("401", None)


def add_doc_routes(app: web.Application, document: dict[str, Any]) -> None:
    """Serve ``document`` at ``/openapi.json`` and the page reading it at ``/docs``."""
    body = json.dumps(document, indent=1).encode()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=_JSON)

    async def docs(request: web.Request) -> web.FileResponse:
        return web.FileResponse(_WEB_DIR / "docs.html", headers={"Cache-Control": "no-cache"})

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)
