"""XTTS voices in the volume: reference clips, a shared checkpoint, and the entry.

An XTTS voice ``narrator`` is (:mod:`chorus.common.xtts`):

* its clips, ``narrator.clip1.wav`` ... (the extension the source names, else ``wav``:
  the engine reads clips by content), kept as published and verified by sha256 (the
  manifest's, else the hub's);
* the checkpoint directory ``<checkpoint>/`` (``XTTS-v2`` unless the source names
  another), shared by every XTTS voice naming it and installed once: its files are
  staged and verified, moved into place one by one, and a marker
  (:data:`CHECKPOINT_MARKER`: the source and each file's sha256) written last. A
  directory with the required files but no marker was put there by someone else (an
  image, the clone CLI): it is used as it is and never deleted;
* the entry, ``narrator.xtts.json`` (:class:`~chorus.common.xtts.XttsEntry`, origin
  ``manifest``), written last and removed first, like a Kokoro voice's.

The checkpoint is published under the CPML: nothing is fetched for a voice whose
source needs the licence accepted and does not accept it
(:func:`chorus.common.manifest.license_refusal`), not even its clips. A marker naming
another source than a voice's is replaced only when no other voice names that
checkpoint; otherwise the voice fails and says which name to give instead. A
checkpoint this manager installed is deleted (:func:`collect_checkpoints`) once no entry
in the volume and no voice in the manifest names it.

Clips are bounded by :data:`~chorus.common.xtts.CLIP_MAX_BYTES`; whether one is audio
of the right length is the server's check, when it conditions on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chorus.common.files import fsync_dir, write_atomic
from chorus.common.layout import XTTS_SUFFIX, is_valid_voice_name
from chorus.common.manifest import (
    XTTS_URL_FILES,
    DesiredVoice,
    FileSource,
    LocalFile,
    LocalSource,
    UrlFile,
    XttsCheckpoint,
    XttsHubCheckpoint,
    XttsSource,
    checkpoint_to_dict,
    license_refusal,
)
from chorus.common.xtts import (
    CHECKPOINT_FILES,
    CHECKPOINT_OPTIONAL_FILES,
    CLIP_FORMATS,
    CLIP_MAX_BYTES,
    XttsEntry,
    clip_name,
    entry_path,
    latents_path,
)

from .errors import VoiceInstallError
from .install import StagedFile, clean_stale_temp, discard, ensure_free_space, hash_file
from .kokoro import stage_file
from .sources import FetchSettings, stage_url

__all__ = [
    "CHECKPOINT_MARKER",
    "CheckpointLocks",
    "InstalledXtts",
    "XttsInstall",
    "collect_checkpoints",
    "install_xtts",
    "installed_xtts",
    "remove_xtts",
]

_LOGGER = logging.getLogger(__name__)

CHECKPOINT_MARKER = ".chorus-checkpoint.json"
"""In a checkpoint directory this manager installed: its source and files' sha256."""


class CheckpointLocks:
    """One lock per checkpoint directory, so that voices sharing a checkpoint install it
    once, one after the other, not side by side in parallel sync workers."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())


@dataclass(frozen=True)
class InstalledXtts:
    """The files an XTTS entry in the volume names."""

    entry: XttsEntry
    clips: tuple[Path, ...]
    checkpoint: Path

    @property
    def size(self) -> int:
        """Bytes of the clips and the checkpoint's files; OSError when one is missing."""
        files = [*self.clips, *(self.checkpoint / name for name in CHECKPOINT_FILES)]
        optional = [self.checkpoint / name for name in CHECKPOINT_OPTIONAL_FILES]
        return (sum(path.stat().st_size for path in files)
                + sum(path.stat().st_size for path in optional if path.is_file()))


def installed_xtts(dest: Path, voice: str) -> InstalledXtts | None:
    """The files of XTTS voice ``voice`` as its entry names them; None without a
    readable entry."""
    try:
        entry = XttsEntry.read(entry_path(dest, voice))
    except (OSError, ValueError):
        return None
    return InstalledXtts(entry, tuple(dest / clip for clip in entry.clips),
                         dest / entry.checkpoint)


@dataclass(frozen=True)
class XttsInstall:
    """What an install put in place: size and hashes for the status file."""

    size: int
    model_sha256: str
    """``model.pth`` of the checkpoint."""
    clip_sha256: tuple[str, ...]


# --- the checkpoint ------------------------------------------------------------------


def _marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / CHECKPOINT_MARKER).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _canonical(checkpoint: XttsCheckpoint) -> str:
    """The checkpoint's source as the marker records it (its name is the directory)."""
    data = checkpoint_to_dict(checkpoint)
    data.pop("name")
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in CHECKPOINT_FILES)


