"""Kokoro voices in the volume: a shared model, the voice's style vectors, and its entry.

A Kokoro voice ``af_heart`` is three files (:mod:`chorus.common.layout`):

* the model, ``kokoro-<sha256>.onnx``: named by its content, so every voice whose
  source gives the same bytes shares one file, and a file of that name never needs a
  second download or a second check (it only ever appears verified and whole);
* the style vectors, ``af_heart.style.bin`` (or ``.npy``, as the source names it: the
  engine reads the two formats by suffix);
* the entry, ``af_heart.kokoro.json``, naming both. The server lists the voice once the
  entry exists, so it is written last, and removed first when the voice is replaced or
  removed: a style never pairs with a model it was not installed with.

Every file is staged and verified (sha256: the manifest's, else the hub's LFS hash; a
local file without one is copied as it is, like a Piper voice from a directory) and
moved into place atomically, like a Piper voice's. A model is deleted only when no
entry in the volume names it any more (:func:`collect_models`), never by the removal of
one voice while another still uses it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from chorus.common.files import fsync_dir, write_atomic
from chorus.common.layout import KOKORO_SUFFIX, is_valid_voice_name
from chorus.common.manifest import (
    DesiredVoice,
    FileSource,
    KokoroSource,
    LocalFile,
    UrlFile,
)

from .errors import VoiceInstallError
from .install import CHUNK, StagedFile, discard, ensure_free_space, stage_chunks
from .sources import FetchSettings, stage_url

__all__ = [
    "InstalledKokoro",
    "KokoroInstall",
    "collect_models",
    "install_kokoro",
    "installed_kokoro",
    "model_name",
    "remove_kokoro",
    "stage_file",
]

_LOGGER = logging.getLogger(__name__)

_MODEL_RE = re.compile(r"^kokoro-[0-9a-f]{64}\.onnx$")


def model_name(sha256: str) -> str:
    """The volume's name for the Kokoro model with this content."""
    return f"kokoro-{sha256}.onnx"


def _style_name(voice: str, source: FileSource) -> str:
    where = source.url if isinstance(source, UrlFile) else source.path
    return f"{voice}.style{'.npy' if where.lower().endswith('.npy') else '.bin'}"


def _entry(dest: Path, voice: str) -> Path:
    return dest / f"{voice}{KOKORO_SUFFIX}"


@dataclass(frozen=True)
class InstalledKokoro:
    """The files a Kokoro entry in the volume names."""

    entry: Path
    model: Path
    style: Path

    @property
    def size(self) -> int:
        """Bytes of model and style; raises OSError when either is missing."""
        return self.model.stat().st_size + self.style.stat().st_size


