"""Converge a voices volume to a manifest, one pass.

Each desired voice that is not installed from its current manifest entry is fetched
(bounded parallelism, retries with exponential backoff for transient faults), verified
and committed atomically; one voice failing never stops the others. Every state change
is written to the status file so the operator and people can see what happened, and a
failure leaves the previously installed copy of that voice in place.

Voices that leave the manifest are deleted only after a grace period
(``remove_after_s``, off by default) and only when this manager installed them, so a
bad manifest edit cannot delete a voice at once, nor ever one it does not own.

Kokoro voices (:mod:`.kokoro`) go through the same passes, retries and status entries;
their ``sha256_config`` is the style's hash. A Kokoro model shared by several voices is
deleted only at the end of a prune, once no voice in the volume names it. XTTS voices
(:mod:`.xtts`) too: ``sha256_model`` is the checkpoint's ``model.pth``, ``sha256_config``
the first clip's; a checkpoint goes at the end of a prune once no voice names it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from chorus.common.files import write_atomic
from chorus.common.layout import voice_files
from chorus.common.manifest import (
    DesiredVoice,
    HuggingFaceSource,
    LocalSource,
    Manifest,
    UrlSource,
    XttsSource,
)
from chorus.common.voice_status import (
    STATUS_FILE,
    VoiceStatus,
    VolumeStatus,
    parse_time,
    utc_now,
)
from chorus.common.xtts import entry_path

from .errors import VoiceInstallError
from .install import clean_stale_temp, commit_voice, discard, hash_file
from .kokoro import collect_models, install_kokoro, installed_kokoro, remove_kokoro
from .sources import FetchSettings, StagedVoice, fetch_local, fetch_url
from .xtts import (
    CheckpointLocks,
    collect_checkpoints,
    install_xtts,
    installed_xtts,
    remove_xtts,
)

__all__ = ["LOCK_FILE", "SyncReport", "SyncSettings", "VolumeBusyError", "VolumeSyncer"]

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncSettings:
    """How hard and how wide a sync pass tries."""

    parallel: int = 2
    retries: int = 3
    """Extra attempts after the first for transient faults (5xx, timeouts, drops)."""
    backoff_s: float = 2.0
    """Delay before the first retry; doubles each time, capped at ``max_backoff_s``."""
    max_backoff_s: float = 60.0
    remove_after_s: float | None = None
    """Grace period before a voice that left the manifest is deleted; ``None`` keeps it."""
    keep: frozenset[str] = frozenset()
    """Voices never deleted (say, the server's default voice)."""
    fetch: FetchSettings = field(default_factory=FetchSettings)


@dataclass(frozen=True)
class SyncReport:
    """Outcome of one pass: the status of each voice in the manifest."""

    voices: dict[str, VoiceStatus]

    @property
    def failed(self) -> list[str]:
        return sorted(n for n, s in self.voices.items() if s.state != "installed")

    @property
    def required_failed(self) -> list[str]:
        return sorted(n for n, s in self.voices.items()
                      if s.state != "installed" and s.required)


LOCK_FILE = ".chorus-lock"


class VolumeBusyError(OSError):
    """Another voice manager (a sidecar, a ``pull``) is working on the same directory."""


def _lock_volume(dest: Path) -> int | None:
    """Hold an exclusive flock on ``<dest>/.chorus-lock`` for the syncer's lifetime.

    Two managers on one volume would delete each other's temp files at start and race
    on the status file. The kernel drops the lock when the process dies, even by SIGKILL.
    """
    fd = os.open(dest / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        os.close(fd)
        raise VolumeBusyError(f"another voice manager is working on {dest}") from err
    return fd


def _fetch(spec: DesiredVoice, dest: Path, settings: FetchSettings) -> StagedVoice:
    source = spec.source
    if isinstance(source, LocalSource):
        return fetch_local(spec, source, dest, settings)
    if isinstance(source, UrlSource):
        return fetch_url(spec, source, dest, settings)
    if isinstance(source, HuggingFaceSource):
        from .hub import fetch_hf  # brings huggingface_hub; only when a voice needs it

        return fetch_hf(spec, source, dest, settings)
    raise VoiceInstallError(f"{spec.name}: unsupported source {source!r}")


class VolumeSyncer:
    """Owns one voices directory and its status file (one syncer per volume).

    ``sleep`` is injectable so tests need not wait for real backoff.
    """

    def __init__(self, dest: Path, settings: SyncSettings | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.dest = dest
        self.settings = settings or SyncSettings()
        self._sleep = sleep
        self._lock = threading.Lock()
        self._checkpoint_locks = CheckpointLocks()
        dest.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_volume(dest)
        clean_stale_temp(dest)
        self.status = self._load_status()

    def close(self) -> None:
        """Release the volume for another manager."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def status_path(self) -> Path:
        return self.dest / STATUS_FILE

    def _load_status(self) -> VolumeStatus:
        try:
            return VolumeStatus.from_json(self.status_path.read_bytes())
        except FileNotFoundError:
            return VolumeStatus()
        except ValueError as err:
            _LOGGER.warning("ignoring unreadable status file %s: %s", self.status_path, err)
            return VolumeStatus()

    def _write_status(self) -> None:
        # A status file that cannot be written (disk full) must not stop installs.
        try:
            write_atomic(self.status_path, self.status.to_json().encode())
        except OSError as err:
            _LOGGER.error("cannot write status file %s: %s", self.status_path, err)

    def _set(self, name: str, status: VoiceStatus) -> None:
        with self._lock:
            voices = {**self.status.voices, name: status}
            self.status = VolumeStatus(voices, self.status.manifest_error)
            self._write_status()

    def set_manifest_error(self, error: str | None) -> None:
        """Record (or clear) a manifest that could not be read; voices stay as they are."""
        with self._lock:
            if error == self.status.manifest_error:
                return
            self.status = VolumeStatus(self.status.voices, error)
            self._write_status()

    # --- one voice --------------------------------------------------------------------

    def _is_current(self, spec: DesiredVoice) -> bool:
        """True when the files on disk came from this manifest entry and are intact.

        Trusts the recorded sizes (cheap) when the status file knows the voice; a voice
        the status file does not know (baked into an image, say) is adopted when its
        files match the manifest's sha256.
        """
        try:
            return self._check_current(spec)
        except OSError as err:  # replaced or unreadable while we looked: install again
            _LOGGER.warning("voice %s: cannot check installed files: %s", spec.name, err)
            return False

    def _check_current(self, spec: DesiredVoice) -> bool:
        size = self._installed_size(spec.name, spec.engine)
        if size is None:
            return False
        known = self.status.voices.get(spec.name)
        if (known is not None and known.fingerprint == spec.fingerprint()
                and known.installed_at is not None and known.bytes == size):
            return True
        files = voice_files(self.dest, spec.name)
        if spec.sha256 is not None and (hash_file(files.model) == spec.sha256.model
                                        and hash_file(files.config) == spec.sha256.config):
            now = utc_now()
            self._set(spec.name, VoiceStatus(
                "installed", spec.required, size, spec.sha256.model, spec.sha256.config,
                fingerprint=spec.fingerprint(), installed_at=now, updated_at=now))
            return True
        return False

    def _installed_size(self, name: str, engine: str) -> int | None:
        """Bytes of the voice's files in the volume; None when any is missing.

        Raises OSError when a file goes while it is measured.
        """
        if engine == "kokoro":
            kokoro = installed_kokoro(self.dest, name)
            if kokoro is None or not (kokoro.model.is_file() and kokoro.style.is_file()):
                return None
            return kokoro.size
        if engine == "xtts":
            xtts = installed_xtts(self.dest, name)
            try:
                return None if xtts is None else xtts.size
            except FileNotFoundError:
                return None
        files = voice_files(self.dest, name)
        if not (files.model.is_file() and files.config.is_file()):
            return None
        return files.model.stat().st_size + files.config.stat().st_size

    def install(self, spec: DesiredVoice) -> VoiceStatus:
        """Make ``spec`` installed (or record why not); never raises for source faults."""
        previous = self.status.voices.get(spec.name)
        if self._is_current(spec):
            current = self.status.voices[spec.name]
            if (current.required != spec.required or current.error is not None
                    or current.unwanted_since is not None or current.serving_previous):
                self._set(spec.name, current.with_(required=spec.required, error=None,
                                                   state="installed", unwanted_since=None,
                                                   serving_previous=False))
            return self.status.voices[spec.name]
        base = (previous or VoiceStatus("pending", spec.required)).with_(unwanted_since=None)
        attempts = 0
        delay = self.settings.backoff_s
        while True:
            attempts += 1
            kept = self._keeps_previous(spec.name, base)
            self._set(spec.name, base.with_(state="downloading", required=spec.required,
                                            attempts=attempts, serving_previous=kept))
            outcome = self._attempt(spec, attempts)
            if isinstance(outcome, VoiceInstallError):
                kept = self._keeps_previous(spec.name, base)
                message = outcome.message
                if kept:
                    message += (f"; the copy installed at {base.installed_at} stays "
                                "installed and is still served")
                failed = base.with_(state="failed", required=spec.required, error=message,
                                    attempts=attempts, serving_previous=kept)
                self._set(spec.name, failed)
                if not outcome.transient or attempts > self.settings.retries:
                    return failed
                self._sleep(delay)
                delay = min(delay * 2, self.settings.max_backoff_s)
                continue
            self._set(spec.name, outcome)
            _LOGGER.info("voice %s installed (%d bytes)", spec.name, outcome.bytes or 0)
            return outcome

    def _keeps_previous(self, name: str, known: VoiceStatus) -> bool:
        """True when the copy ``known`` records is still in the volume, whole by size.

        A failed update leaves it in place (install.py commits nothing until both new
        files are verified), but a commit that failed half-way or a hand edit may not.
        """
        if known.installed_at is None or known.bytes is None:
            return False
        engine = ("kokoro" if installed_kokoro(self.dest, name) is not None
                  else "xtts" if entry_path(self.dest, name).is_file() else "piper")
        try:
            return self._installed_size(name, engine) == known.bytes
        except OSError:
            return False

    def _attempt(self, spec: DesiredVoice, attempts: int) -> VoiceStatus | VoiceInstallError:
        """One try; every failure comes back as a value so the caller can retry or record."""
        try:
            return self._install_once(spec, attempts)
        except VoiceInstallError as err:
            _LOGGER.warning("voice %s: attempt %d failed: %s", spec.name, attempts, err.message)
            return err
        except Exception as err:  # a bug here must not stop the other voices
            _LOGGER.exception("voice %s: unexpected error", spec.name)
            return VoiceInstallError(f"{spec.name}: internal error: {err!r}")

    def _install_once(self, spec: DesiredVoice, attempts: int) -> VoiceStatus:
        if spec.engine == "xtts":
            xtts = install_xtts(self.dest, spec, self.settings.fetch, self._checkpoint_locks)
            now = utc_now()
            return VoiceStatus("installed", spec.required, xtts.size, xtts.model_sha256,
                               xtts.clip_sha256[0], None, attempts, spec.fingerprint(),
                               updated_at=now, installed_at=now)
        if spec.engine == "kokoro":
            done = install_kokoro(self.dest, spec, self.settings.fetch)
            now = utc_now()
            return VoiceStatus("installed", spec.required, done.size, done.model_sha256,
                               done.style_sha256, None, attempts, spec.fingerprint(),
                               updated_at=now, installed_at=now)
        staged = _fetch(spec, self.dest, self.settings.fetch)
        try:
            commit_voice(self.dest, spec.name, staged.model, staged.config)
        except BaseException:
            discard(staged.model, staged.config)
            raise
        now = utc_now()
        return VoiceStatus("installed", spec.required, staged.size, staged.model.sha256,
                           staged.config.sha256, None, attempts, spec.fingerprint(),
                           updated_at=now, installed_at=now)

    # --- a whole manifest -------------------------------------------------------------

    def converge(self, manifest: Manifest, *, required_only: bool = False) -> SyncReport:
        """Install every voice of ``manifest`` that is missing or changed; one pass.

        ``required_only`` installs just the required voices and prunes nothing: the init
        container's quick path, so a pod starts as soon as its default voice is there
        and the sidecar brings the rest (and does the pruning) while the server runs.
        """
        wanted = tuple(v for v in manifest.voices if v.required or not required_only)
        if not wanted:
            if not required_only:
                self.prune(manifest)
            return SyncReport({})
        with ThreadPoolExecutor(max_workers=max(1, self.settings.parallel),
                                thread_name_prefix="voice-sync") as pool:
            results = list(pool.map(self.install, wanted))
        report = SyncReport({spec.name: st for spec, st in zip(wanted, results, strict=True)})
        if not required_only:
            self.prune(manifest)
        if report.failed:
            _LOGGER.warning("sync: %d of %d voice(s) not installed: %s", len(report.failed),
                        len(report.voices), ", ".join(report.failed))
        return report

    # --- voices that left the manifest ------------------------------------------------

    def prune(self, manifest: Manifest) -> list[str]:
        """Delete managed voices that have been out of ``manifest`` past the grace period.

        Only voices this manager installed (they have a status entry) are candidates;
        files someone put there by hand are never touched, nor voices in ``keep``.
        The model goes first, so the server stops listing the voice before its config
        disappears (a Kokoro or XTTS voice: its entry first, and a model or checkpoint
        only once no voice names it). Returns the names removed.
        """
        grace = self.settings.remove_after_s
        desired = {v.name for v in manifest.voices}
        removed = []
        for name, status in sorted(self.status.voices.items()):
            if name in desired or name in self.settings.keep:
                continue
            if status.unwanted_since is None:
                self._set(name, status.with_(unwanted_since=utc_now()))
                status = self.status.voices[name]
            if grace is None or _age_s(status.unwanted_since) < grace:
                continue
            files = voice_files(self.dest, name)
            try:
                remove_kokoro(self.dest, name)
                remove_xtts(self.dest, name)
                files.model.unlink(missing_ok=True)
                files.config.unlink(missing_ok=True)
            except OSError as err:
                _LOGGER.error("voice %s: cannot remove: %s", name, err)
                self._set(name, status.with_(error=f"cannot remove: {err}"))
                continue
            with self._lock:
                voices = {k: v for k, v in self.status.voices.items() if k != name}
                self.status = VolumeStatus(voices, self.status.manifest_error)
                self._write_status()
            _LOGGER.info("voice %s removed: not in the manifest for %g s", name, grace)
            removed.append(name)
        collect_models(self.dest)
        collect_checkpoints(self.dest, {v.source.checkpoint.name for v in manifest.voices
                                        if isinstance(v.source, XttsSource)})
        return removed


def _age_s(timestamp: str | None) -> float:
    if timestamp is None:
        return 0.0
    try:
        return (datetime.now(UTC) - parse_time(timestamp)).total_seconds()
    except ValueError:
        return 0.0
