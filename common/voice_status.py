"""The voice status file: what the voice manager last did for each voice in a volume.

The voice manager writes ``<volume>/.chorus-status.json`` (atomically) after every
change; the operator and people read it. It lives here, next to the manifest, so the
writer and the readers share one definition. Keys are camelCase like the manifest.

Format (version 1)::

    {"version": 1, "updatedAt": "2026-...Z", "manifestError": null,
     "voices": {"en_US-amy-medium": {"state": "installed", "required": true,
                "bytes": 63201294, "sha256": {"model": "...", "config": "..."},
                "error": null, "attempts": 1, "fingerprint": "...",
                "updatedAt": "...", "installedAt": "...", "unwantedSince": null,
                "servingPrevious": false}}}

``servingPrevious`` is true while a voice is ``failed`` (or ``downloading`` again) but
the copy installed before the failed update is still in the volume, whole, and so
still served; ``bytes``, ``sha256`` and ``installedAt`` then describe that copy.
``unwantedSince`` is set while a voice the manager installed is no longer in the
manifest; the voice is removed (and its entry dropped) once the grace period has passed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "STATUS_FILE",
    "STATUS_VERSION",
    "VoiceState",
    "VoiceStatus",
    "VolumeStatus",
    "parse_time",
    "utc_now",
]

STATUS_FILE = ".chorus-status.json"
"""Name in the voices volume; it starts with a dot so no voice scan picks it up."""
STATUS_VERSION = 1

VoiceState = Literal["pending", "downloading", "installed", "failed"]
_STATES = ("pending", "downloading", "installed", "failed")


_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> str:
    """RFC 3339 UTC timestamp with second precision, as Kubernetes writes them."""
    return datetime.now(UTC).strftime(_TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """The inverse of :func:`utc_now`; raises ValueError for other formats."""
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class VoiceStatus:
    """The last known state of one voice.

    ``fingerprint`` is the canonical manifest entry the installed files came from; a
    voice whose manifest entry changes no longer matches it and is installed again.
    ``error`` keeps the last failure even while an older good copy stays installed;
    ``serving_previous`` says that one does.
    """

    state: VoiceState
    required: bool = True
    bytes: int | None = None
    sha256_model: str | None = None
    sha256_config: str | None = None
    error: str | None = None
    attempts: int = 0
    fingerprint: str | None = None
    updated_at: str = field(default_factory=utc_now)
    installed_at: str | None = None
    unwanted_since: str | None = None
    serving_previous: bool = False

    def with_(self, **changes: Any) -> VoiceStatus:
        """A copy with ``changes`` and a fresh ``updated_at``."""
        return replace(self, updated_at=utc_now(), **changes)

    def to_dict(self) -> dict[str, Any]:
        sha = (None if self.sha256_model is None
               else {"model": self.sha256_model, "config": self.sha256_config})
        return {"state": self.state, "required": self.required, "bytes": self.bytes,
                "sha256": sha, "error": self.error, "attempts": self.attempts,
                "fingerprint": self.fingerprint, "updatedAt": self.updated_at,
                "installedAt": self.installed_at, "unwantedSince": self.unwanted_since,
                "servingPrevious": self.serving_previous}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VoiceStatus:
        state = data.get("state")
        if state not in _STATES:
            raise ValueError(f"unknown voice state {state!r}")
        sha = data.get("sha256") or {}
        return cls(state=state, required=bool(data.get("required", True)),
                   bytes=data.get("bytes"), sha256_model=sha.get("model"),
                   sha256_config=sha.get("config"), error=data.get("error"),
                   attempts=int(data.get("attempts", 0)), fingerprint=data.get("fingerprint"),
                   updated_at=str(data.get("updatedAt") or utc_now()),
                   installed_at=data.get("installedAt"),
                   unwanted_since=data.get("unwantedSince"),
                   serving_previous=bool(data.get("servingPrevious", False)))


@dataclass(frozen=True)
class VolumeStatus:
    """Status of every voice the manager knows about, plus the manifest's health."""

    voices: dict[str, VoiceStatus] = field(default_factory=dict)
    manifest_error: str | None = None
    updated_at: str = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        return {"version": STATUS_VERSION, "updatedAt": self.updated_at,
                "manifestError": self.manifest_error,
                "voices": {name: st.to_dict() for name, st in sorted(self.voices.items())}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> VolumeStatus:
        """Parse a status file; raises ValueError when it is not one this version reads."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != STATUS_VERSION:
            raise ValueError("not a version 1 Chorus status file")
        voices = data.get("voices") or {}
        if not isinstance(voices, dict):
            raise ValueError("status file: voices must be an object")
        return cls({str(k): VoiceStatus.from_dict(v) for k, v in voices.items()},
                   data.get("manifestError"), str(data.get("updatedAt") or utc_now()))
