"""Staging, verifying and committing voice files (chorus.voice_manager.install)."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chorus.common.files import write_atomic
from chorus.common.layout import TEMP_PREFIX, find_voice_files
from chorus.voice_manager.errors import (
    HashMismatchError,
    NotEnoughSpaceError,
    VoiceInstallError,
)
from chorus.voice_manager.hub import piper_repo_folder
from chorus.voice_manager.install import (
    clean_stale_temp,
    commit_voice,
    ensure_free_space,
    hash_file,
    stage_chunks,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _temps(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_stage_hashes_while_writing_and_keeps_a_temp_name(tmp_path: Path) -> None:
    staged = stage_chunks(tmp_path, "v.onnx", [b"abc", b"def"], expected_sha256=_sha(b"abcdef"),
                          expected_size=6)
    assert staged.path.parent == tmp_path
    assert staged.path.name.startswith(TEMP_PREFIX)
    assert staged.path.read_bytes() == b"abcdef"
    assert staged.sha256 == _sha(b"abcdef") == hash_file(staged.path)
    assert staged.md5 == hashlib.md5(b"abcdef", usedforsecurity=False).hexdigest()
    assert staged.size == 6


def test_hash_mismatch_deletes_the_temp_file(tmp_path: Path) -> None:
    with pytest.raises(HashMismatchError, match="sha256 mismatch"):
        stage_chunks(tmp_path, "v.onnx", [b"evil"], expected_sha256=_sha(b"good"))
    assert _temps(tmp_path) == []


def test_short_body_is_a_transient_error_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(VoiceInstallError, match="ended after 4 of 8 bytes") as caught:
        stage_chunks(tmp_path, "v.onnx", [b"half"], expected_size=8)
    assert caught.value.transient
    assert _temps(tmp_path) == []


def test_source_failure_mid_stream_deletes_the_temp_file(tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield b"start"
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        stage_chunks(tmp_path, "v.onnx", broken())
    assert _temps(tmp_path) == []


def test_commit_new_voice_then_replace_it(tmp_path: Path) -> None:
    model = stage_chunks(tmp_path, "m", [b"model-1"])
    config = stage_chunks(tmp_path, "c", [b"config-1"])
    commit_voice(tmp_path, "amy", model, config)
    (voice,) = find_voice_files(tmp_path)
    assert voice.model.read_bytes() == b"model-1"
    assert voice.config.read_bytes() == b"config-1"

    commit_voice(tmp_path, "amy", stage_chunks(tmp_path, "m", [b"model-2"]),
                 stage_chunks(tmp_path, "c", [b"config-2"]))
    (voice,) = find_voice_files(tmp_path)
    assert (voice.model.read_bytes(), voice.config.read_bytes()) == (b"model-2", b"config-2")
    assert _temps(tmp_path) == []


def test_replacement_never_pairs_new_and_old_files(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Watch every rename: whenever both files exist they are from the same version."""
    commit_voice(tmp_path, "amy", stage_chunks(tmp_path, "m", [b"model-1"]),
                 stage_chunks(tmp_path, "c", [b"config-1"]))
    seen: list[tuple[bytes, bytes] | None] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_replace(src, dst)
        voices = find_voice_files(tmp_path)
        seen.append((voices[0].model.read_bytes()[-1:], voices[0].config.read_bytes()[-1:])
                    if voices else None)

    monkeypatch.setattr(os, "replace", spy)
    commit_voice(tmp_path, "amy", stage_chunks(tmp_path, "m", [b"model-2"]),
                 stage_chunks(tmp_path, "c", [b"config-2"]))
    assert all(pair in (None, (b"1", b"1"), (b"2", b"2")) for pair in seen)
    assert seen[-1] == (b"2", b"2")


def test_clean_stale_temp_removes_only_temp_entries(tmp_path: Path) -> None:
    (tmp_path / f"{TEMP_PREFIX}x.onnx-123").write_bytes(b"partial")
    (tmp_path / f"{TEMP_PREFIX}hf-x").mkdir()
    (tmp_path / f"{TEMP_PREFIX}hf-x" / "blob").write_bytes(b"partial")
    (tmp_path / "keep.onnx").write_bytes(b"voice")
    removed = clean_stale_temp(tmp_path)
    assert len(removed) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["keep.onnx"]
    assert clean_stale_temp(tmp_path / "missing") == []


def test_free_space_check(tmp_path: Path) -> None:
    ensure_free_space(tmp_path, 1)
    with pytest.raises(NotEnoughSpaceError, match="not enough space"):
        ensure_free_space(tmp_path, 1 << 60)


def test_write_atomic(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert _temps(tmp_path) == []


@pytest.mark.parametrize(("name", "folder"), [
    ("en_US-amy-medium", "en/en_US/amy/medium"),
    ("en_GB-northern_english_male-medium", "en/en_GB/northern_english_male/medium"),
    ("de_DE-thorsten-high", "de/de_DE/thorsten/high"),
])
def test_piper_repo_folder(name: str, folder: str) -> None:
    assert piper_repo_folder(name) == folder


@pytest.mark.parametrize("name", ["amy", "en_US-amy", "en-amy-medium", "en_US--medium"])
def test_piper_repo_folder_refuses_non_keys(name: str) -> None:
    with pytest.raises(VoiceInstallError, match="not a Piper key"):
        piper_repo_folder(name)


class _FullDisk:
    """A file object whose writes fail with ENOSPC after ``room`` bytes, like a full disk."""

    def __init__(self, real: Any, room: int) -> None:
        self._real = real
        self._room = room

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        written: int = self._real.write(data)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._real.close()


def test_disk_full_mid_write_is_a_clear_error_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), 4))
    with pytest.raises(NotEnoughSpaceError, match="disk full writing to"):
        stage_chunks(tmp_path, "v.onnx", [b"abcd", b"efgh"])
    monkeypatch.undo()
    assert _temps(tmp_path) == []


def test_installed_files_are_readable_by_other_users(tmp_path: Path) -> None:
    """A volume may be read by another uid than the one that installed it."""
    staged = stage_chunks(tmp_path, "m", [b"model"])
    assert stat.S_IMODE(staged.path.stat().st_mode) & 0o044 == 0o044
    target = tmp_path / "status.json"
    write_atomic(target, b"{}")
    assert stat.S_IMODE(target.stat().st_mode) & 0o044 == 0o044
