"""The scheduler: worker threads render work items; the asyncio loop only hands them out.

The unit of work is a model call, not a request. Each request is a :class:`Job` whose
units (sentences, or parts of over-long ones) start in order of arrival into it: a
:class:`StartUnit` item. A voice that streams below sentence level answers a unit's
first call with the unit's *windows* (see :class:`~chorus.server.engines.base.Windows`);
each window is then a :class:`RenderWindow` item of its own, queued ahead of the job's
later units, and the worker that ran the first call goes straight on with window 0
(first audio should not wait in the queue again). Windows of one unit may render on
several workers at once; their audio still leaves in order.

A voice that renders a unit in order, unable to say ahead how long each piece will be (an
autoregressive model), answers with :class:`~chorus.server.engines.base.Chunks`: a
sequential stream. Each pull of it is a :class:`NextChunk` item; the worker that started
the unit pulls the first chunk at once, and each chunk, when done, queues the pull of the
next one ahead of the job's later units. Pulls of one stream never overlap, and the
job's next unit starts only once the stream is complete (its pulls would only slow the
sentence being heard). The end of a stream is a piece of no samples, the unit's last.

Who owns what: a :class:`Job` holds its queued items, its results and its listener's
account (audio given, when playing began), and takes and completes its own items; the
:class:`Scheduler` owns the worker threads, the one lock every job shares, the job list
and the choice of the next job. The lock is handed to each job when it is opened.

At most ``lookahead`` items of a job are rendered ahead of what its consumer has taken
(the piece the consumer waits for may always run), so one client can use every worker
while a slow reader cannot pile up audio.

**Whose turn.** When several jobs wait, a free worker takes the job with the least
*slack*: the seconds of audio its listener has in hand (the audio the job was given,
less the time since its first piece, as if played from then; a window's audio counts
from when it starts, a whole sentence's when it is done), less :data:`PLAYING_MARGIN`
once it is playing, less the time its next item is expected to take (the voice's
measured pace times the item's :meth:`~chorus.server.engines.base.Windows.cost`). Ties
go to the job with fewer items started, then the older job. A new request has no audio
and its first call is short, so it goes ahead of long requests already streaming,
unless one of those would otherwise run dry; long ones advance in step.

**Lead.** A streaming voice's unit starts only after the unit before it has answered
its first call, and is told how much audio its first window may hold and still be
ready in time (``lead``: the listener's audio in hand over :data:`PLAN_SAFETY` times the
pace), so the voice skips small windows nobody is waiting for.

Why these rules and these constants, with the runs that decided them:
``docs/scheduling.md``.

The number of jobs is bounded: when it is reached, :meth:`Scheduler.open` raises
:class:`~chorus.server.errors.Busy` at once instead of queueing without limit.

**Stopping.** Each job has a :class:`~chorus.server.engines.base.StopSignal`, set when
the job fails or is released before its end (client gone, request cancelled): model
calls of it still running stop part-way (a long sentence's call takes a second or more,
all of it for nobody), and the worker goes on with the next item. Those calls are
counted in :attr:`Scheduler.cancelled_calls`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .engines.base import (
    PCM,
    Cancelled,
    Chunks,
    LoadedVoice,
    StopSignal,
    SynthesisParams,
    Unit,
    Windows,
)
from .errors import Busy, ShuttingDown

__all__ = ["Job", "NextChunk", "Piece", "RenderWindow", "Scheduler", "StartUnit"]

_LOGGER = logging.getLogger(__name__)

PLAYING_MARGIN = 0.35
"""Seconds: a request whose listener is playing and has less audio in hand than this
beyond its next item's expected time goes before new requests (which have none)."""

PLAN_SAFETY = 3.0
"""A unit's first window is planned to take at most a third of the time its listener has
before it needs it: workers are shared, and the pace is a recent average, not a promise."""

PACE_WEIGHT = 0.2
"""Weight of each new observation in a voice's pace (an exponential moving average, so
it follows the machine's load)."""

LOOKAHEAD_PER_WORKER = 4
"""Default lookahead in items per worker: windows make many small items per sentence, and
with fewer a request's next sentence could fill the lookahead while its current one
waited; a window is at most a few hundred KB of samples."""


