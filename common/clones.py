"""Cloned XTTS voices on disk: creating one from checked clips, deleting one.

The clone API (``POST /voices/clone``, ``DELETE /voices/{name}``) and the CLI
(``chorus voices clone``/``delete``) both go through here, so a voice made either way
is the same files (:mod:`chorus.common.xtts`), and both refuse the same things.

Order makes a voice appear and disappear whole for a reader that scans the directory
at any moment (the server rescans every second): the clips are written first and the
entry last, each atomically (:func:`~chorus.common.files.write_atomic`); deleting
removes the entry first, so a voice is never listed with its clips half gone.

Two clones of one name at once (two requests, a request and the CLI, two servers on
one volume) must not both win: the check that the name is free and the writing happen
under an exclusive ``flock`` on ``.chorus-clone.lock`` in the voices directory. The
kernel drops the lock when its holder exits, so a crash never leaves the name stuck.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .files import fsync_dir, write_atomic
from .layout import VoiceEntry, find_voice_entries, is_valid_voice_name
from .xtts import (
    DEFAULT_CHECKPOINT,
    LANGUAGES,
    MAX_CLIPS,
    XttsEntry,
    checkpoint_files,
    clip_name,
    entry_path,
    latents_path,
)

__all__ = [
    "LOCK_NAME",
    "MAX_DESCRIPTION",
    "RESERVED_NAME",
    "CloneError",
    "CloneErrorKind",
    "CloneRequest",
    "check_request",
    "delete_clone",
    "find_voice",
    "missing_checkpoint_files",
    "write_clone",
]

LOCK_NAME = ".chorus-clone.lock"
"""The lock file in a voices directory (a dot file: no scan takes it for a voice)."""

RESERVED_NAME = "clone"
"""Not a cloned voice's name: ``/voices/clone`` is the route that makes them."""

MAX_DESCRIPTION = 500
"""Characters of a cloned voice's description."""

CloneErrorKind = Literal["invalid", "exists", "not-found", "not-clone"]


