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
    "InvalidSsml",
    "ShuttingDown",
    "TextTooLong",
    "UnknownSpeaker",
    "UnknownVoice",
    "VoiceDownloadFailed",
    "VoiceUnavailable",
]


class ChorusError(Exception):
    """Base of the errors that are answered to the client."""

    code = "error"
    param: str | None = None
    """The request field at fault, when there is one (OpenAI's error ``param``)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param


class BadRequest(ChorusError):
    code = "bad-request"


class EmptyText(ChorusError):
    code = "empty-text"
    param: str | None = "text"


class TextTooLong(ChorusError):
    code = "text-too-long"
    param: str | None = "text"


class InvalidSsml(ChorusError):
    """SSML that cannot be spoken: malformed, hostile, or over a limit; the message says
    where (line and column) when the parser knows."""

    code = "invalid-ssml"
    param: str | None = "text"


class UnknownVoice(ChorusError):
    code = "unknown-voice"
    param = "voice"


class UnknownSpeaker(ChorusError):
    code = "unknown-speaker"
    param = "speaker"


class VoiceUnavailable(ChorusError):
    """The voice is installed but its files could not be loaded."""

    code = "voice-unavailable"


class VoiceDownloadFailed(ChorusError):
    """A voice offered for download on first use (``--download-voices``) could not be
    installed; nothing of it was left behind."""

    code = "voice-download-failed"


class Busy(ChorusError):
    """The scheduler's queue is full; retrying later can succeed."""

    code = "busy"


class ShuttingDown(ChorusError):
    code = "shutting-down"
