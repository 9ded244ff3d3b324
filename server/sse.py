"""OpenAI's speech events for ``stream_format: "sse"``, framed as Server-Sent Events.

OpenAI (and speaches) send each piece of encoded audio as base64 in a
``speech.audio.delta`` event and end with ``speech.audio.done``; the type travels in
the JSON, with no ``event:`` line, which is what OpenAI's SDK parses. An error after
the stream has begun becomes an ``error`` event, which the SDK raises, instead of a cut
connection.
"""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["CONTENT_TYPE", "audio_delta", "audio_done", "error_event"]

CONTENT_TYPE = "text/event-stream"


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def audio_delta(audio: bytes) -> bytes:
    return _event({"type": "speech.audio.delta",
                   "audio": base64.b64encode(audio).decode("ascii")})


def audio_done() -> bytes:
    """The last event. Chorus counts no tokens: ``usage`` is present (clients read it)
    and zero."""
    return _event({"type": "speech.audio.done",
                   "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}})


def error_event(error: dict[str, Any]) -> bytes:
    """``error`` is the inner object of the HTTP error body (code, message, type, param)."""
    return _event({"type": "error", "error": error})
