"""The engine interface: what the voice store and scheduler need from any TTS engine.

An engine reads a voice's metadata cheaply (for listings) and loads it into a
:class:`LoadedVoice`. A loaded voice splits text into *units* (a sentence or part of
one) and renders a unit to 16-bit PCM. The scheduler calls :meth:`LoadedVoice.start`
for each unit: it returns the whole unit's audio, or, for a voice that streams below
sentence level, :class:`Windows` whose audio is rendered one window per call, each call
a scheduler unit of its own. An autoregressive voice, which can neither render a window
out of order nor say how long one will be, answers with :class:`Chunks` instead: a
sequential stream the scheduler pulls one chunk per call, in order. ``start``,
``render``, ``Windows.render`` and ``Chunks.next`` are called from several worker
threads at once and must be thread-safe; ``prepare`` is cheap but not free, so it also
runs off the event loop.

A request that ends early (its client left, it failed) should not leave model calls
running for nobody: ``start`` and ``render`` take the job's :class:`StopSignal`, and an
engine that can interrupt a call in progress stops it when the signal fires, raising
:class:`Cancelled`. Windows are stopped by the signal given to the ``start`` that made
them.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "PCM",
    "BlendsVoices",
    "Cancelled",
    "Chunks",
    "Engine",
    "LoadedVoice",
    "ReportsBackends",
    "StopSignal",
    "SynthesisParams",
    "Unit",
    "VoiceConfigError",
    "VoiceSpec",
    "Windows",
]

PCM = npt.NDArray[np.int16]
"""Mono 16-bit samples at the voice's sample rate."""

Unit = Sequence[int]
"""One model call's input (for Piper: phoneme ids)."""


class VoiceConfigError(ValueError):
    """A voice's files are present but unusable (bad JSON, missing keys, bad model).

    ``files``: the files the verdict rests on, so that the store reads the voice again
    when one of them changes (or appears); empty means its entry file alone.
    """

    def __init__(self, message: str, files: Sequence[Path] = ()) -> None:
        super().__init__(message)
        self.files = tuple(files)


class Cancelled(Exception):
    """A model call stopped part-way because its :class:`StopSignal` fired."""


class StopSignal:
    """Set once when nobody wants a job's audio any more; thread-safe.

    Engines hook a callback for the length of each model call (:meth:`hooked`), so a
    call already running is told to stop, and hooks never outlive their call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._hooks: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Fire: run every hooked callback once (outside the lock; they may be slow)."""
        with self._lock:
            if self._set:
                return
            self._set = True
            hooks, self._hooks = list(self._hooks.values()), {}
        for hook in hooks:
            hook()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the signal has fired."""
        if self._set:
            raise Cancelled("the request ended")

    @contextmanager
    def hooked(self, callback: Callable[[], None]) -> Iterator[None]:
        """Call ``callback`` when the signal fires while the block runs (at once if it
        has fired already)."""
        with self._lock:
            fired = self._set
            if not fired:
                key = next(self._ids)
                self._hooks[key] = callback
        if fired:
            callback()
        try:
            yield
        finally:
            if not fired:
                with self._lock:
                    self._hooks.pop(key, None)

    @property
    def hooks(self) -> int:
        """Callbacks hooked now (each belongs to a model call in progress)."""
        with self._lock:
            return len(self._hooks)


@dataclass(frozen=True)
class VoiceSpec:
    """What is known about an installed voice without loading its model."""

    name: str
    engine: str
    model_path: Path
    config_path: Path
    language: str
    """Language code as in the voice config, e.g. ``en_US``; for a voice that speaks
    several, the one it speaks unless a request asks for another."""
    sample_rate: int
    speakers: tuple[str, ...] = ()
    """Speaker names in id order (empty for single-speaker voices)."""
    num_speakers: int = 1
    quality: str | None = None
    description: str = ""
    version: str | None = None
    model_bytes: int = 0
    fingerprint: tuple[int, ...] = field(default=(), compare=True)
    """(mtime_ns, size) of each of :attr:`files`: a change means the voice must be
    reloaded."""
    files: tuple[Path, ...] = ()
    """Every file the voice is read from (empty: ``model_path`` and ``config_path``)."""
    blend: tuple[tuple[str, float], ...] = ()
    """For a per-request blend (:mod:`chorus.server.voice_blends`): its installed parts
    and their weights, summing to 1; empty for an installed voice."""
    languages: tuple[str, ...] = ()
    """Every language the voice speaks, :attr:`language` first (empty: that one alone).
    A request picks one by its ``language`` (:attr:`SynthesisParams.language`)."""

    @property
    def all_languages(self) -> tuple[str, ...]:
        return self.languages or (self.language,)

    @property
    def watched(self) -> tuple[Path, ...]:
        """The files whose change means the voice must be read again."""
        return self.files or (self.model_path, self.config_path)


@dataclass(frozen=True)
class SynthesisParams:
    """Per-request knobs; ``None`` means the voice's own default."""

    speaker_id: int | None = None
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w_scale: float | None = None
    sentence_silence: float | None = None
    """Seconds of silence after each sentence; added by the utterance, not the engine."""
    paragraph_silence: float | None = None
    """Seconds of silence after a paragraph, instead of the sentence's; the utterance's."""
    rate: float | None = None
    """Speaking rate as a multiple of the voice's (SSML ``prosody rate``), on top of
    ``length_scale``: 2.0 speaks twice as fast."""
    language: str | None = None
    """For a voice that speaks several languages (:attr:`VoiceSpec.languages`): the one
    the request asked for, as the voice spells it; ``None``: the voice's default."""