class Paces:
    """Wall seconds of rendering per second of audio rendered whole (a window's
    :meth:`~chorus.server.engines.base.Windows.cost`), per voice, as the workers measure
    it (so it includes whatever else the machine is doing)."""

    def __init__(self) -> None:
        self._paces: weakref.WeakKeyDictionary[LoadedVoice, float] = (
            weakref.WeakKeyDictionary())

    def get(self, voice: LoadedVoice) -> float | None:
        return self._paces.get(voice)

    def observe(self, voice: LoadedVoice, seconds: float, audio: float) -> None:
        if audio <= 0.0:
            return
        pace = seconds / audio
        old = self._paces.get(voice)
        self._paces[voice] = pace if old is None else (
            (1 - PACE_WEIGHT) * old + PACE_WEIGHT * pace)


class Piece(NamedTuple):
    """Audio of one work item: a whole unit, or one window of it."""

    unit: int
    """Index of the unit within the job."""
    pcm: PCM
    last: bool
    """The unit's last piece (silence after a sentence goes after this one)."""


@dataclass(frozen=True, eq=False)
class StartUnit:
    """A unit's first call: the voice answers with its audio, or with its windows.

    ``voice`` and ``params`` are the unit's own: most units speak with their job's, but
    SSML may switch the voice or the rate for part of a document.
    """

    unit: int
    text: Unit
    voice: LoadedVoice
    params: SynthesisParams

    @property
    def key(self) -> tuple[int, int]:
        """Where its audio goes: the unit's first piece."""
        return (self.unit, 0)


@dataclass(frozen=True, eq=False)
class RenderWindow:
    """One window of a unit whose first call answered windows."""

    unit: int
    index: int
    windows: Windows
    voice: LoadedVoice
    """The voice that answered the windows (its pace, its sample rate)."""

    @property
    def key(self) -> tuple[int, int]:
        return (self.unit, self.index)


@dataclass(frozen=True, eq=False)
class NextChunk:
    """The next pull of a unit whose first call answered a chunk stream."""

    unit: int
    index: int
    """The piece it renders (0: the stream's first chunk)."""
    chunks: Chunks
    voice: LoadedVoice

    @property
    def key(self) -> tuple[int, int]:
        return (self.unit, self.index)


Item = StartUnit | RenderWindow | NextChunk
Result = PCM | BaseException
Outcome = PCM | Windows | Chunks | BaseException | None
"""What a work item gave: audio, a unit's windows or chunk stream, a failure, or (from
a :class:`NextChunk`) ``None``: the stream is complete."""

_OPEN = 1 << 62
"""The piece count of a unit whose chunk stream is still going: none of its pieces is
the last until the stream ends."""


