"""Voices installed on their first request (``--download-voices``), for one-host setups.

Next to its installed voices the server then offers the voices of a catalog, and a
request for one of them installs it first, as wyoming-piper does. Where the voices come
from and how they are checked is not the server's business (it imports no voice
manager): ``chorus serve`` hands it a :class:`VoiceInstaller`, the voice manager's
catalog and verified, atomic download behind this small seam. What the server keeps
here is what only it knows:

* which voices are offered: the catalog's, less those installed (an installed voice is
  described from its own files, and a voice installed by hand or by a sidecar simply
  stops being offered);
* one download per voice, however many requests wait for it, in a worker thread so the
  event loop keeps serving; a client that leaves does not stop the download others wait
  for;
* the voice store rescanned as soon as the files are in place, so the request that
  caused the download speaks with the voice instead of waiting for the next rescan.

Only a voice asked for by name is installed; a request by language picks among the
installed voices, as before (a language would otherwise choose a download).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from chorus.common.sizes import human_size

from .errors import VoiceUnavailable
from .voices import VoiceStore

__all__ = ["OfferedVoice", "OnDemandVoices", "VoiceInstaller"]

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfferedVoice:
    """A voice not installed yet that a request may name (a catalog entry)."""

    name: str
    language: str
    """Locale code, e.g. ``en_US``."""
    language_name: str
    """The language's English name, e.g. ``English``."""
    country: str
    quality: str
    num_speakers: int
    speakers: tuple[str, ...]
    """Speaker names in speaker-id order; empty for single-speaker voices."""
    size: int
    """Bytes to download."""

    @property
    def description(self) -> str:
        """As an installed Piper voice describes itself, plus what the first request costs
        (Home Assistant shows it as the voice's name)."""
        dataset = self.name.split("-")[1] if self.name.count("-") == 2 else self.name
        return (f"{self.language_name} ({self.country}): {dataset}, {self.quality} "
                f"(downloaded on first use, {human_size(self.size)})")


class VoiceInstaller(Protocol):
    """Where offered voices come from; ``chorus serve`` passes one with
    ``--download-voices``."""

    def offered(self) -> Sequence[OfferedVoice]:
        """Every voice it can install (installed ones included; the server filters)."""
        ...

    def install(self, name: str) -> None:
        """Install voice ``name`` into a voices directory of the store, verified and
        atomically (a failure leaves nothing behind). Blocks: it runs in a worker thread.

        Raises :class:`~chorus.server.errors.VoiceDownloadFailed` saying why.
        """
        ...


class OnDemandVoices:
    """The offered voices of one server, and their installation on first request."""

    def __init__(self, installer: VoiceInstaller, store: VoiceStore) -> None:
        self._installer = installer
        self._store = store
        self._catalog = {voice.name: voice for voice in installer.offered()}
        self._installing: dict[str, asyncio.Task[None]] = {}

    def offered(self) -> list[OfferedVoice]:
        """Voices a request may name that are not installed yet, sorted by name."""
        installed = {spec.name for spec in self._store.installed()}
        return [voice for name, voice in sorted(self._catalog.items())
                if name not in installed]

    def get(self, name: str) -> OfferedVoice | None:
        """The offered voice ``name``, unless it is installed (or unknown)."""
        if any(spec.name == name for spec in self._store.installed()):
            return None
        return self._catalog.get(name)

    async def ensure(self, name: str | None) -> None:
        """Install ``name`` first when it is offered and not installed; otherwise do
        nothing (an unknown name is the store's to refuse)."""
        if not name or self.get(name) is None:
            return
        task = self._installing.get(name)
        if task is None:
            task = asyncio.create_task(self._install(name), name=f"install-voice-{name}")
            self._installing[name] = task
            task.add_done_callback(self._finished)
        await asyncio.shield(task)

    def _finished(self, task: asyncio.Task[None]) -> None:
        for name, running in list(self._installing.items()):
            if running is task:
                del self._installing[name]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter got it, and maybe none is left

    async def _install(self, name: str) -> None:
        voice = self._catalog[name]
        loop = asyncio.get_running_loop()
        started = loop.time()
        _LOGGER.info("Installing voice %s on its first request (%s to download)", name,
                     human_size(voice.size))
        try:
            await asyncio.to_thread(self._installer.install, name)
        except Exception as err:
            _LOGGER.warning("Voice %s was not installed: %s", name,
                            getattr(err, "message", None) or repr(err))
            raise
        await self._store.refresh()
        if self.get(name) is not None:
            raise VoiceUnavailable(f"voice {name!r} was downloaded but cannot be used "
                                   "(see the server log)")
        _LOGGER.info("Voice %s installed in %.1f s", name, loop.time() - started)

    async def install_default(self, name: str | None) -> None:
        """Before start: install the default voice when it is offered, not installed."""
        await self._store.refresh()
        await self.ensure(name)
