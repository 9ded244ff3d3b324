"""Cloned XTTS voices over HTTP: ``POST /voices/clone`` and ``DELETE /voices/{name}``.

The upload is ``multipart/form-data`` (``clip`` one to ``MAX_CLIPS`` times, ``name``,
``language``, optional ``languages`` and ``description``), read part by part with a
bound on each: a body that announces more than the most a clone can be is refused
(413) before any of it is read, and a clip part that runs past
:data:`~chorus.common.xtts.CLIP_MAX_BYTES` is refused as soon as it does, so an upload
is never buffered beyond what one clone may hold.

What is checked, in this order, so that the answer names the first thing to fix in the
request before what to fix on the server: the form (415 not a form, 400 a malformed one,
422 a field, 413 a clip too large), whether the name is free (409), each clip
(:mod:`chorus.common.clips`: 415 not accepted audio, 422 unusable audio), then whether
this server can clone at all (501: the XTTS engine is not installed, or no
``--voices-dir`` to write into) and whether the checkpoint is there (503: retrying once
it is installed works). The files are written by
:mod:`chorus.common.clones` (clips, then the entry, atomically, under the directory's
clone lock), and the store rescans before the answer, so the new voice is listed,
described and speakable as soon as its 201 arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from chorus.common.clips import Clip, ClipError, check_clip
from chorus.common.clones import (
    CloneError,
    CloneRequest,
    check_request,
    delete_clone,
    find_voice,
    missing_checkpoint_files,
    write_clone,
)
from chorus.common.xtts import CLIP_MAX_BYTES, LANGUAGES, MAX_CLIPS, XttsEntry

from .errors import (
    BadRequest,
    CheckpointMissing,
    ChorusError,
    ClipTooLarge,
    CloningDisabled,
    CloningUnavailable,
    InvalidClip,
    UnknownVoice,
    UnsupportedClip,
    VoiceExists,
    VoiceNotDeletable,
    VoicesDirUnwritable,
)
from .http_requests import MalformedBody
from .voices import VoiceStore

__all__ = [
    "FORM_FIELDS",
    "MAX_FIELD_BYTES",
    "MAX_UPLOAD_BYTES",
    "XTTS_INSTALL_HINT",
    "CloneForm",
    "CloneTarget",
    "VoiceCloning",
    "describe_entry",
    "read_form",
]

XTTS_INSTALL_HINT = "pip install 'chorus-tts[xtts]'"
"""What brings the XTTS engine (the registry's hint, once the engine is registered)."""
FORM_FIELDS = ("clip", "name", "language", "languages", "description")
MAX_FIELD_BYTES = 4096
"""A text field's bytes (a description is at most 500 characters)."""
MAX_UPLOAD_BYTES = MAX_CLIPS * CLIP_MAX_BYTES + (MAX_CLIPS + 32) * MAX_FIELD_BYTES
"""The largest body a clone can need: every clip at its limit, every field, headers."""
_MAX_PARTS = MAX_CLIPS + len(LANGUAGES) + 3
_CHUNK = 64 * 1024


@dataclass
class CloneForm:
    """The fields of a clone upload, as sent (checked afterwards)."""

    clips: list[tuple[str, bytes]] = field(default_factory=list)
    """(label for messages, bytes) per ``clip`` part, in order."""
    name: str | None = None
    language: str | None = None
    languages: list[str] = field(default_factory=list)
    description: str | None = None


async def _read_part(part: BodyPartReader, limit: int) -> bytes | None:
    """The part's bytes, or ``None`` as soon as it runs past ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: web.Request) -> CloneForm:
    """Read a clone upload with every bound applied (see the module's docstring)."""
    if request.content_type != "multipart/form-data":
        raise UnsupportedClip(f"the body must be multipart/form-data (fields "
                              f"{', '.join(FORM_FIELDS)}), not {request.content_type}",
                              param=None)
    if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
        raise ClipTooLarge(f"the upload is {request.content_length} bytes; a clone takes at "
                           f"most {MAX_CLIPS} clips of {CLIP_MAX_BYTES} bytes each", param=None)
    form = CloneForm()
    try:
        reader = await request.multipart()
        for _ in range(_MAX_PARTS + 1):
            part = await reader.next()
            if part is None:
                return form
            if not isinstance(part, BodyPartReader):
                raise BadRequest("a nested multipart part is not a field of a clone")
            await _add_part(form, part)
        raise BadRequest(f"the form has more than {_MAX_PARTS} parts")
    except (ValueError, AssertionError, LookupError) as err:
        raise MalformedBody(f"the body is not a valid multipart/form-data upload: "
                            f"{err}") from err


async def _add_part(form: CloneForm, part: BodyPartReader) -> None:
    name = part.name or ""
    if name == "clip":
        if len(form.clips) == MAX_CLIPS:
            raise BadRequest(f"clip: at most {MAX_CLIPS} clips", param="clip")
        index = len(form.clips) + 1
        label = f"clip {index}" + (f" ({part.filename[:80]})" if part.filename else "")
        data = await _read_part(part, CLIP_MAX_BYTES)
        if data is None:
            raise ClipTooLarge(f"{label} is larger than {CLIP_MAX_BYTES} bytes "
                               f"({CLIP_MAX_BYTES // (1024 * 1024)} MiB), the most a clip "
                               "may be")
        form.clips.append((label, data))
        return
    if name not in FORM_FIELDS:
        raise BadRequest(f"{name[:40]!r} is not a field of a clone; the fields are "
                         f"{', '.join(FORM_FIELDS)}", param=name[:40] or None)
    raw = await _read_part(part, MAX_FIELD_BYTES)
    if raw is None:
        raise BadRequest(f"{name}: longer than {MAX_FIELD_BYTES} bytes", param=name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadRequest(f"{name}: not UTF-8 text", param=name) from err
    if name == "languages":
        form.languages.append(text)
        return
    if getattr(form, name) is not None:
        raise BadRequest(f"{name}: given more than once", param=name)
    setattr(form, name, text)


def _clip_error(err: ClipError) -> ChorusError:
    if err.kind == "too-large":
        return ClipTooLarge(err.message)
    if err.kind == "unsupported":
        return UnsupportedClip(err.message)
    return InvalidClip(err.message)


def _check_clips(clips: Sequence[tuple[str, bytes]]) -> list[Clip]:
    """Every clip checked and normalised (in a worker thread: decoding is CPU work)."""
    return [check_clip(data, label) for label, data in clips]


@dataclass(frozen=True)
class CloneTarget:
    """Where this server writes and looks for cloned voices."""

    directory: Path | None
    """Where new clones go: the first ``--voices-dir`` (None: there is none)."""
    directories: tuple[Path, ...] = ()
    """Every voices directory, in priority order: names are unique across them all."""


class VoiceCloning:
    """Creates and deletes cloned voices for the HTTP door, then has the store rescan."""

    def __init__(self, store: VoiceStore, target: CloneTarget, *, enabled: bool = True,
                 engine_missing: str | None = None,
                 offered: Callable[[str], bool] = lambda name: False) -> None:
        """``engine_missing``: the ``pip install`` that brings the XTTS engine, when this
        server does not have it; ``offered``: whether a name is a voice offered for
        download on first use (it is taken too)."""
        self._store = store
        self._target = target
        self._enabled = enabled
        self._engine_missing = engine_missing
        self._offered = offered

    def check_enabled(self) -> None:
        """CloningDisabled unless the server clones (checked before a body is read)."""
        if not self._enabled:
            raise CloningDisabled("voice cloning is turned off on this server "
                                  "(--no-voice-cloning)")

    async def clone(self, form: CloneForm) -> XttsEntry:
        """Check ``form`` and write its voice; the store knows it when this returns."""
        self.check_enabled()
        try:
            request = check_request(form.name, form.language, form.languages,
                                    form.description)
        except CloneError as err:
            raise BadRequest(err.message, param=err.param) from err
        if not form.clips:
            raise BadRequest(f"clip: field required (1 to {MAX_CLIPS} reference clips)",
                             param="clip")
        await self._check_free(request.name)
        try:
            clips = await asyncio.to_thread(_check_clips, form.clips)
        except ClipError as err:
            raise _clip_error(err) from err
        directory = self._writable_directory()
        self._check_checkpoint(directory, request)
        try:  # the name is checked again under the directory's lock
            entry = await asyncio.to_thread(write_clone, directory, request,
                                            [clip.wav for clip in clips],
                                            self._target.directories)
        except CloneError as err:
            raise VoiceExists(err.message) from err
        except OSError as err:
            raise VoicesDirUnwritable(f"the voice could not be written to {directory}: "
                                      f"{err.strerror or err}") from err
        await self._store.refresh()
        return entry

    async def _check_free(self, name: str) -> None:
        """VoiceExists when ``name`` is taken: a voice in any voices directory (whatever
        its engine, usable or not), or one offered for download on first use."""
        if self._offered(name):
            raise VoiceExists(f"name: {name!r} is a voice offered for download on first "
                              "use; choose another name")
        found = await asyncio.to_thread(find_voice, self._target.directories, name)
        if found is not None:
            raise VoiceExists(f"name: a {found.engine} voice called {name!r} is already "
                              "installed; choose another name, or delete that voice first")

    def _writable_directory(self) -> Path:
        if self._engine_missing is not None:
            raise CloningUnavailable(f"cloned voices are spoken by the XTTS engine, which is "
                                     f"not installed on this server: {self._engine_missing} "
                                     "adds it")
        if self._target.directory is None:
            raise CloningUnavailable("this server has no voices directory to write a cloned "
                                     "voice into; start it with --voices-dir DIR")
        return self._target.directory

    @staticmethod
    def _check_checkpoint(directory: Path, request: CloneRequest) -> None:
        missing = missing_checkpoint_files(directory, request.checkpoint)
        if missing:
            raise CheckpointMissing(
                f"the XTTS checkpoint is not installed: {directory / request.checkpoint} "
                f"lacks {', '.join(path.name for path in missing)}; install it (it is under "
                "the CPML licence) and try again")

    async def delete(self, name: str) -> XttsEntry:
        """Delete cloned voice ``name``; the store has forgotten it when this returns."""
        self.check_enabled()
        try:
            entry = await asyncio.to_thread(delete_clone, self._target.directories, name)
        except CloneError as err:
            if err.kind == "not-found":
                raise UnknownVoice(err.message) from err
            raise VoiceNotDeletable(err.message) from err
        except OSError as err:
            raise VoicesDirUnwritable(f"voice {name!r} could not be deleted: "
                                      f"{err.strerror or err}") from err
        await self._store.refresh()
        return entry


def describe_entry(name: str, entry: XttsEntry, sample_rate: int) -> dict[str, Any]:
    """A cloned voice as ``/voices`` lists it, from its entry alone: for the rare answer
    where the store could not read the voice back (its files changed meanwhile)."""
    return {"engine": "xtts", "name": name, "language": entry.language,
            "languages": list(entry.all_languages), "quality": None,
            "speakers": [], "num_speakers": 1, "sample_rate": sample_rate,
            "description": entry.description, "resident": False, "default": False,
            "installed": True, "backends": None}