class Job:
    """One request's units and their audio, in order. Created by :meth:`Scheduler.open`.

    The event loop adds units and reads pieces; a worker takes an item
    (:meth:`take`), runs it outside the lock (:meth:`run`) and completes it
    (:meth:`complete`). Methods marked "lock held" expect the caller to hold ``lock``.
    """

    def __init__(self, lock: threading.Condition, voice: LoadedVoice,
                 params: SynthesisParams, arrival: int,
                 on_finish: Callable[[Job], None]) -> None:
        self.voice = voice
        self.params = params
        self.lock = lock
        """The scheduler's lock, shared by every job: workers pick among all of them."""
        self._on_finish = on_finish
        self._arrival = arrival
        self._pending: deque[Item] = deque()
        self._units = 0
        self._started = 0
        self._service = 0.0
        """Seconds of audio this job was given (see the module docstring)."""
        self._first_at: float | None = None
        """When its first piece was ready (``time.monotonic``)."""
        self._in_flight = 0
        self._results: dict[tuple[int, int], Result] = {}
        self._counts: dict[int, int] = {}
        """Pieces per unit, known once its first call returned."""
        self._unit = 0
        self._window = 0
        """The consumer's position: the next piece it takes."""
        self._closed = False
        self._done = False
        self._error: BaseException | None = None
        self._wakeup = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.stop = StopSignal()
        """Fires when the job fails or is released: its model calls stop part-way."""

    # Called on the event loop ---------------------------------------------------------

    def add_units(self, units: Iterable[Unit], voice: LoadedVoice | None = None,
                  params: SynthesisParams | None = None) -> None:
        """Queue units, spoken with the job's voice and params unless others are given."""
        voice, params = voice or self.voice, params or self.params
        with self.lock:
            for unit in units:
                self._pending.append(StartUnit(self._units, unit, voice, params))
                self._units += 1
            self.lock.notify_all()

    def close(self) -> None:
        """No more units will be added."""
        with self.lock:
            self._closed = True
        self._wakeup.set()

    def fail(self, error: BaseException) -> None:
        """Stop the job; the consumer raises ``error`` at its next read."""
        with self.lock:
            self._error = error
            self._drop_pending()
        self.stop.set()
        self._wakeup.set()

    def finish(self) -> None:
        """Release the job's slot (always called, also when the consumer gave up)."""
        self._on_finish(self)

    async def pieces(self) -> AsyncIterator[Piece]:
        """Rendered pieces in order, as soon as each is ready."""
        while True:
            piece: Piece | None = None
            failure: BaseException | None = None
            with self.lock:
                if self._error is not None:
                    raise self._error
                item = self._results.pop((self._unit, self._window), None)
                if item is not None:
                    unit = self._unit
                    last = self._window + 1 >= self._counts.get(unit, 1)
                    if last:
                        self._unit += 1
                        self._window = 0
                    else:
                        self._window += 1
                    self.lock.notify()  # lookahead room for this job
                    if isinstance(item, BaseException):
                        failure = item
                    else:
                        piece = Piece(unit, item, last)
                elif self._closed and not self._pending and self._unit >= self._units:
                    return
                else:
                    self._wakeup.clear()
            if failure is not None:
                raise failure
            if piece is None:
                await self._wakeup.wait()
            else:
                yield piece

    async def audio(self) -> AsyncIterator[PCM]:
        """Rendered audio in order (whole units, or their windows), as soon as ready."""
        async for piece in self.pieces():
            yield piece.pcm

    # Called by the scheduler and its workers, lock held --------------------------------

    @property
    def queued(self) -> int:
        """Items waiting for a worker."""
        return len(self._pending)

    def end(self) -> None:
        """The job's slot is released: nothing more runs or is kept for it."""
        self._done = True
        self._drop_pending()
        self._results.clear()

    def runnable(self, lookahead: int) -> bool:
        if not self._pending or self._done:
            return False
        head = self._pending[0]
        if (isinstance(head, StartUnit) and head.unit > 0
                and head.unit - 1 not in self._counts and head.voice.streaming):
            # The unit before is still in its first call: its audio is not counted in
            # ``ahead`` yet, and this unit would be planned as if its listener waited.
            return False
        if isinstance(head, StartUnit) and self._counts.get(head.unit - 1) == _OPEN:
            # The unit before is a chunk stream still going (its next pull in flight).
            return False
        if self._in_flight + len(self._results) < lookahead:
            return True
        # Results of later units may fill the lookahead while the piece the consumer
        # waits for is still queued (a short sentence finished before a long one's
        # windows): that piece may always run, or nobody would ever take one again.
        return head.key == (self._unit, self._window)

    @property
    def next_voice(self) -> LoadedVoice:
        """The voice of the next queued item (whose pace predicts its cost)."""
        return self._pending[0].voice if self._pending else self.voice

    def priority(self, now: float, pace: float | None) -> tuple[float, int, int]:
        """Lowest first: slack, then items started, then arrival (module docstring)."""
        return (self._slack(now, pace), self._started, self._arrival)

    def take(self, now: float, pace: float | None) -> tuple[Item, float]:
        """The next item for a worker, and the lead a unit started now is given."""
        item = self._pending.popleft()
        if isinstance(item, RenderWindow):
            self._service += item.windows.samples(item.index) / _rate(item.voice)
        lead = self._lead(now, pace)
        self._started += 1
        self._in_flight += 1
        return item, lead

    def work(self, item: Item, result: Outcome) -> float:
        """What a finished call rendered, in seconds of audio rendered whole (the unit
        of :class:`Paces`); 0 when it rendered no audio."""
        if not isinstance(result, np.ndarray):
            return 0.0
        if isinstance(item, StartUnit | NextChunk):
            return len(result) / _rate(item.voice)
        return item.windows.cost(item.index)

    def complete(self, item: Item, result: Outcome) -> Item | None:
        """Keep a finished call's result; when it answered windows, queue them and
        return the first for the same worker to render at once (likewise the first pull
        of a chunk stream)."""
        if isinstance(item, NextChunk):
            self._chunk_done(item, result)
            return None
        if isinstance(result, np.ndarray | BaseException):
            if isinstance(item, StartUnit):
                self._counts[item.unit] = 1
                if isinstance(result, np.ndarray):
                    self._service += len(result) / _rate(item.voice)
            self._deliver(item.key, result)
            return None
        if not isinstance(item, StartUnit) or result is None:
            raise TypeError("only a unit's first call answers windows or chunks")
        if isinstance(result, Chunks):
            return self._open_chunks(item, result)
        return self._expand(item, result)

    # Called outside the lock ----------------------------------------------------------

    def run(self, item: Item, lead: float) -> Outcome:
        """Render one item; a failure is returned, to reach the consumer in order."""
        try:
            if isinstance(item, StartUnit):
                return item.voice.start(item.text, item.params, lead, self.stop)
            if isinstance(item, NextChunk):
                return item.chunks.next()
            return item.windows.render(item.index)
        except Cancelled as err:
            return err
        except Exception as err:
            _LOGGER.exception("Rendering a unit of voice %s failed", item.voice.spec.name)
            return err

    # Internals, lock held ---------------------------------------------------------------

    def _deliver(self, key: tuple[int, int], result: Result) -> None:
        self._in_flight -= 1
        if key == (0, 0) and self._first_at is None:
            self._first_at = time.monotonic()
        if not self._done:
            self._results[key] = result
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def _slack(self, now: float, pace: float | None) -> float:
        """:meth:`_in_hand`, less the expected time of the next item (see the module
        docstring; a unit's first call counts as quick)."""
        head = self._pending[0]
        if pace is None or isinstance(head, StartUnit):
            return self._in_hand(now)
        if isinstance(head, NextChunk):
            return self._in_hand(now) - pace * head.chunks.cost()
        return self._in_hand(now) - pace * head.windows.cost(head.index)

    def _lead(self, now: float, pace: float | None) -> float:
        """Seconds of audio a unit started now may put in its first window."""
        if pace is None or pace <= 0.0:
            return 0.0
        return max(0.0, self._ahead(now)) / (PLAN_SAFETY * pace)

    def _ahead(self, now: float) -> float:
        """Seconds of audio given and not yet played (negative: it ran dry)."""
        if self._first_at is None:
            return self._service
        return self._service - (now - self._first_at)

    def _in_hand(self, now: float) -> float:
        """:meth:`_ahead`, less :data:`PLAYING_MARGIN` once its listener is playing."""
        margin = 0.0 if self._first_at is None else PLAYING_MARGIN
        return self._ahead(now) - margin

    def _expand(self, item: StartUnit, windows: Windows) -> RenderWindow | None:
        """Queue a unit's windows; the first is returned for the calling worker to
        render at once (``None`` if the job is over or the unit has no audio)."""
        count = len(windows)
        self._counts[item.unit] = max(1, count)
        if self._done or self._error is not None:
            self._in_flight -= 1
            return None
        if count == 0:
            self._deliver(item.key, np.zeros(0, dtype=np.int16))
            return None
        # Queued in order: after the windows of earlier units, before later units.
        at = next((i for i, queued in enumerate(self._pending) if queued.unit > item.unit),
                  len(self._pending))
        for index in range(count - 1, 0, -1):
            self._pending.insert(at, RenderWindow(item.unit, index, windows, item.voice))
        self._started += 1
        self._service += windows.samples(0) / _rate(item.voice)
        return RenderWindow(item.unit, 0, windows, item.voice)


    def _open_chunks(self, item: StartUnit, chunks: Chunks) -> NextChunk | None:
        """A unit answered a chunk stream: its first pull, for the calling worker to run
        at once (``None``, the stream closed, if the job is over)."""
        self._counts[item.unit] = _OPEN
        if self._done or self._error is not None:
            self._in_flight -= 1
            chunks.close()
            return None
        self._started += 1
        return NextChunk(item.unit, 0, chunks, item.voice)

    def _chunk_done(self, item: NextChunk, result: Outcome) -> None:
        """Keep a chunk and queue the stream's next pull ahead of the job's later units;
        at the stream's end (``None``) or a failure, that piece is the unit's last."""
        if isinstance(result, np.ndarray):
            self._service += len(result) / _rate(item.voice)
            self._deliver(item.key, result)
            if self._done or self._error is not None:
                item.chunks.close()
                return
            at = next((i for i, queued in enumerate(self._pending)
                       if queued.unit > item.unit), len(self._pending))
            self._pending.insert(at, NextChunk(item.unit, item.index + 1, item.chunks,
                                               item.voice))
            return
        item.chunks.close()
        self._counts[item.unit] = item.index + 1
        if isinstance(result, BaseException):
            self._deliver(item.key, result)
        else:
            self._deliver(item.key, np.zeros(0, dtype=np.int16))
        return

    def _drop_pending(self) -> None:
        """Forget queued items, closing the chunk streams they would have pulled."""
        for item in self._pending:
            if isinstance(item, NextChunk):
                item.chunks.close()
        self._pending.clear()


