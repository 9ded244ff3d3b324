"""Errors a client can cause or meet, each with a stable machine-readable code.

Front doors turn these into their own error shapes (a Wyoming ``error`` event, an
HTTP status); anything else that escapes is a bug and is reported as ``internal``.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "Busy",
    "CheckpointMissing",
    "ChorusError",
    "ClipTooLarge",
    "CloningDisabled",
    "CloningUnavailable",
    "EmptyText",
    "InvalidClip",
    "InvalidSsml",
    "ShuttingDown",
    "TextTooLong",
    "UnknownSpeaker",
    "UnknownVoice",
    "UnsupportedClip",
    "VoiceDownloadFailed",
    "VoiceExists",
    "VoiceNotDeletable",
    "VoiceUnavailable",
    "VoicesDirUnwritable",
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


class ClipTooLarge(ChorusError):
    """A reference clip, or the whole clone upload, is over its size limit."""

    code = "clip-too-large"
    param: str | None = "clip"


class InvalidClip(ChorusError):
    """A reference clip that is audio but cannot serve: too short or long, silent,
    damaged or truncated."""

    code = "invalid-clip"
    param: str | None = "clip"


class UnsupportedClip(ChorusError):
    """A reference clip is not audio in an accepted container, or the upload is not
    ``multipart/form-data``."""

    code = "unsupported-clip"
    param: str | None = "clip"


class VoiceExists(ChorusError):
    """A voice of the name a clone asks for is installed already (any engine)."""

    code = "voice-exists"
    param: str | None = "name"


class VoiceNotDeletable(ChorusError):
    """Only cloned voices can be deleted through the API."""

    code = "voice-not-deletable"
    param: str | None = "name"


class CloningDisabled(ChorusError):
    """The server was started with ``--no-voice-cloning``."""

    code = "voice-cloning-disabled"


class CloningUnavailable(ChorusError):
    """This server cannot clone: the XTTS engine is not installed, or there is no
    voices directory to write into. Retrying does not help; reinstalling or restarting
    with other options does."""

    code = "voice-cloning-unavailable"


class CheckpointMissing(ChorusError):
    """The XTTS checkpoint a cloned voice needs is not in the voices directory yet."""

    code = "xtts-checkpoint-missing"


class VoicesDirUnwritable(ChorusError):
    """A cloned voice's files could not be written or removed (a full disk, a
    read-only volume, permissions): the server's storage, not the request."""

    code = "voices-dir-unwritable"