class Windows(Protocol):
    """A unit's audio in consecutive windows; concatenated, they are the unit's audio."""

    def __len__(self) -> int: ...

    def samples(self, index: int) -> int:
        """How many samples window ``index`` will have (known before rendering it)."""
        ...

    def cost(self, index: int) -> float:
        """Expected work of rendering window ``index``, in seconds of audio rendered
        whole: the window's own audio plus what it computes again around it (context),
        so that the scheduler's measured pace (seconds of work per such second) applies
        to small and large windows alike."""
        ...

    def render(self, index: int) -> PCM:
        """Audio of window ``index``; windows may be rendered in any order, concurrently."""
        ...


@runtime_checkable
class Chunks(Protocol):
    """A unit's audio as a sequential stream, for a voice that renders it in order and
    only knows it is done when it is (an autoregressive model): concatenated, the chunks
    are the unit's audio. The scheduler calls :meth:`next` once per work item, never two
    at once for one stream, from any worker thread; each call is a scheduler unit of its
    own, so other requests run between a stream's chunks. The stream is stopped by the
    signal given to the ``start`` that made it."""

    def next(self) -> PCM | None:
        """The next chunk of audio, or ``None`` once the unit is complete; raises
        :class:`Cancelled` once the stream's signal has fired."""
        ...

    def close(self) -> None:
        """Nobody will ask for more: release what the stream holds (called once, also
        after ``None`` or an error; idempotent)."""
        ...

    def cost(self) -> float:
        """Expected work of the next chunk in seconds of audio, for the scheduler's
        pace (as :meth:`Windows.cost`); a guess, since its size is known only after."""
        ...


@runtime_checkable
class ReportsBackends(Protocol):
    """A loaded voice that says what runs each of its graph parts (``/voices``, metrics)."""

    @property
    def backends(self) -> dict[str, Any]:
        """``{"parts": {part: {"backend", "precision", "snr_db", ...}}, ...}``: the
        backend and precision of each part and the quality gates' figures for it."""
        ...


class LoadedVoice(Protocol):
    """A voice whose model is resident and warmed up."""

    @property
    def spec(self) -> VoiceSpec: ...

    @property
    def memory_bytes(self) -> int:
        """Estimated resident memory, used by the store's LRU budget."""
        ...

    @property
    def streaming(self) -> bool:
        """Whether :meth:`start` answers with windows after a short first call. The
        scheduler then starts a unit only once the unit before it has answered, so that
        its ``lead`` counts all of that unit's audio."""
        ...

    def prepare(self, text: str) -> list[Unit]:
        """Split text into units, never longer than the engine's safe maximum."""
        ...

    def render(self, unit: Unit, params: SynthesisParams, stop: StopSignal | None = None,
               ) -> PCM:
        """Synthesize one unit whole. Thread-safe; :class:`Cancelled` once ``stop``
        fires."""
        ...

    def start(self, unit: Unit, params: SynthesisParams, lead: float = 0.0,
              stop: StopSignal | None = None) -> PCM | Windows | Chunks:
        """The unit's first model call: its whole audio, or its windows still to render
        (the same audio, sample for sample, in pieces), or a stream of its chunks (whose
        first chunk the scheduler pulls at once). Thread-safe. Once ``stop``
        fires, this call and the windows' renders raise :class:`Cancelled`.

        ``lead`` is how many seconds of audio the unit's first window may hold and still
        be ready before its listener needs it (0: the listener is waiting). Small windows
        exist for early audio and cost extra compute; a voice skips them when the lead
        allows."""
        ...


@runtime_checkable
class BlendsVoices(Protocol):
    """An engine whose voices can be mixed per request (:mod:`chorus.server.voice_blends`)."""

    def blend(self, spec: VoiceSpec, parts: Sequence[LoadedVoice]) -> LoadedVoice:
        """A voice speaking ``spec`` (whose ``blend`` gives the weights) from the loaded
        ``parts``, in that order. Cheap and without a model of its own: it reuses the
        parts' loaded model. Raises :class:`VoiceConfigError` when the parts cannot mix."""
        ...


class Engine(Protocol):
    """Factory for voices of one engine kind."""

    name: str

    def read_spec(self, config_path: Path, name: str) -> VoiceSpec:
        """Read the metadata of the voice declared by ``config_path`` (its entry file in
        the voices directory, :mod:`chorus.common.layout`); raises
        :class:`VoiceConfigError` when the voice is unusable."""
        ...

    def load(self, spec: VoiceSpec) -> LoadedVoice:
        """Load and warm the model; raises :class:`VoiceConfigError` on a broken model."""
        ...