def _rate(voice: LoadedVoice) -> float:
    return float(voice.spec.sample_rate or 1)


class Scheduler:
    """A fixed pool of worker threads shared by every job of every front door."""

    def __init__(self, workers: int, max_jobs: int = 64, lookahead: int | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.max_jobs = max_jobs
        self.lookahead = lookahead or LOOKAHEAD_PER_WORKER * workers
        self._cond = threading.Condition()
        self._jobs: list[Job] = []
        self._arrivals = itertools.count()
        self._threads: list[threading.Thread] = []
        self.paces = Paces()
        self._busy = 0
        self.reserved = 0
        """Requests waiting in a connection's backlog; they count against ``max_jobs``."""
        self._accepting = True
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.cancelled_calls = 0
        """Model calls stopped part-way because their job ended (a counter)."""

    @property
    def busy_workers(self) -> int:
        return self._busy

    @property
    def active_jobs(self) -> int:
        return len(self._jobs)

    @property
    def queued_units(self) -> int:
        """Work items (units and windows) waiting for a worker."""
        with self._cond:
            return sum(job.queued for job in self._jobs)

    def start(self) -> None:
        for number in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"chorus-worker-{number}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def open(self, voice: LoadedVoice, params: SynthesisParams) -> Job:
        """A new job, or :class:`Busy` when ``max_jobs`` are already active."""
        with self._cond:
            if not self._accepting:
                raise ShuttingDown("the server is shutting down")
            self._check_room()
            job = Job(self._cond, voice, params, next(self._arrivals), self._release)
            self._jobs.append(job)
            self._idle.clear()
            return job

    def _check_room(self) -> None:
        if len(self._jobs) + self.reserved >= self.max_jobs:
            raise Busy(f"server busy: {len(self._jobs) + self.reserved} requests in progress "
                       f"or queued (limit {self.max_jobs}); retry shortly")

    def reserve(self) -> None:
        """Count a queued request against ``max_jobs`` (or raise :class:`Busy`).

        Pipelined requests wait for the one before them on their connection; without
        a reservation a client could queue any number of them past the bound.
        """
        with self._cond:
            if not self._accepting:
                raise ShuttingDown("the server is shutting down")
            self._check_room()
            self.reserved += 1

    def unreserve(self) -> None:
        """Give back a reservation (its request starts, or its client left)."""
        with self._cond:
            self.reserved = max(0, self.reserved - 1)

    def _release(self, job: Job) -> None:
        with self._cond:
            job.end()
            if job in self._jobs:
                self._jobs.remove(job)
            if not self._jobs:
                self._idle.set()
        job.stop.set()  # outside the lock: hooks reach into running model calls

    async def drain(self, grace: float) -> bool:
        """Refuse new jobs and wait up to ``grace`` s for active ones; True if all ended."""
        with self._cond:
            self._accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 5.0)
        self._threads.clear()

    def pick(self) -> Job | None:
        """The job a free worker takes next (lock held), or ``None``."""
        runnable = [job for job in self._jobs if job.runnable(self.lookahead)]
        if not runnable:
            return None
        now = time.monotonic()
        return min(runnable, key=lambda job: job.priority(now, self.paces.get(job.next_voice)))

    def _work(self) -> None:
        while True:
            with self._cond:
                job = self.pick()
                while job is None:
                    if self._stopping:
                        return
                    self._cond.wait()
                    job = self.pick()
                item: Item | None
                item, lead = job.take(time.monotonic(), self.paces.get(job.next_voice))
                self._busy += 1
            while item is not None:
                began = time.perf_counter()
                result = job.run(item, lead)
                took = time.perf_counter() - began
                with self._cond:
                    if isinstance(result, Cancelled):
                        self.cancelled_calls += 1
                    self.paces.observe(item.voice, took, job.work(item, result))
                    item = job.complete(item, result)
                    if item is None:
                        self._busy -= 1
                    self._cond.notify_all()
