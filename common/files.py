"""Atomic, durable file writes, shared by the voice manager and the server's graph cache.

A reader (the server scanning a voices volume, a second server loading cached graph
parts) must see the old content or the new one, whole, never a torn file: write under a
temp name in the same directory, fsync, ``os.replace``, fsync the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from .layout import TEMP_PREFIX

__all__ = ["file_sha256", "fsync_dir", "remove_temp_files", "world_readable", "write_atomic"]


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's content, read a MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()
"""Read once at import (setting it is process-wide; writers run in threads)."""


def world_readable(fd: int) -> None:
    """mkstemp makes 0600 files; voices, their status and graph parts are no secrets, and
    a volume may be read by another uid (a second server, wyoming-piper, a baked image's
    runtime user), so they get the usual 0644, less what the umask takes away."""
    os.fchmod(fd, 0o644 & ~_UMASK)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, whole."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}-")
    try:
        world_readable(fd)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_temp_files(directory: Path, older_than: float | None = None) -> list[Path]:
    """Delete what interrupted writes left in ``directory`` (names starting with
    ``TEMP_PREFIX``, files or folders); returns what went. ``older_than`` (seconds):
    only those last changed longer ago, where another process may be writing one now."""
    removed = []
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for entry in directory.iterdir():
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            if older_than is not None:
                try:
                    if now - entry.lstat().st_mtime <= older_than:
                        continue
                except FileNotFoundError:
                    continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