class CloneError(Exception):
    """A clone or delete that cannot be done; ``kind`` says why in a word a front door
    maps to its status, ``param`` names the field at fault (when one is)."""

    def __init__(self, kind: CloneErrorKind, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.kind: CloneErrorKind = kind
        self.message = message
        self.param = param


@dataclass(frozen=True)
class CloneRequest:
    """What a new cloned voice is called and speaks, checked (:func:`check_request`)."""

    name: str
    language: str
    languages: tuple[str, ...] = ()
    """Every language it is offered in, :attr:`language` first."""
    description: str = ""
    checkpoint: str = DEFAULT_CHECKPOINT

    def entry(self, clips: Sequence[str]) -> XttsEntry:
        return XttsEntry(tuple(clips), self.language, self.languages or (self.language,),
                         self.checkpoint, "clone", self.description)


def check_request(name: str | None, language: str | None,
                  languages: Sequence[str] = (), description: str | None = None,
                  ) -> CloneRequest:
    """The request's fields, checked; CloneError ``invalid`` naming the field."""
    if not name:
        raise CloneError("invalid", "name: field required", "name")
    if not is_valid_voice_name(name) or "+" in name:
        raise CloneError("invalid", f"name: {name[:80]!r} is not a voice name: 1 to 128 "
                         "letters, digits, '_', '-' or '.', starting with a letter or digit, "
                         "no '..' ('+' joins the voices of a blend)", "name")
    if name == RESERVED_NAME:
        raise CloneError("invalid", f"name: {name!r} is reserved (the HTTP API's "
                         f"POST /voices/{RESERVED_NAME})", "name")
    if not language:
        raise CloneError("invalid", "language: field required", "language")
    if language not in LANGUAGES:
        raise CloneError("invalid", f"language: {language[:40]!r} is not one XTTS speaks; "
                         f"choose from {', '.join(LANGUAGES)}", "language")
    offered = [language]
    for item in languages:
        for code in (part.strip() for part in item.split(",")):
            if not code:
                continue
            if code not in LANGUAGES:
                raise CloneError("invalid", f"languages: {code[:40]!r} is not one XTTS "
                                 f"speaks; choose from {', '.join(LANGUAGES)}", "languages")
            offered.append(code)
    description = description or ""
    if len(description) > MAX_DESCRIPTION:
        raise CloneError("invalid", f"description: longer than {MAX_DESCRIPTION} "
                         "characters", "description")
    if any(ord(ch) < 32 and ch not in "\t\n" for ch in description):
        raise CloneError("invalid", "description: control characters are not allowed",
                         "description")
    return CloneRequest(name, language, tuple(dict.fromkeys(offered)), description)


def missing_checkpoint_files(root: Path, checkpoint: str = DEFAULT_CHECKPOINT) -> list[Path]:
    """The files checkpoint ``checkpoint`` lacks under ``root`` (none: it is there)."""
    return [path for path in checkpoint_files(root, checkpoint) if not path.is_file()]


def find_voice(directories: Sequence[Path], name: str) -> VoiceEntry | None:
    """The voice called ``name`` as the server would pick it: from the first directory
    that has one, a Piper voice first when two engines' voices share the name."""
    for directory in directories:
        for entry in find_voice_entries(directory):
            if entry.name == name:
                return entry
    return None


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold the voices directory's clone lock (blocking; call from a worker thread)."""
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _taken(entry: VoiceEntry) -> CloneError:
    where = entry.config.parent
    return CloneError("exists", f"name: a {entry.engine} voice called {entry.name!r} is "
                      f"already installed (in {where}); choose another name, or delete "
                      "that voice first", "name")


def write_clone(root: Path, request: CloneRequest, clips: Sequence[bytes],
                directories: Sequence[Path] = ()) -> XttsEntry:
    """Write voice ``request.name`` into ``root``: its clips (16-bit mono WAV, as
    :func:`chorus.common.clips.check_clip` makes them), then its entry. CloneError
    ``exists`` when a voice of that name is in ``root`` or in ``directories`` (any
    engine), ``invalid`` for a wrong number of clips; OSError when ``root`` cannot be
    written (nothing of the voice is listed then)."""
    if not 1 <= len(clips) <= MAX_CLIPS:
        raise CloneError("invalid", f"clip: give 1 to {MAX_CLIPS} clips, not {len(clips)}",
                         "clip")
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        found = find_voice([root, *(d for d in directories if d != root)], request.name)
        if found is not None:
            raise _taken(found)
        names = [clip_name(request.name, index) for index in range(1, len(clips) + 1)]
        try:
            for file_name, data in zip(names, clips, strict=True):
                write_atomic(root / file_name, data)
            latents_path(root, request.name).unlink(missing_ok=True)  # another voice's
            entry = request.entry(names)
            write_atomic(entry_path(root, request.name), entry.to_json())
        except BaseException:
            for file_name in names:
                (root / file_name).unlink(missing_ok=True)
            raise
    return entry


def delete_clone(directories: Sequence[Path], name: str) -> XttsEntry:
    """Remove cloned voice ``name`` (the one the server would pick, see
    :func:`find_voice`): its entry first, then its clips and conditioning cache.

    CloneError ``not-found`` when no directory has a voice of that name, ``not-clone``
    when it is not a cloned XTTS voice (a Piper or Kokoro voice, or an XTTS voice the
    voice manager installed from a manifest, which owns it); OSError when the files
    cannot be removed."""
    if not is_valid_voice_name(name):
        raise CloneError("not-found", f"voice {name[:80]!r} is not installed", "name")
    found = find_voice(directories, name)
    if found is None:
        raise CloneError("not-found", f"voice {name!r} is not installed", "name")
    if found.engine != "xtts":
        raise CloneError("not-clone", f"voice {name!r} is a {found.engine} voice; only "
                         "cloned XTTS voices can be deleted here (remove it from its "
                         "manifest, or delete its files)", "name")
    root = found.config.parent
    with _locked(root):
        path = entry_path(root, name)
        try:
            entry = XttsEntry.read(path)
        except FileNotFoundError as err:
            raise CloneError("not-found", f"voice {name!r} is not installed",
                             "name") from err
        except ValueError as err:
            raise CloneError("not-clone", f"voice {name!r} has an entry that cannot be "
                             f"read ({err}); fix or delete its files by hand",
                             "name") from err
        if entry.origin != "clone":
            raise CloneError("not-clone", f"voice {name!r} was installed by the voice "
                             f"manager (origin {entry.origin!r}); remove it from the "
                             "manifest (TTSVoice) that asks for it instead", "name")
        path.unlink()
        fsync_dir(root)
        own = f"{name}.clip"
        for clip in entry.clips:
            if clip.startswith(own):  # never a file another voice may share
                (root / clip).unlink(missing_ok=True)
        latents_path(root, name).unlink(missing_ok=True)
        fsync_dir(root)
    return entry