def _entries(dest: Path) -> dict[str, XttsEntry] | None:
    """Every XTTS entry in ``dest`` by voice; None when one cannot be read (it may name
    any checkpoint)."""
    entries = {}
    try:
        names = sorted(p.name for p in dest.iterdir() if p.name.endswith(XTTS_SUFFIX))
    except OSError:
        return None
    for name in names:
        try:
            entries[name[: -len(XTTS_SUFFIX)]] = XttsEntry.read(dest / name)
        except (OSError, ValueError):
            return None
    return entries


def _stage_checkpoint(folder: Path, checkpoint: XttsCheckpoint,
                      settings: FetchSettings) -> dict[str, StagedFile]:
    """Every file of the checkpoint staged in ``folder`` and verified, by file name."""
    source = checkpoint.source
    staged: dict[str, StagedFile] = {}
    try:
        if isinstance(source, XttsHubCheckpoint):
            from .hub import fetch_hub_file, hub_files_size  # brings huggingface_hub

            names = list(CHECKPOINT_FILES)
            commit, size = hub_files_size(source.repo, names, source.revision, settings)
            if size is not None:
                ensure_free_space(folder, size)
            for name in names:
                staged[name], _ = fetch_hub_file(source.repo, name, commit, folder, settings)
        elif isinstance(source, LocalSource):
            for name in (*CHECKPOINT_FILES, *CHECKPOINT_OPTIONAL_FILES):
                path = Path(source.path) / name
                if name in CHECKPOINT_OPTIONAL_FILES and not path.is_file():
                    continue
                staged[name] = stage_file(LocalFile(str(path)), name, folder, settings)
        else:
            for key, name in XTTS_URL_FILES.items():
                file: UrlFile | None = getattr(source, key)
                if file is not None:
                    staged[name] = stage_url(file.url, name, folder, file.sha256, settings)
    except BaseException:
        discard(*staged.values())
        raise
    return staged


def _commit_checkpoint(folder: Path, staged: dict[str, StagedFile], source: str) -> None:
    try:
        (folder / CHECKPOINT_MARKER).unlink(missing_ok=True)
        for name, file in staged.items():
            os.replace(file.path, folder / name)
        fsync_dir(folder)
        marker = {"source": json.loads(source),
                  "files": {name: {"sha256": f.sha256, "bytes": f.size}
                            for name, f in sorted(staged.items())}}
        write_atomic(folder / CHECKPOINT_MARKER,
                     json.dumps(marker, indent=2, sort_keys=True).encode() + b"\n")
    except OSError as err:
        discard(*staged.values())
        raise VoiceInstallError(f"cannot install checkpoint {folder.name}: {err}") from err


def _install_checkpoint(dest: Path, voice: str, checkpoint: XttsCheckpoint,
                        settings: FetchSettings) -> str:
    """The checkpoint in place (see module docstring); returns ``model.pth``'s sha256."""
    folder = dest / checkpoint.name
    wanted = _canonical(checkpoint)
    marker = _marker(folder)
    if marker is None and _complete(folder):
        _LOGGER.info("checkpoint %s: using the files already in %s", checkpoint.name, dest)
        return hash_file(folder / "model.pth")
    recorded = None if marker is None else json.dumps(marker.get("source"), sort_keys=True,
                                                      separators=(",", ":"))
    if recorded == wanted and _complete(folder):
        files = marker.get("files") if marker else None
        model = files.get("model.pth") if isinstance(files, dict) else None
        sha = model.get("sha256") if isinstance(model, dict) else None
        return sha if isinstance(sha, str) else hash_file(folder / "model.pth")
    if recorded is not None and recorded != wanted:
        entries = _entries(dest)
        users = (None if entries is None else sorted(
            name for name, e in entries.items() if e.checkpoint == checkpoint.name
            and name != voice))
        if users is None or users:
            raise VoiceInstallError(
                f"{voice}: checkpoint {checkpoint.name} in the volume was installed from "
                f"another source ({recorded}) and is used by "
                f"{', '.join(users or ['a voice whose entry cannot be read'])}; give this "
                "voice's checkpoint another name (checkpoint.name), or the same source")
    folder.mkdir(exist_ok=True)
    clean_stale_temp(folder)
    try:
        staged = _stage_checkpoint(folder, checkpoint, settings)
    except BaseException:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when it is empty: a failed first install leaves nothing
        raise
    _commit_checkpoint(folder, staged, wanted)
    _LOGGER.info("checkpoint %s installed (%d bytes)", checkpoint.name,
                 sum(f.size for f in staged.values()))
    return staged["model.pth"].sha256


# --- the voice -----------------------------------------------------------------------


