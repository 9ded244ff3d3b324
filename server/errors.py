"""Errors a client can cause or meet, each with a stable machine-readable code.

Front doors turn these into their own error shapes (a Wyoming ``error`` event, an
HTTP status); anything else that escapes is a bug and is reported as ``internal``.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "Busy",
    "ChorusError",
    "EmptyText",
    "ShuttingDown",
    "TextTooLong",
    "UnknownSpeaker",
    "UnknownVoice",
    "VoiceUnavailable",
]


class ChorusError(Exception):
    """Base of the errors that are answered to the client."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ChorusError):
    code = "bad-request"


class EmptyText(ChorusError):
    code = "empty-text"


class TextTooLong(ChorusError):
    code = "text-too-long"


class UnknownVoice(ChorusError):
    code = "unknown-voice"


class UnknownSpeaker(ChorusError):
    code = "unknown-speaker"


class VoiceUnavailable(ChorusError):
    """The voice is installed but its files could not be loaded."""

    code = "voice-unavailable"


class Busy(ChorusError):
    """The scheduler's queue is full; retrying later can succeed."""

    code = "busy"


class ShuttingDown(ChorusError):
    code = "shutting-down"
