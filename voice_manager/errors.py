"""Why installing a voice failed, and whether trying again could help.

Retries are only worth their delay for faults of the moment (a 500, a dropped
connection, a timeout); a hash mismatch or a 404 will fail the same way again until the
manifest or the source changes, so those fail fast and say so.
"""

from __future__ import annotations

__all__ = ["HashMismatchError", "NotEnoughSpaceError", "VoiceInstallError"]


class VoiceInstallError(Exception):
    """Installing one voice failed; the volume keeps whatever it held before."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


class HashMismatchError(VoiceInstallError):
    """Downloaded bytes do not match the expected sha256 (or git blob id)."""


class NotEnoughSpaceError(VoiceInstallError):
    """The destination filesystem cannot hold the download."""
