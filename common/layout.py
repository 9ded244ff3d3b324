"""The voice volume layout: where a voice's files live and which names are allowed.

Piper-compatible and flat, so wyoming-piper or ``piper`` can read the same volume:
``<root>/<voice>.onnx`` plus ``<root>/<voice>.onnx.json``. The voice manager writes
this layout and the server reads it; both import it from here so neither can drift.

Other engines' voices live beside Piper's, each recognised by its entry file: a Kokoro
voice is ``<root>/<voice>.kokoro.json``, which names its model and its style vectors,
plain file names in the same directory (one Kokoro model serves many voices, so the
model is shared, not copied per voice). Piper and wyoming-piper ignore these files, and
a Kokoro model without an ``.onnx.json`` beside it is no Piper voice. An XTTS voice is
``<root>/<voice>.xtts.json``, which names its reference clips (plain files beside it) and
the checkpoint directory it speaks with (:mod:`chorus.common.xtts`).
Files only ever appear complete (temp name in the same directory, fsync, ``os.replace``),
so a reader that sees both files may use them; temp names are never voice names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CONFIG_SUFFIX",
    "KOKORO_SUFFIX",
    "MODEL_SUFFIX",
    "TEMP_PREFIX",
    "XTTS_SUFFIX",
    "VoiceEntry",
    "VoiceFiles",
    "file_fingerprint",
    "find_voice_entries",
    "find_voice_files",
    "fingerprint_or_missing",
    "is_valid_voice_name",
    "voice_files",
]

MODEL_SUFFIX = ".onnx"
CONFIG_SUFFIX = ".onnx.json"
KOKORO_SUFFIX = ".kokoro.json"
XTTS_SUFFIX = ".xtts.json"
TEMP_PREFIX = ".chorus-tmp-"
"""Prefix of files being written; they start with a dot so no scan mistakes them for voices."""

# Piper keys look like ``en_US-lessac-medium``; allow the same alphabet (letters, digits,
# ``_``, ``-``, ``.``, ``+``) but never a path separator, a leading dot or ``..``.
_VOICE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


def is_valid_voice_name(name: str) -> bool:
    """True when ``name`` can be a file stem in the volume without escaping it."""
    return bool(_VOICE_NAME_RE.match(name)) and ".." not in name


@dataclass(frozen=True)
class VoiceFiles:
    """The two files of one Piper voice in a voices directory."""

    name: str
    model: Path
    config: Path


def voice_files(root: Path, name: str) -> VoiceFiles:
    """Paths of voice ``name`` under ``root``; raises ValueError for unsafe names."""
    if not is_valid_voice_name(name):
        raise ValueError(f"invalid voice name {name!r}")
    return VoiceFiles(name, root / f"{name}{MODEL_SUFFIX}", root / f"{name}{CONFIG_SUFFIX}")


def file_fingerprint(*paths: Path) -> tuple[int, ...]:
    """(mtime_ns, size) of each file: cheap to read, and changed by every atomic replace.

    Raises OSError when a file is missing (for instance removed while scanning).
    """
    return _fingerprint(paths, missing_ok=False)


def fingerprint_or_missing(paths: Sequence[Path]) -> tuple[int, ...]:
    """As :func:`file_fingerprint`, with (-1, -1) for a file that is missing: a voice
    that was unusable for want of a file is read again once the file appears."""
    return _fingerprint(paths, missing_ok=True)


def _fingerprint(paths: Sequence[Path], *, missing_ok: bool) -> tuple[int, ...]:
    values: list[int] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            if not missing_ok:
                raise
            values += (-1, -1)
        else:
            values += (st.st_mtime_ns, st.st_size)
    return tuple(values)


def find_voice_files(root: Path, *, report_unreadable: bool = False) -> list[VoiceFiles]:
    """Every complete voice (model and config both present) directly under ``root``.

    A missing directory yields no voices: a volume that is still being mounted or
    populated is not an error for the reader. An unreadable one yields none either,
    unless ``report_unreadable``: then its ``OSError`` propagates, for a caller that
    tells the user (the server names the errno).
    """
    try:
        names = {entry.name for entry in root.iterdir()}
    except FileNotFoundError:
        return []
    except OSError:
        if report_unreadable:
            raise
        return []
    found = []
    for file_name in sorted(names):
        if not file_name.endswith(MODEL_SUFFIX):
            continue
        stem = file_name[: -len(MODEL_SUFFIX)]
        if is_valid_voice_name(stem) and f"{stem}{CONFIG_SUFFIX}" in names:
            found.append(voice_files(root, stem))
    return found


@dataclass(frozen=True)
class VoiceEntry:
    """One voice of any engine: its name, its engine and the file that declares it (a
    Piper voice's ``.onnx.json``, a Kokoro voice's ``.kokoro.json``, an XTTS voice's
    ``.xtts.json``)."""

    name: str
    engine: str
    config: Path


_ENTRY_SUFFIXES = ((KOKORO_SUFFIX, "kokoro"), (XTTS_SUFFIX, "xtts"))


def find_voice_entries(root: Path, *, report_unreadable: bool = False) -> list[VoiceEntry]:
    """Every voice under ``root``, of every engine, sorted by name (a Piper voice first
    when two engines' voices share a name). Piper voices need both files
    (:func:`find_voice_files`); a Kokoro or XTTS entry is listed as soon as it exists,
    its engine checks the files it names. Errors as :func:`find_voice_files`."""
    entries = [VoiceEntry(files.name, "piper", files.config)
               for files in find_voice_files(root, report_unreadable=report_unreadable)]
    try:
        names = sorted(entry.name for entry in root.iterdir())
    except OSError:
        names = []  # gone or unreadable since it was listed: as find_voice_files says
    for file_name in names:
        for suffix, engine in _ENTRY_SUFFIXES:
            stem = file_name[: -len(suffix)]
            if file_name.endswith(suffix) and is_valid_voice_name(stem):
                entries.append(VoiceEntry(stem, engine, root / file_name))
    return sorted(entries, key=lambda e: (e.name, e.engine != "piper"))