def _clip_extension(source: FileSource) -> str:
    where = source.url if isinstance(source, UrlFile) else source.path
    suffix = where.rsplit("/", 1)[-1].rpartition(".")[2].lower()
    return suffix if suffix in CLIP_FORMATS else "wav"


def _stage_clips(dest: Path, spec: DesiredVoice, source: XttsSource,
                 settings: FetchSettings) -> list[StagedFile]:
    staged: list[StagedFile] = []
    try:
        for index, clip in enumerate(source.clips, 1):
            label = f"{spec.name}-clip{index}"
            file = stage_file(clip, label, dest, settings)
            staged.append(file)
            if file.size > CLIP_MAX_BYTES:
                raise VoiceInstallError(f"{label}: {file.size} bytes; a clip may have at "
                                        f"most {CLIP_MAX_BYTES}")
    except BaseException:
        discard(*staged)
        raise
    return staged


def install_xtts(dest: Path, spec: DesiredVoice, settings: FetchSettings,
                 locks: CheckpointLocks) -> XttsInstall:
    """Install XTTS voice ``spec`` (see module docstring); raises VoiceInstallError."""
    source = spec.source
    if not isinstance(source, XttsSource):
        raise VoiceInstallError(f"{spec.name}: an XTTS voice needs an xtts source")
    refusal = license_refusal(source)
    if refusal is not None:
        raise VoiceInstallError(f"{spec.name}: {refusal}")
    with locks(source.checkpoint.name):
        model_sha = _install_checkpoint(dest, spec.name, source.checkpoint, settings)
    staged = _stage_clips(dest, spec, source, settings)
    names = [clip_name(spec.name, i, _clip_extension(clip))
             for i, clip in enumerate(source.clips, 1)]
    previous = installed_xtts(dest, spec.name)
    entry = XttsEntry(tuple(names), source.language,
                      tuple(dict.fromkeys((source.language, *source.languages))),
                      source.checkpoint.name, "manifest")
    try:
        entry_path(dest, spec.name).unlink(missing_ok=True)  # gone before its clips change
        fsync_dir(dest)
        for file, name in zip(staged, names, strict=True):
            os.replace(file.path, dest / name)
        fsync_dir(dest)
        write_atomic(entry_path(dest, spec.name), entry.to_json())
    except OSError as err:
        discard(*staged)
        raise VoiceInstallError(f"cannot install {spec.name} in {dest}: {err}") from err
    if previous is not None:
        _remove_clips(dest, spec.name, (c for c in previous.entry.clips if c not in names))
    size = sum(f.size for f in staged) + InstalledXtts(
        entry, (), dest / source.checkpoint.name).size
    return XttsInstall(size, model_sha, tuple(f.sha256 for f in staged))


def _remove_clips(dest: Path, voice: str, names: Iterable[str]) -> None:
    """Delete clips of ``voice`` (only names of its own: an entry may have been edited)."""
    for name in names:
        if name.startswith(f"{voice}.clip") and is_valid_voice_name(name):
            (dest / name).unlink(missing_ok=True)


def remove_xtts(dest: Path, voice: str) -> None:
    """Remove an XTTS voice's entry, then its clips and cached conditioning; the
    checkpoint stays for :func:`collect_checkpoints` to judge. Raises OSError."""
    installed = installed_xtts(dest, voice)
    entry_path(dest, voice).unlink(missing_ok=True)
    fsync_dir(dest)
    if installed is not None:
        _remove_clips(dest, voice, installed.entry.clips)
        latents_path(dest, voice).unlink(missing_ok=True)


def collect_checkpoints(dest: Path, keep: Iterable[str] = ()) -> list[str]:
    """Delete the checkpoint directories this manager installed (they hold its marker)
    that no XTTS entry in ``dest`` names, nor ``keep`` (the manifest's: a voice whose
    clips failed this pass still needs its checkpoint). Returns them.

    Run it only while no install is under way.
    """
    entries = _entries(dest)
    if entries is None:
        return []  # an entry we cannot read may name any checkpoint: keep them all
    used = {e.checkpoint for e in entries.values()} | set(keep)
    removed = []
    try:
        folders = sorted(p for p in dest.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []
    for folder in folders:
        if folder.name in used or not (folder / CHECKPOINT_MARKER).is_file():
            continue
        try:
            (folder / CHECKPOINT_MARKER).unlink()
            shutil.rmtree(folder)
        except OSError as err:
            _LOGGER.error("cannot remove unused XTTS checkpoint %s: %s", folder.name, err)
            continue
        removed.append(folder.name)
        _LOGGER.info("removed XTTS checkpoint %s: no voice uses it", folder.name)
    return removed
