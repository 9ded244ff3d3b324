"""Sidecar mode: watch the manifest file and converge whenever it changes.

The manifest is polled by content, not by inotify or mtime alone: a ConfigMap volume
updates by swapping the ``..data`` symlink, so the watched path's own inode and mtime
may never change, while opening the path by name always reads the current target.
A manifest that fails to parse is reported in the status file and otherwise ignored:
the last good manifest stays in force. Voices that failed are retried on a slower
timer so a source that was down comes back without a manifest edit.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from chorus.common.manifest import Manifest, ManifestError, load_manifest

from .sync import SyncReport, VolumeSyncer

__all__ = ["ManifestWatcher", "read_manifest"]

_LOGGER = logging.getLogger(__name__)


def read_manifest(path: Path) -> tuple[bytes, Manifest]:
    """Read and parse ``path``; unreadable files are a :class:`ManifestError` too."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ManifestError(f"cannot read manifest {path}: {err.strerror or err}") from err
    return raw, load_manifest(raw)


@dataclass
class ManifestWatcher:
    """Polls ``path`` every ``poll_s`` seconds and re-converges on change or for retries."""

    path: Path
    syncer: VolumeSyncer
    poll_s: float = 5.0
    retry_s: float = 60.0

    def __post_init__(self) -> None:
        self.manifest: Manifest | None = None
        self.last_report: SyncReport | None = None
        self._digest: str | None = None
        self.passes = 0
        """Sync passes run so far (for metrics)."""
        self.running = False
        """True while :meth:`run` loops (for the health check)."""
        self.busy = False
        """True during a sync pass (a stop then has to interrupt downloads)."""

    def poll(self) -> bool:
        """Check the file once; converge when it changed. True when a pass ran."""
        try:
            raw = self.path.read_bytes()
        except OSError as err:
            return self._bad(f"cannot read manifest {self.path}: {err.strerror or err}", None)
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._digest:
            return False
        try:
            manifest = load_manifest(raw)
        except ManifestError as err:
            return self._bad(str(err), digest)
        self._digest = digest
        self.manifest = manifest
        self.syncer.set_manifest_error(None)
        _LOGGER.info("manifest %s: %d voice(s); converging", self.path, len(manifest.voices))
        self._converge(manifest)
        return True

    def _bad(self, error: str, digest: str | None) -> bool:
        if digest is None or digest != self._digest:
            kept = "keeping the last good manifest" if self.manifest else "no manifest yet"
            _LOGGER.error("%s (%s)", error, kept)
        self._digest = digest
        self.syncer.set_manifest_error(error)
        return False

    def retry_failed(self) -> bool:
        """Run another pass when the last one left voices uninstalled."""
        if self.manifest is None or self.last_report is None or not self.last_report.failed:
            return False
        self._converge(self.manifest)
        return True

    def _converge(self, manifest: Manifest) -> None:
        self.busy = True
        try:
            self.last_report = self.syncer.converge(manifest)
        finally:
            self.busy = False
            self.passes += 1

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set."""
        since_retry = 0.0
        self.running = True
        try:
            while not stop.is_set():
                if self.poll():
                    since_retry = 0.0
                elif since_retry >= self.retry_s:
                    self.retry_failed()
                    since_retry = 0.0
                if self.manifest is not None:
                    self.syncer.prune(self.manifest)  # grace periods end between edits
                stop.wait(self.poll_s)
                since_retry += self.poll_s
        finally:
            self.running = False
