"""The last start's ``describe`` answer, kept so that the next start can give it before
the engines are imported (:mod:`.early_door`).

``describe`` needs only the voice list, but the voice store reads voices through the
engines, and importing them (numpy, onnxruntime, piper-tts, our graph modules) is most
of a start: ~0.2 s of ~0.3 s to the open door, measured on the 2-core VM. So every start
that opens its doors writes what ``describe`` answered, beside what that answer rests
on, and the next start answers from it only if all of that is as recorded:

- the server's settings (a hash of all of them, which is also the file's name, so two
  servers with different settings sharing a cache never use each other's);
- the installed packages: the mtime of each site-packages directory (installing,
  upgrading or removing a distribution adds or removes a directory there, which an
  engine's extra, piper-tts and its espeak-ng data all do);
- each voices directory's entries, as the voice store lists them, and (mtime, size) of
  every file the store read for an entry, exactly as its scan fingerprints them (a
  refused voice's files included: it must stay unlisted).

Anything else found (a file touched, a voice added, another directory unreadable) means
no snapshot: the start goes the ordinary way and writes a new one. The answer is given
only until the store's own scan is done (well under a second); from then on the live
store answers, so even a change the record could not see lasts no longer than that.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import site
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chorus.common.files import write_atomic
from chorus.common.layout import VoiceEntry, find_voice_entries, fingerprint_or_missing

if TYPE_CHECKING:
    from .settings import ServerSettings

__all__ = ["FORMAT", "ReadEntry", "ScannedDirectory", "load", "save", "snapshot_path"]

_LOGGER = logging.getLogger(__name__)

FORMAT = 1
"""Bumped whenever the file's layout or the meaning of a recorded field changes."""

KEEP = 8
"""Snapshots kept per cache directory (one per set of settings), newest first."""


@dataclass(frozen=True)
class ReadEntry:
    """One voice entry of a scan, with the files its verdict was read from."""

    entry: VoiceEntry
    files: tuple[Path, ...] = ()
    """Empty: the entry was not read (its engine is missing, or an earlier directory
    already has a voice of that name)."""
    fingerprint: tuple[int, ...] = ()


@dataclass(frozen=True)
class ScannedDirectory:
    """A voices directory as one scan of the store saw it."""

    path: Path
    entries: tuple[ReadEntry, ...]
    readable: bool = True


def _settings_digest(settings: ServerSettings) -> str:
    """A hash, never the settings themselves: they hold ``--api-key``."""
    return hashlib.sha256(repr(settings).encode()).hexdigest()


def snapshot_path(settings: ServerSettings) -> Path:
    """Where the snapshot for these settings lives (under ``--graph-cache-dir``)."""
    return (settings.effective_graph_cache_dir / "describe"
            / f"{_settings_digest(settings)[:16]}.json")


@functools.cache
def _environment() -> list[list[Any]]:
    """(path, mtime) of each directory pip installs into; once per process, before the
    runtime's imports could change anything."""
    found: list[list[Any]] = []
    for entry in [*site.getsitepackages(), site.getusersitepackages()]:
        try:
            found.append([entry, os.stat(entry).st_mtime_ns])
        except OSError:
            found.append([entry, None])
    return found


def _entry_record(read: ReadEntry) -> dict[str, Any]:
    return {"name": read.entry.name, "engine": read.entry.engine,
            "config": str(read.entry.config), "files": [str(f) for f in read.files],
            "fingerprint": list(read.fingerprint)}


def save(settings: ServerSettings, info: dict[str, Any],
         scanned: Sequence[ScannedDirectory]) -> None:
    """Keep ``info`` (the ``describe`` answer's data) for the next start with these
    settings. Best effort: a cache that cannot be written means slower starts only."""
    if not all(directory.readable for directory in scanned):
        return  # a directory that could not be listed has nothing to compare with later
    path = snapshot_path(settings)
    record = {"format": FORMAT, "settings": _settings_digest(settings),
              "environment": _environment(),
              "directories": [{"path": str(d.path),
                               "entries": [_entry_record(r) for r in d.entries]}
                              for d in scanned],
              "info": info}
    text = json.dumps(record, sort_keys=True)
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            os.utime(path)  # in use: the newest are the ones kept
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text.encode())
        _prune(path.parent)
    except OSError as err:
        _LOGGER.debug("describe snapshot not written to %s: %s", path, err)


def _prune(directory: Path) -> None:
    """Keep the :data:`KEEP` newest: settings change, and old ones are never used again."""
    snapshots = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime_ns,
                       reverse=True)
    for old in snapshots[KEEP:]:
        old.unlink(missing_ok=True)


def load(settings: ServerSettings) -> dict[str, Any] | None:
    """The recorded ``describe`` answer if everything it rests on is as recorded, else
    ``None`` (no snapshot, another format, anything changed or unreadable)."""
    path = snapshot_path(settings)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    try:
        if (record["format"] != FORMAT or record["settings"] != _settings_digest(settings)
                or record["environment"] != _environment()):
            return None
        directories = [Path(d) for d in settings.voice_directories()]
        if [Path(d["path"]) for d in record["directories"]] != directories:
            return None
        for directory, recorded in zip(directories, record["directories"], strict=True):
            if not _unchanged(directory, recorded["entries"]):
                return None
        info = record["info"]
    except (KeyError, TypeError, ValueError, OSError):
        return None  # a damaged record is no record
    return info if isinstance(info, dict) else None


def _unchanged(directory: Path, recorded: list[dict[str, Any]]) -> bool:
    entries = find_voice_entries(directory, report_unreadable=True)
    if [(e.name, e.engine, str(e.config)) for e in entries] != [
            (r["name"], r["engine"], r["config"]) for r in recorded]:
        return False
    return all(not r["files"] or list(fingerprint_or_missing([Path(f) for f in r["files"]]))
               == r["fingerprint"] for r in recorded)
