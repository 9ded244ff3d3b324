"""``chorus serve --download-voices``: the voice manager as the server's on-demand installer.

The server offers voices through a seam of its own (:class:`~chorus.server.on_demand.
VoiceInstaller`) and imports no voice manager; this module, above both, fills it with
the voice manager's parts, so a voice installed on first request is installed exactly
as ``chorus voices pull`` would install it:

* the catalog is the one ``chorus voices list`` reads (a refreshed copy, else the
  snapshot bundled with chorus);
* each voice comes from ``rhasspy/piper-voices`` (``HF_ENDPOINT`` names a mirror),
  checked against the hub's sha256 (LFS) or git blob id and the catalog's md5, staged
  under temp names and committed atomically into the first ``--voices-dir``; a failure
  leaves nothing of it there;
* download progress goes to the log, as in the voice manager's sidecar.

Installs run one at a time, each holding the voices directory's lock only while it
runs (so ``chorus voices pull`` into the same directory works between them; one that
overlaps fails fast and says why) and clearing the temp files an interrupted one left.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from chorus.common.layout import is_valid_voice_name
from chorus.common.manifest import DEFAULT_HF_REPO, DesiredVoice, HuggingFaceSource
from chorus.common.options import CommandError
from chorus.server.errors import VoiceDownloadFailed
from chorus.server.on_demand import OfferedVoice
from chorus.server.settings import ServerSettings
from chorus.voice_manager.catalog import Catalog, CatalogError, CatalogVoice, load_catalog
from chorus.voice_manager.progress import logged_progress
from chorus.voice_manager.sources import FetchSettings
from chorus.voice_manager.sync import SyncSettings, VolumeBusyError, VolumeSyncer

__all__ = ["CatalogInstaller", "build_installer"]

PROGRESS_INTERVAL = 5.0
"""Seconds between the log lines of a download in progress."""


def _offered(voice: CatalogVoice) -> OfferedVoice:
    return OfferedVoice(name=voice.key, language=voice.language,
                        language_name=voice.language_name, country=voice.country,
                        quality=voice.quality, num_speakers=voice.num_speakers,
                        speakers=voice.speakers, size=voice.size)


class CatalogInstaller:
    """Installs the catalog's voices from the hub into ``dest``, one at a time."""

    def __init__(self, dest: Path, catalog: Catalog, sync: SyncSettings) -> None:
        self.dest = dest
        self.catalog = catalog
        self._sync = sync
        self._one_at_a_time = threading.Lock()

    def offered(self) -> list[OfferedVoice]:
        """Catalog voices whose key can name files in a voices directory."""
        return [_offered(voice) for voice in self.catalog if is_valid_voice_name(voice.key)]

    def install(self, name: str) -> None:
        voice = self.catalog.get(name)
        if voice is None or not is_valid_voice_name(name):
            raise VoiceDownloadFailed(f"voice {name!r} is not in the voice catalog")
        spec = DesiredVoice(name, HuggingFaceSource(DEFAULT_HF_REPO, "main", voice.folder))
        with self._one_at_a_time:
            try:
                syncer = VolumeSyncer(self.dest, self._sync)
            except VolumeBusyError as err:
                raise VoiceDownloadFailed(f"voice {name!r} cannot be installed now: {err}; "
                                          "try again when it is done") from err
            except OSError as err:
                raise VoiceDownloadFailed(f"voice {name!r} cannot be installed in "
                                          f"{self.dest}: {err}") from err
            try:
                status = syncer.install(spec)
            finally:
                syncer.close()
        if status.state != "installed":
            raise VoiceDownloadFailed(f"voice {name!r} could not be downloaded: "
                                      f"{status.error}")


def build_installer(settings: ServerSettings) -> CatalogInstaller:
    """The installer for ``settings`` (``--download-voices``), or a ``CommandError`` saying
    what is missing before the server starts."""
    if not settings.voices_dirs:
        raise CommandError("--download-voices needs a --voices-dir to install voices into "
                           "(the first one is used)")
    try:
        import huggingface_hub  # noqa: F401 - the download needs it; say so at start
    except ImportError as err:
        raise CommandError("--download-voices needs the voice manager's dependencies: "
                           "pip install 'chorus-tts[server,voice-manager]'") from err
    dest = settings.voices_dirs[0]
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CommandError(f"--download-voices: cannot create {dest}: {err}") from err
    if not os.access(dest, os.W_OK | os.X_OK):
        raise CommandError(f"--download-voices: {dest} (the first --voices-dir) is not "
                           "writable")
    try:
        catalog = load_catalog()
    except CatalogError as err:
        raise CommandError(f"--download-voices: {err}") from err
    fetch = FetchSettings(progress=logged_progress(PROGRESS_INTERVAL), catalog=catalog)
    return CatalogInstaller(dest, catalog, SyncSettings(parallel=1, retries=2, backoff_s=1.0,
                                                        fetch=fetch))
