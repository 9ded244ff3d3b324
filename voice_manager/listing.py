"""What ``chorus voices list`` shows: catalog voices joined with what a directory holds.

Installed voices are what is really on disk (the same scan the server uses) joined with
the status file; the catalog (:mod:`.catalog`) adds what the hub knows about each key.
By default the rows are the catalog's voices, marked when installed; ``installed_only``
turns that around: every voice on disk, those the catalog does not know included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chorus.common.layout import find_voice_files
from chorus.common.voice_status import STATUS_FILE, VolumeStatus

from .catalog import Catalog, CatalogVoice, key_language, language_matches

__all__ = ["InstalledVoice", "VoiceRow", "format_table", "installed_voices", "voice_rows"]


@dataclass(frozen=True)
class InstalledVoice:
    """One complete voice in a directory; ``state`` is ``unmanaged`` without a status entry."""

    name: str
    bytes: int
    state: str
    sha256: str | None
    error: str | None


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


@dataclass(frozen=True)
class VoiceRow:
    """One line of the listing: a catalog voice, an installed one, or both."""

    name: str
    voice: CatalogVoice | None
    installed: InstalledVoice | None

    @property
    def language(self) -> str | None:
        """From the catalog; for a voice it does not know, from a Piper-style key."""
        if self.voice is not None:
            return self.voice.language
        found = key_language(self.name)
        return found[0] if found else None

    def matches_language(self, query: str) -> bool:
        if self.voice is not None:
            return self.voice.matches_language(query)
        found = key_language(self.name)
        return found is not None and language_matches(query, *found)

    @property
    def bytes(self) -> int:
        """On disk when installed, else what a pull downloads."""
        if self.installed is not None:
            return self.installed.bytes
        return self.voice.size if self.voice is not None else 0

    def to_dict(self) -> dict[str, Any]:
        voice, installed = self.voice, self.installed
        return {
            "name": self.name,
            "inCatalog": voice is not None,
            "language": self.language,
            "languageName": voice.language_name if voice else None,
            "country": voice.country if voice else None,
            "quality": voice.quality if voice else None,
            "numSpeakers": voice.num_speakers if voice else None,
            "speakers": list(voice.speakers) if voice else None,
            "downloadBytes": voice.size if voice else None,
            "installed": installed is not None,
            "bytes": installed.bytes if installed else None,
            "state": installed.state if installed else None,
            "sha256": installed.sha256 if installed else None,
            "error": installed.error if installed else None,
        }


def voice_rows(catalog: Catalog, dest: Path, *, language: str | None = None,
               installed_only: bool = False) -> list[VoiceRow]:
    """The listing's rows, sorted by name (see module docstring)."""
    on_disk = {v.name: v for v in installed_voices(dest)}
    if installed_only:
        rows = [VoiceRow(name, catalog.get(name), v) for name, v in sorted(on_disk.items())]
        return [r for r in rows if not language or r.matches_language(language)]
    return [VoiceRow(v.key, v, on_disk.get(v.key)) for v in catalog.filter(language)]


def _cells(row: VoiceRow, installed_only: bool) -> list[str]:
    voice, installed = row.voice, row.installed
    cells = [row.name, row.language or "-", voice.quality if voice else "-",
             str(voice.num_speakers) if voice else "-", f"{row.bytes / 1e6:.1f} MB"]
    if not installed_only:
        return [*cells, installed.state if installed else ""]
    sha = (installed.sha256 or "-")[:16] if installed else "-"
    note = "" if voice else "not in catalog"
    return [*cells, installed.state if installed else "", sha, note]


def format_table(rows: list[VoiceRow], installed_only: bool) -> list[str]:
    """Aligned lines for people, header first; the last columns say what is installed."""
    header = ["NAME", "LANGUAGE", "QUALITY", "SPEAKERS", "SIZE"]
    header += ["STATE", "SHA256", "NOTE"] if installed_only else ["INSTALLED"]
    table = [header] + [_cells(r, installed_only) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = {3, 4}  # numbers
    return ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                     for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
            for line in table]
