"""The voice store: which voices are installed, and which are resident in memory.

Installed voices come from voices directories in the shared layout
(:mod:`chorus.common.layout`), of every engine: each entry names its engine, and the
store hands it to that engine (:mod:`.engines.registry` says which are installed). A
voice whose engine is not installed is offered nowhere, with one log line per voice
naming the ``pip install`` that brings the engine. Directories are rescanned every
``rescan_interval`` seconds so voices a sidecar adds or removes appear and disappear
without a restart. Polling a directory listing is cheap, works on ConfigMap volumes,
NFS and overlay filesystems alike, and only re-reads a voice whose files' size or mtime
changed.

Resident voices are kept in an LRU under a memory budget; the default voice is
loaded and warmed before the server reports ready and is never evicted. A voice whose
files are broken is skipped with a log line until its files change; meanwhile it is
listed nowhere, and a request that names it gets ``voice-unavailable`` saying why (not
``unknown-voice``: its entry is there, and the fix is to its files, not to the request).

Preloaded voices (``preload``: names, or ``all``) are loaded in the background after
start and whenever one of them is installed later (a sidecar brings voices after the
server started), so their first request does not wait for a load (1.3-3.4 s measured
with Home Assistant). Preloading stops, with a warning, at the first load that would
push another voice out of the budget: a preload must never evict what is in use.

A name written as a blend (``af_bella(2)+af_sky(1)``, :mod:`.voice_blends`) resolves to
a per-request voice mixed from installed parts. Acquiring it acquires its parts (they
are resident voices like any other, under the budget) and asks their engine to mix
them; the last few blends are kept, with their scheduler pace, for as long as their
parts stay resident, so a blend never keeps an evicted model alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import errno
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

from chorus.common.layout import VoiceEntry, find_voice_entries, fingerprint_or_missing

from .describe_snapshot import ReadEntry, ScannedDirectory
from .engines.base import (
    BlendsVoices,
    Engine,
    LoadedVoice,
    ReportsDevice,
    VoiceConfigError,
    VoiceSpec,
)
from .engines.native_memory import release_memory
from .errors import UnknownSpeaker, UnknownVoice, VoiceUnavailable
from .voice_blends import blend_spec, is_blend_name, parse_blend

__all__ = ["VoiceStore"]

_LOGGER = logging.getLogger(__name__)


BLENDS_KEPT = 8
"""Blended voices kept for reuse (each one style array, about 0.5 MB for Kokoro)."""


def _normalize_language(code: str) -> str:
    return code.replace("-", "_").lower()


def _match_language(spec: VoiceSpec, language: str, *, exact: bool = False) -> str | None:
    """The first of the voice's languages that is ``language`` (``exact``) or of its
    family (``en_GB`` for ``en``, ``zh-cn`` for ``zh_TW``), or ``None``."""
    wanted = _normalize_language(language)
    for code in spec.all_languages:
        have = _normalize_language(code)
        if have == wanted or (not exact and have.split("_")[0] == wanted.split("_")[0]):
            return code
    return None


class VoiceStore:
    """Installed voices from directories, resident voices in an LRU."""

    def __init__(
        self,
        engine: Engine | Sequence[Engine],
        directories: Sequence[Path],
        default_voice: str | None = None,
        memory_budget: int = 1 << 30,
        rescan_interval: float = 1.0,
        preload: Sequence[str] = (),
        missing_engines: Mapping[str, str] | None = None,
    ) -> None:
        engines = [engine] if not isinstance(engine, Sequence) else list(engine)
        self._engines = {e.name: e for e in engines}
        self._missing_engines = dict(missing_engines or {})
        """Engine name -> the ``pip install`` that brings it, for its voices' log line."""
        self._reported_missing: set[tuple[str, Path]] = set()
        self._preload = tuple(preload)
        """Voice names to keep loaded ahead of requests; ``("all",)`` means every one."""
        self._preload_task: asyncio.Task[None] | None = None
        self._preload_full = False
        self._preloaded: set[tuple[str, tuple[int, ...]]] = set()
        """Voices (name, files) already preloaded once: evicted later, not loaded again."""
        self._evictions = 0
        self._directories = list(directories)
        self._requested_default = default_voice
        self._memory_budget = memory_budget
        self._rescan_interval = rescan_interval
        self._installed: dict[str, VoiceSpec] = {}
        self._spec_cache: dict[Path, tuple[tuple[Path, ...], tuple[int, ...],
                                           VoiceSpec | str]] = {}
        """Entry file -> the files read, their fingerprint, and the spec (a str: why the
        voice is unusable)."""
        self._refused: dict[str, str] = {}
        """Voices whose entry is there but cannot be read -> why."""
        self.scanned: list[ScannedDirectory] = []
        """What the last scan read, directory by directory (what the installed voices, and
        so ``describe``, rest on)."""
        self._broken: dict[str, tuple[tuple[int, ...], str]] = {}
        """Voices that failed to load -> the fingerprint of their files then, and why."""
        self._unreadable: dict[Path, str] = {}
        self._resident: OrderedDict[str, LoadedVoice] = OrderedDict()
        self._loading: dict[str, asyncio.Future[LoadedVoice]] = {}
        self._blends: OrderedDict[VoiceSpec, LoadedVoice] = OrderedDict()
        """Recently used blends, most recent last; only while all their parts are
        resident (:meth:`_forget_blends`)."""
        self._watch_task: asyncio.Task[None] | None = None
        self._refreshing = asyncio.Lock()
        """One rescan at a time: a scan that began before a voice was installed must not
        finish after one that began later and hide the voice again."""
        self.default_voice = ""

    # -- installed voices -------------------------------------------------------------

    def _scan(self) -> tuple[dict[str, VoiceSpec], dict[str, str], list[ScannedDirectory]]:
        """Read the directories (runs in a worker thread: it touches the filesystem):
        the usable voices, the unusable ones with why, and what was read for each entry
        (what the answer to ``describe`` rests on, :mod:`.describe_snapshot`)."""
        found: dict[str, VoiceSpec] = {}
        refused: dict[str, str] = {}
        scanned: list[ScannedDirectory] = []
        for directory in self._directories:
            try:
                listed = find_voice_entries(directory, report_unreadable=True)
            except OSError as err:
                self._note_unreadable(directory, err)
                scanned.append(ScannedDirectory(directory, (), readable=False))
                continue
            self._note_unreadable(directory, None)
            read: list[ReadEntry] = []
            for entry in listed:
                cached = self._scan_entry(entry, found, refused)
                read.append(ReadEntry(entry, *cached[:2]) if cached else ReadEntry(entry))
            scanned.append(ScannedDirectory(directory, tuple(read)))
        refused = {name: why for name, why in refused.items() if name not in found}
        return found, refused, scanned

    def _scan_entry(self, entry: VoiceEntry, found: dict[str, VoiceSpec],
                    refused: dict[str, str],
                    ) -> tuple[tuple[Path, ...], tuple[int, ...], VoiceSpec | str] | None:
        """Read one entry into ``found`` or ``refused``; what was read, or ``None`` when
        nothing was (its engine is missing, its name is taken, it went away)."""
        if entry.name in found:
            return None  # an earlier directory, or a Piper voice of that name, wins
        engine = self._engines.get(entry.engine)
        if engine is None:
            self._note_missing_engine(entry.name, entry.engine, entry.config)
            return None
        cached = self._spec_cache.get(entry.config)
        if cached is None or fingerprint_or_missing(cached[0]) != cached[1]:
            cached = self._read(engine, entry.config, entry.name)
            if cached is None:
                return None  # removed while scanning
            self._spec_cache[entry.config] = cached
        if isinstance(cached[2], str):
            refused.setdefault(entry.name, cached[2])
        else:
            found[entry.name] = cached[2]
        return cached

    @staticmethod
    def _read(engine: Engine, config: Path, name: str,
              ) -> tuple[tuple[Path, ...], tuple[int, ...], VoiceSpec | str] | None:
        """A voice's spec (or why it has none) with the files and fingerprint it was
        read from; ``None`` when its entry went away meanwhile."""
        try:
            spec = engine.read_spec(config, name)
        except VoiceConfigError as err:
            if not config.exists():
                return None
            # Once per change of its files: the result is cached by fingerprint.
            _LOGGER.error("Voice not offered: %s", err)
            files = err.files or (config,)
            return files, fingerprint_or_missing(files), str(err)
        return spec.watched, spec.fingerprint, spec

    def _note_missing_engine(self, name: str, engine: str, config: Path) -> None:
        """One WARNING per voice (entry file) whose engine is not installed."""
        if (engine, config) in self._reported_missing:
            return
        self._reported_missing.add((engine, config))
        hint = self._missing_engines.get(engine)
        how = f"{hint} adds it" if hint else "this server has no such engine"
        _LOGGER.warning("Voice %s not offered: its engine %s is not installed (%s); "
                        "entry %s", name, engine, how, config)

    def _note_unreadable(self, directory: Path, err: OSError | None) -> None:
        """An ERROR (once per errno) naming why ``directory`` cannot be listed, and an
        INFO when it can again (``err`` None). A missing directory is not an error: a
        volume may still be being mounted.
        """
        problem = None
        if err is not None:
            code = errno.errorcode.get(err.errno or 0, str(err.errno))
            problem = f"{code} ({err.strerror})"
        previous = self._unreadable.get(directory)
        if problem is None:
            if previous is not None:
                _LOGGER.info("Voices directory %s is readable again", directory)
                del self._unreadable[directory]
            return
        if problem != previous:
            _LOGGER.error("Voices directory %s cannot be read: %s; its voices are not "
                          "offered", directory, problem)
            self._unreadable[directory] = problem

    async def refresh(self) -> None:
        """Rescan the directories and forget resident voices whose files changed."""
        async with self._refreshing:
            await self._refresh()

    async def _refresh(self) -> None:
        found, self._refused, self.scanned = await asyncio.to_thread(self._scan)
        added = sorted(set(found) - set(self._installed))
        removed = sorted(set(self._installed) - set(found))
        if added:
            _LOGGER.info("Voices added: %s", ", ".join(added))
        if removed:
            _LOGGER.info("Voices removed: %s", ", ".join(removed))
        # Names only: a local reference to a voice would keep its sessions alive.
        unloaded = [name for name, voice in self._resident.items()
                    if found.get(name) != voice.spec]
        for name in unloaded:
            _LOGGER.info("Unloading voice %s: its files changed or went away", name)
            del self._resident[name]
        self._forget_blends()
        if unloaded:
            await asyncio.to_thread(release_memory)
        for name, (fingerprint, _) in list(self._broken.items()):
            if name not in found or found[name].fingerprint != fingerprint:
                del self._broken[name]
        self._installed = found

    def installed(self) -> list[VoiceSpec]:
        """Installed, usable voices sorted by name: exactly what ``describe`` lists."""
        return [spec for name, spec in sorted(self._installed.items())
                if name not in self._broken]

    def resident(self) -> list[LoadedVoice]:
        return list(self._resident.values())

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Scan, load and warm the default voice, then keep watching the directories."""
        await self.open()
        await self.warm()

    async def open(self) -> None:
        """Scan and choose the default voice, loading nothing: enough to describe the
        voices (the server opens its doors here, while the default voice warms)."""
        await self.refresh()
        voices = self.installed()
        if not voices:
            dirs = ", ".join(str(d) for d in self._directories) or "none given"
            raise VoiceUnavailable(f"no voices installed (voices directories: {dirs})")
        self.default_voice = self._requested_default or voices[0].name
        if self.default_voice not in self._installed:
            raise UnknownVoice(self._unknown_message(self.default_voice, "default voice"))

    async def warm(self) -> None:
        """Load and warm the default voice (a request for it meanwhile waits for this
        same load), then preload and keep watching the directories."""
        await self.acquire(self._installed[self.default_voice])
        missing = sorted(set(self._preload) - {"all"} - set(self._installed))
        if missing:
            _LOGGER.info("Voices to preload once installed: %s", ", ".join(missing))
        self._start_preloading()
        self._watch_task = asyncio.create_task(self._watch(), name="voice-store-watch")

    async def close(self) -> None:
        for task in (self._watch_task, self._preload_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._resident.clear()
        self._blends.clear()
        release_memory()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._rescan_interval)
            try:
                await self.refresh()
            except Exception:
                _LOGGER.exception("Voice rescan failed")
            else:
                self._start_preloading()

    # -- preloading ---------------------------------------------------------------------

    def _to_preload(self) -> list[VoiceSpec]:
        wanted = self._preload
        return [spec for spec in self.installed()
                if ("all" in wanted or spec.name in wanted)
                and spec.name not in self._resident and spec.name not in self._loading
                and (spec.name, spec.fingerprint) not in self._preloaded]

    def _start_preloading(self) -> None:
        if self._preload_full or not self._to_preload():
            return
        if self._preload_task is None or self._preload_task.done():
            self._preload_task = asyncio.create_task(self._preload_voices(),
                                                     name="voice-store-preload")

    async def _preload_voices(self) -> None:
        while not self._preload_full and (pending := self._to_preload()):
            spec = pending[0]
            self._preloaded.add((spec.name, spec.fingerprint))
            evictions = self._evictions
            try:
                await self.acquire(spec)
            except VoiceUnavailable:
                continue  # logged by the load; marked broken, so not tried again
            except Exception:
                _LOGGER.exception("Preloading voice %s failed", spec.name)
                return
            if self._evictions != evictions:
                self._preload_full = True
                _LOGGER.warning(
                    "Preloading stopped at voice %s: the voice memory budget (%d MB) is "
                    "full; raise --voice-memory-mb to keep more voices loaded", spec.name,
                    self._memory_budget // (1024 * 1024))
                return
            _LOGGER.info("Preloaded voice %s", spec.name)

    # -- selection ----------------------------------------------------------------------

    def _unusable(self, name: str) -> VoiceUnavailable | None:
        """The error for a voice that is installed but cannot be used, if ``name`` is one."""
        why = self._broken[name][1] if name in self._broken else self._refused.get(name)
        if why is None:
            return None
        return VoiceUnavailable(f"voice {name!r} is installed but cannot be used until its "
                                f"files change: {why}")

    def _unknown_message(self, name: str, what: str = "voice") -> str:
        names = [spec.name for spec in self.installed()]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"{what} {name!r} is not installed{hint} (installed: {', '.join(names)})"

    def resolve(self, name: str | None = None, language: str | None = None) -> VoiceSpec:
        """Pick a voice by name, else by language, else the default voice."""
        usable = {spec.name: spec for spec in self.installed()}
        if name:
            if name in usable:
                return usable[name]
            if is_blend_name(name):
                return self._resolve_blend(name, usable)
            raise self._unusable(name) or UnknownVoice(self._unknown_message(name))
        if language:
            exact = [s for s in usable.values() if _match_language(s, language, exact=True)]
            loose = exact or [s for s in usable.values() if _match_language(s, language)]
            if not loose:
                languages = sorted({code for s in usable.values() for code in s.all_languages})
                raise UnknownVoice(f"no installed voice speaks {language!r} "
                                   f"(installed languages: {', '.join(languages)})",
                                   param="language")
            # Prefer the default voice, then one already in memory, then by name.
            return min(loose, key=lambda s: (s.name != self.default_voice,
                                             s.name not in self._resident, s.name))
        if self.default_voice not in usable:
            raise self._unusable(self.default_voice) or UnknownVoice(
                self._unknown_message(self.default_voice, "default voice"))
        return usable[self.default_voice]

    def _resolve_blend(self, name: str, usable: Mapping[str, VoiceSpec]) -> VoiceSpec:
        blend = parse_blend(name)
        for part, _ in blend.parts:
            if part not in usable:
                raise self._unusable(part) or UnknownVoice(
                    self._unknown_message(part, f"voice blend {name!r}: voice"))
        blending = [n for n, engine in self._engines.items() if isinstance(engine, BlendsVoices)]
        return blend_spec(blend, [usable[part] for part, _ in blend.parts], blending)

    @staticmethod
    def spoken_language(spec: VoiceSpec, language: str | None) -> str | None:
        """The language a voice of several (:attr:`VoiceSpec.languages`) speaks for a
        request that asks for ``language``, as the voice spells it (``en-US`` -> ``en``);
        ``None`` for its default. A voice of one language ignores the request's, as it
        always has (Home Assistant sends its pipeline's with any voice); a voice of
        several that does not speak it is an ``unknown-voice`` error naming those it
        does."""
        if not language or len(spec.all_languages) < 2:
            return None
        found = (_match_language(spec, language, exact=True)
                 or _match_language(spec, language))
        if found is None:
            raise UnknownVoice(f"voice {spec.name!r} does not speak {language!r} (it speaks "
                               f"{', '.join(spec.all_languages)})", param="language")
        return found

    @staticmethod
    def speaker_id(spec: VoiceSpec, speaker: str | None) -> int | None:
        """Map a speaker name or numeric id to the voice's speaker id."""
        if speaker is None or speaker == "":
            return None
        if speaker in spec.speakers:
            return spec.speakers.index(speaker)
        # ASCII digits only: str.isdigit() is also true for '²', which int() refuses.
        if speaker.isascii() and speaker.isdigit() and int(speaker) < max(spec.num_speakers, 1):
            return int(speaker)
        known = ", ".join(spec.speakers) if spec.speakers else "only speaker 0"
        raise UnknownSpeaker(f"voice {spec.name!r} has no speaker {speaker!r} ({known})")

    # -- residency ----------------------------------------------------------------------

    async def acquire(self, spec: VoiceSpec) -> LoadedVoice:
        """The loaded voice for ``spec``, loading it in a thread when not resident."""
        if spec.blend:
            return await self._acquire_blend(spec)
        loaded = self._resident.get(spec.name)
        if loaded is not None and loaded.spec == spec:
            self._resident.move_to_end(spec.name)
            return loaded
        pending = self._loading.get(spec.name)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[spec.name] = pending
            try:
                loaded = await self._load(spec)
            except BaseException as err:
                pending.set_exception(err)
                pending.exception()  # mark retrieved: waiters, if any, re-raise it
                raise
            else:
                pending.set_result(loaded)
            finally:
                del self._loading[spec.name]
            return loaded
        return await asyncio.shield(pending)

    async def _acquire_blend(self, spec: VoiceSpec) -> LoadedVoice:
        """A blend's voice: its parts acquired (loaded, or marked recently used), then
        mixed by their engine unless a kept blend is at hand. A blend is kept only when
        its parts all stayed resident: one that pushed another out is not."""
        parts = [await self.acquire(self.resolve(name)) for name, _ in spec.blend]
        resident = all(self._resident.get(part.spec.name) is part for part in parts)
        kept = self._blends.get(spec)
        if kept is not None and resident:
            self._blends.move_to_end(spec)
            return kept
        engine = self._engines[spec.engine]
        if not isinstance(engine, BlendsVoices):  # resolve made sure; this is for the types
            raise VoiceUnavailable(f"voice blend {spec.name!r}: {spec.engine} cannot blend")
        try:
            blended = engine.blend(spec, parts)
        except VoiceConfigError as err:
            raise VoiceUnavailable(f"voice blend {spec.name!r} could not be made: "
                                   f"{err}") from err
        if resident:
            self._blends[spec] = blended
            while len(self._blends) > BLENDS_KEPT:
                self._blends.popitem(last=False)
        return blended

    def _forget_blends(self) -> None:
        """Drop kept blends whose parts are no longer all resident: a blend borrows its
        parts' model, which must go when they do."""
        for spec in [spec for spec in self._blends
                     if any(name not in self._resident for name, _ in spec.blend)]:
            del self._blends[spec]

    async def _load(self, spec: VoiceSpec) -> LoadedVoice:
        _LOGGER.info("Loading voice %s from %s", spec.name, spec.model_path)
        try:
            loaded = await asyncio.to_thread(self._engines[spec.engine].load, spec)
        except VoiceConfigError as err:
            _LOGGER.error("Voice %s is broken and will be skipped until its files "
                          "change: %s", spec.name, err)
            self._broken[spec.name] = (spec.fingerprint, str(err))
            raise VoiceUnavailable(f"voice {spec.name!r} could not be loaded: {err}") from err
        if isinstance(loaded, ReportsDevice):
            _LOGGER.info("Voice %s (%s) runs on %s", spec.name, spec.engine, loaded.device)
        if self._installed.get(spec.name) == spec:
            self._resident[spec.name] = loaded
            if self._evict(keep=spec.name):
                await asyncio.to_thread(release_memory)
        return loaded

    def _evict(self, keep: str) -> bool:
        """Drop least recently used voices until the budget holds; whether any went."""
        total = sum(v.memory_bytes for v in self._resident.values())
        evicted = False
        for name in list(self._resident):
            if total <= self._memory_budget:
                break
            if name in (keep, self.default_voice):
                continue
            total -= self._resident.pop(name).memory_bytes
            evicted = True
            self._evictions += 1
            _LOGGER.info("Evicted voice %s to stay under the memory budget", name)
        if evicted:
            self._forget_blends()
        return evicted
