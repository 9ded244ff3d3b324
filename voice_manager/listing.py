"""What a voices directory holds: complete voices on disk joined with the status file.

Only what is really there is listed (the same scan the server uses); there is no
bundled catalog of hub voices, because its hashes could not be checked here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chorus.common.layout import find_voice_files
from chorus.common.voice_status import STATUS_FILE, VolumeStatus

__all__ = ["InstalledVoice", "installed_voices"]


@dataclass(frozen=True)
class InstalledVoice:
    """One complete voice in a directory; ``state`` is ``unmanaged`` without a status entry."""

    name: str
    bytes: int
    state: str
    sha256: str | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bytes": self.bytes, "state": self.state,
                "sha256": self.sha256, "error": self.error}


def installed_voices(dest: Path) -> list[InstalledVoice]:
    """Every complete voice under ``dest``, sorted by name."""
    try:
        status = VolumeStatus.from_json((dest / STATUS_FILE).read_bytes())
    except (OSError, ValueError):
        status = VolumeStatus()
    rows = []
    for files in find_voice_files(dest):
        try:
            size = files.model.stat().st_size + files.config.stat().st_size
        except OSError:
            continue  # replaced or removed while we looked
        known = status.voices.get(files.name)
        rows.append(InstalledVoice(files.name, size, known.state if known else "unmanaged",
                                   known.sha256_model if known else None,
                                   known.error if known else None))
    return rows
