"""Atomic, verified installation of voice files into the flat voices volume.

Every byte lands first in a temp file in the destination directory (name starting with
``layout.TEMP_PREFIX``, so no reader mistakes it for a voice and the same filesystem
makes ``os.replace`` atomic). It is hashed while it is written, checked against the
expected sha256, fsynced, and only then moved into place. A failure at any point
deletes the temp file and leaves the old voice untouched.

Commit order matters because the server lists a voice exactly when both
``<name>.onnx`` and ``<name>.onnx.json`` exist:

* new voice: config first, then model; the voice appears with the model, complete;
* replaced voice: the old model is unlinked first (the voice disappears), then config,
  then model. Replacing either file in place would briefly pair a new file with an old
  one, which is worse than a voice missing for a moment. A crash in between leaves the
  voice absent, never mismatched, and the next sync installs it again.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from chorus.common.files import fsync_dir, remove_temp_files, world_readable
from chorus.common.layout import TEMP_PREFIX, voice_files

from .errors import HashMismatchError, NotEnoughSpaceError, VoiceInstallError

__all__ = [
    "FREE_SPACE_MARGIN",
    "Progress",
    "StagedFile",
    "clean_stale_temp",
    "commit_voice",
    "discard",
    "ensure_free_space",
    "hash_file",
    "stage_chunks",
]

_LOGGER = logging.getLogger(__name__)

FREE_SPACE_MARGIN = 16 * 1024 * 1024
"""Bytes left free beyond the download itself, so the status file can still be written."""
CHUNK = 1024 * 1024


class Progress(Protocol):
    """Where download progress goes (a tqdm bar satisfies it)."""

    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StagedFile:
    """A complete, verified, fsynced file under a temp name on the destination filesystem.

    ``md5`` is there because the hub's voice index publishes md5, not sha256: a source
    that knows one compares it without reading the file again.
    """

    path: Path
    sha256: str
    size: int
    md5: str


def clean_stale_temp(dest: Path) -> list[Path]:
    """Delete temp files and folders left by an interrupted run; returns what went.

    Only call this when no other manager writes to ``dest`` (one manager per volume).
    """
    removed = remove_temp_files(dest)
    if removed:
        _LOGGER.info("removed %d stale temp file(s) in %s", len(removed), dest)
    return removed


def ensure_free_space(dest: Path, needed: int) -> None:
    """Refuse to start a download that cannot fit (plus a margin) on ``dest``."""
    free = shutil.disk_usage(dest).free
    if needed + FREE_SPACE_MARGIN > free:
        raise NotEnoughSpaceError(
            f"not enough space in {dest}: need {needed} bytes (+{FREE_SPACE_MARGIN} margin), "
            f"{free} free")


def _check_digest(label: str, actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected.lower():
        raise HashMismatchError(f"{label}: sha256 mismatch: expected {expected}, got {actual}")


def _write_error(label: str, dest: Path, err: OSError) -> VoiceInstallError:
    """Local write failures (disk full, read-only volume) are not the source's fault."""
    if err.errno == errno.ENOSPC:
        return NotEnoughSpaceError(f"{label}: disk full writing to {dest}")
    return VoiceInstallError(f"{label}: cannot write to {dest}: {err.strerror or err}")


def stage_chunks(dest: Path, label: str, chunks: Iterable[bytes], *,
                 expected_sha256: str | None = None, expected_size: int | None = None,
                 progress: Progress | None = None) -> StagedFile:
    """Write ``chunks`` to a temp file in ``dest``, hashing (sha256, md5) as it goes, and
    verify it.

    ``label`` names the file in errors and in the temp name. Any exception (from the
    source iterator too) removes the temp file before it propagates.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f"{TEMP_PREFIX}{label}-")
    except OSError as err:
        raise _write_error(label, dest, err) from err
    tmp = Path(tmp_name)
    world_readable(fd)
    digest = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                try:
                    out.write(chunk)
                except OSError as err:
                    raise _write_error(label, dest, err) from err
                digest.update(chunk)
                md5.update(chunk)
                size += len(chunk)
                if progress is not None:
                    progress.update(len(chunk))
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as err:
                raise _write_error(label, dest, err) from err
        if expected_size is not None and size != expected_size:
            raise VoiceInstallError(f"{label}: transfer ended after {size} of "
                                    f"{expected_size} bytes", transient=True)
        _check_digest(label, digest.hexdigest(), expected_sha256)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if progress is not None:
            progress.close()
    return StagedFile(tmp, digest.hexdigest(), size, md5.hexdigest())


def hash_file(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def discard(*staged: StagedFile | None) -> None:
    """Remove staged files that will not be committed."""
    for item in staged:
        if item is not None:
            item.path.unlink(missing_ok=True)


def commit_voice(dest: Path, name: str, model: StagedFile, config: StagedFile) -> None:
    """Move a staged model and config into place as voice ``name`` (see module docstring)."""
    files = voice_files(dest, name)
    try:
        if files.model.exists():
            files.model.unlink()
            fsync_dir(dest)
        os.replace(config.path, files.config)
        os.replace(model.path, files.model)
        fsync_dir(dest)
    except OSError as err:
        discard(model, config)
        raise VoiceInstallError(f"cannot install {name} in {dest}: {err}") from err