def installed_kokoro(dest: Path, voice: str) -> InstalledKokoro | None:
    """The files of Kokoro voice ``voice`` as its entry names them; None without an
    entry, or with one that is not readable or names files outside the volume."""
    entry = _entry(dest, voice)
    try:
        data = json.loads(entry.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    model, style = data.get("model"), data.get("style")
    if not (isinstance(model, str) and isinstance(style, str)
            and is_valid_voice_name(model) and is_valid_voice_name(style)):
        return None
    return InstalledKokoro(entry, dest / model, dest / style)


@dataclass(frozen=True)
class KokoroInstall:
    """What an install put in place: sizes and hashes for the status file."""

    size: int
    model_sha256: str
    style_sha256: str


def _read_chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def _stage_local(source: LocalFile, label: str, dest: Path) -> StagedFile:
    path = Path(source.path)
    try:
        size = path.stat().st_size
        ensure_free_space(dest, size)
        with path.open("rb") as src:
            return stage_chunks(dest, label, _read_chunks(src),
                                expected_sha256=source.sha256, expected_size=size)
    except OSError as err:
        raise VoiceInstallError(f"{label}: cannot copy {path}: {err}") from err


def stage_file(source: FileSource, label: str, dest: Path,
               settings: FetchSettings) -> StagedFile:
    """One file of a voice (a Kokoro model or style, an XTTS clip or checkpoint file),
    staged in ``dest`` and verified."""
    if isinstance(source, LocalFile):
        return _stage_local(source, label, dest)
    if isinstance(source, UrlFile):
        return stage_url(source.url, label, dest, source.sha256, settings)
    from .hub import fetch_hub_file  # brings huggingface_hub; only when a voice needs it

    staged, _ = fetch_hub_file(source.repo, source.path, source.revision, dest, settings,
                               expected_sha256=source.sha256)
    return staged


def _commit_model(dest: Path, source: FileSource, voice: str,
                  settings: FetchSettings) -> tuple[str, str]:
    """The model in place under its content name; (file name, sha256). A model of that
    content already there is used as it is: it was verified when it was written."""
    pinned = source.sha256
    if pinned is not None and (dest / model_name(pinned)).is_file():
        return model_name(pinned), pinned
    staged = stage_file(source, f"{voice}-model", dest, settings)
    target = dest / model_name(staged.sha256)
    try:
        if target.is_file():
            discard(staged)  # another voice brought the same bytes
        else:
            os.replace(staged.path, target)
            fsync_dir(dest)
    except OSError as err:
        discard(staged)
        raise VoiceInstallError(f"cannot install the model of {voice} in {dest}: {err}") from err
    return target.name, staged.sha256


def install_kokoro(dest: Path, spec: DesiredVoice, settings: FetchSettings) -> KokoroInstall:
    """Install Kokoro voice ``spec`` (see module docstring); raises VoiceInstallError."""
    source = spec.source
    if not isinstance(source, KokoroSource):
        raise VoiceInstallError(f"{spec.name}: a Kokoro voice needs a kokoro source")
    model, model_sha = _commit_model(dest, source.model, spec.name, settings)
    style = stage_file(source.style, f"{spec.name}-style", dest, settings)
    entry = _entry(dest, spec.name)
    style_path = dest / _style_name(spec.name, source.style)
    try:
        entry.unlink(missing_ok=True)  # the voice disappears before its style changes
        fsync_dir(dest)
        os.replace(style.path, style_path)
        fsync_dir(dest)
        write_atomic(entry, json.dumps({"model": model, "style": style_path.name},
                                       indent=2).encode() + b"\n")
    except OSError as err:
        discard(style)
        raise VoiceInstallError(f"cannot install {spec.name} in {dest}: {err}") from err
    size = (dest / model).stat().st_size + style.size
    return KokoroInstall(size, model_sha, style.sha256)


def remove_kokoro(dest: Path, voice: str) -> None:
    """Remove a Kokoro voice's entry, then its style; the model stays for
    :func:`collect_models` to judge. Raises OSError."""
    installed = installed_kokoro(dest, voice)
    _entry(dest, voice).unlink(missing_ok=True)
    fsync_dir(dest)
    if installed is not None and not _MODEL_RE.match(installed.style.name):
        installed.style.unlink(missing_ok=True)


def collect_models(dest: Path) -> list[str]:
    """Delete the content-named models no Kokoro entry in ``dest`` names; returns them.

    Run it only while no install is under way (one would commit a model before its
    entry). A model named by any entry, readable or being replaced, stays.
    """
    try:
        names = [entry.name for entry in dest.iterdir()]
    except OSError:
        return []
    used: set[str] = set()
    for name in names:
        if name.endswith(KOKORO_SUFFIX):
            installed = installed_kokoro(dest, name[: -len(KOKORO_SUFFIX)])
            if installed is None:
                return []  # an entry we cannot read may name any model: keep them all
            used.add(installed.model.name)
    removed = []
    for name in sorted(names):
        if _MODEL_RE.match(name) and name not in used:
            try:
                (dest / name).unlink()
            except OSError as err:
                _LOGGER.error("cannot remove unused Kokoro model %s: %s", name, err)
                continue
            removed.append(name)
            _LOGGER.info("removed Kokoro model %s: no voice uses it", name)
    return removed
