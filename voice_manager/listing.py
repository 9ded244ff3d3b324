"""What ``chorus voices list`` shows: catalog voices joined with what a directory holds.

Installed voices are what is really on disk (the same scan the server uses) joined with
the status file; the catalog (:mod:`.catalog`) adds what the hub knows about each key.
By default the rows are the catalog's voices, marked when installed; ``installed_only``
turns that around: every voice on disk, those the catalog does not know included.

Kokoro voices (``--engine kokoro``) are listed from Kokoro-82M v1.0's own voices
(:data:`chorus.common.kokoro.V1_VOICES`), whose names say their language and gender;
the hub index the Piper catalog is made from knows nothing of them.

XTTS voices (``--engine xtts``) have no catalog: each is cloned from someone's clips, so
the listing is what the directory holds (entries whose clips and checkpoint are there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from chorus.common.kokoro import STYLE_BYTES, V1_VOICES, voice_gender, voice_language
from chorus.common.layout import find_voice_entries, find_voice_files
from chorus.common.voice_status import STATUS_FILE, VolumeStatus
from chorus.common.xtts import XttsEntry

from .catalog import Catalog, CatalogVoice, key_language, language_matches
from .kokoro import installed_kokoro
from .xtts import installed_xtts

__all__ = ["InstalledVoice", "KokoroRow", "VoiceRow", "XttsRow", "format_kokoro_table",
           "format_table", "format_xtts_table", "installed_kokoro_voices", "installed_voices",
           "kokoro_rows", "voice_rows", "xtts_rows"]


def _status(dest: Path) -> VolumeStatus:
    try:
        return VolumeStatus.from_json((dest / STATUS_FILE).read_bytes())
    except (OSError, ValueError):
        return VolumeStatus()


@dataclass(frozen=True)
class InstalledVoice:
    """One complete voice in a directory; ``state`` is ``unmanaged`` without a status entry."""

    name: str
    bytes: int
    state: str
    sha256: str | None
    error: str | None


def installed_voices(dest: Path) -> list[InstalledVoice]:
    """Every complete Piper voice under ``dest``, sorted by name."""
    status = _status(dest)
    rows = []
    for files in find_voice_files(dest):
        try:
            size = files.model.stat().st_size + files.config.stat().st_size
        except OSError:
            continue  # replaced or removed while we looked
        rows.append(_installed(status, files.name, size, model_hash=True))
    return rows


def _installed(status: VolumeStatus, name: str, size: int, *,
               model_hash: bool) -> InstalledVoice:
    """A voice found in the volume, with what the status file says of it (a voice no
    sync installed is ``unmanaged``). ``model_hash``: the hash shown is the model's (a
    Piper voice), else the one file of its own (a Kokoro voice's style; its model is
    shared)."""
    known = status.voices.get(name)
    if known is None:
        return InstalledVoice(name, size, "unmanaged", None, None)
    return InstalledVoice(name, size, known.state,
                          known.sha256_model if model_hash else known.sha256_config,
                          known.error)


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


class _Files(Protocol):
    @property
    def size(self) -> int: ...


_F = TypeVar("_F", bound=_Files)


def _entry_voices(dest: Path, engine: str, files: Callable[[Path, str], _F | None],
                  ) -> Iterator[tuple[_F, InstalledVoice]]:
    """Each voice of ``engine`` (an entry-file engine: Kokoro, XTTS) under ``dest`` whose
    entry names files that are there: those files, and the voice as listed."""
    status = _status(dest)
    for entry in find_voice_entries(dest):
        found = files(dest, entry.name) if entry.engine == engine else None
        if found is None:
            continue
        try:
            size = found.size
        except OSError:
            continue  # files missing, or removed while we looked
        yield found, _installed(status, entry.name, size, model_hash=False)


def installed_kokoro_voices(dest: Path) -> list[InstalledVoice]:
    """Every Kokoro voice under ``dest`` whose entry names files that are there."""
    return [voice for _, voice in _entry_voices(dest, "kokoro", installed_kokoro)]


@dataclass(frozen=True)
class KokoroRow:
    """One line of the Kokoro listing: a v1.0 voice, an installed one, or both."""

    name: str
    known: bool
    installed: InstalledVoice | None

    @property
    def language(self) -> str | None:
        return voice_language(self.name)

    @property
    def gender(self) -> str | None:
        return voice_gender(self.name)

    def matches_language(self, query: str) -> bool:
        language = self.language
        return language is not None and language_matches(query, language,
                                                         language.split("_")[0])

    def to_dict(self) -> dict[str, Any]:
        installed = self.installed
        return {"name": self.name, "engine": "kokoro", "inCatalog": self.known,
                "language": self.language, "gender": self.gender,
                "styleBytes": STYLE_BYTES if self.known else None,
                "installed": installed is not None,
                "bytes": installed.bytes if installed else None,
                "state": installed.state if installed else None,
                "sha256": installed.sha256 if installed else None,
                "error": installed.error if installed else None}


def kokoro_rows(dest: Path, *, language: str | None = None,
                installed_only: bool = False) -> list[KokoroRow]:
    """The Kokoro listing's rows, sorted by name (as :func:`voice_rows`)."""
    on_disk = {v.name: v for v in installed_kokoro_voices(dest)}
    names = sorted(on_disk) if installed_only else sorted(V1_VOICES)
    rows = [KokoroRow(name, name in V1_VOICES, on_disk.get(name)) for name in names]
    return [r for r in rows if not language or r.matches_language(language)]


def format_kokoro_table(rows: list[KokoroRow]) -> list[str]:
    """Aligned lines for people, header first."""
    table = [["NAME", "LANGUAGE", "GENDER", "INSTALLED"]] + [
        [r.name, r.language or "-", r.gender or "-", r.installed.state if r.installed else ""]
        for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in table]


@dataclass(frozen=True)
class XttsRow:
    """One line of the XTTS listing: a cloned voice in the directory."""

    entry: XttsEntry
    installed: InstalledVoice

    def matches_language(self, query: str) -> bool:
        """``en``, ``EN``, ``en_US`` (its family) or ``zh-CN`` match what the voice speaks."""
        code = query.lower().replace("_", "-")
        return code in self.entry.all_languages or code.split("-")[0] in self.entry.all_languages

    def to_dict(self) -> dict[str, Any]:
        entry, installed = self.entry, self.installed
        return {"name": installed.name, "engine": "xtts", "language": entry.language,
                "languages": list(entry.all_languages), "checkpoint": entry.checkpoint,
                "clips": list(entry.clips), "origin": entry.origin, "installed": True,
                "bytes": installed.bytes, "state": installed.state,
                "sha256": installed.sha256, "error": installed.error}


def xtts_rows(dest: Path, *, language: str | None = None) -> list[XttsRow]:
    """Every XTTS voice under ``dest`` whose clips and checkpoint are there, by name;
    ``sha256`` is the first clip's (the checkpoint is shared)."""
    rows = (XttsRow(files.entry, voice)
            for files, voice in _entry_voices(dest, "xtts", installed_xtts))
    return [row for row in rows if not language or row.matches_language(language)]


def format_xtts_table(rows: list[XttsRow]) -> list[str]:
    """Aligned lines for people, header first."""
    table = [["NAME", "LANGUAGES", "CHECKPOINT", "CLIPS", "SIZE", "STATE"]] + [
        [r.installed.name, ",".join(r.entry.all_languages), r.entry.checkpoint,
         str(len(r.entry.clips)), f"{r.installed.bytes / 1e6:.1f} MB", r.installed.state]
        for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(6)]
    return ["  ".join(cell.rjust(w) if i in (3, 4) else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
            for line in table]
