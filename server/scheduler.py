"""The scheduler: worker threads render units; the asyncio loop only hands them out.

The unit of work is a model call (a sentence, or part of an over-long one), not a
request. Each request is a :class:`Job` whose units are rendered in order of arrival
into it, at most ``lookahead`` ahead of what its consumer has taken, so one client
can use every worker while a slow reader cannot pile up audio. When several jobs
wait, a free worker takes the job that has had the fewest units started so far
(least attained service): a new short request goes ahead of long ones already
streaming, and long ones advance in step, so nobody starves.

The number of jobs is bounded: when it is reached, :meth:`Scheduler.open` raises
:class:`~chorus.server.errors.Busy` at once instead of queueing without limit.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable

from .engines.base import PCM, LoadedVoice, SynthesisParams, Unit
from .errors import Busy, ShuttingDown

__all__ = ["Job", "Scheduler"]

_LOGGER = logging.getLogger(__name__)


class Job:
    """One request's units and their audio, in order. Created by :meth:`Scheduler.open`."""

    def __init__(self, scheduler: Scheduler, voice: LoadedVoice, params: SynthesisParams,
                 arrival: int) -> None:
        self.voice = voice
        self.params = params
        self._scheduler = scheduler
        self._arrival = arrival
        self._pending: deque[Unit] = deque()
        self._started = 0
        self._in_flight = 0
        self._results: dict[int, PCM | BaseException] = {}
        self._consumed = 0
        self._closed = False
        self._done = False
        self._error: BaseException | None = None
        self._wakeup = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    # Called on the event loop ---------------------------------------------------------

    def add_units(self, units: Iterable[Unit]) -> None:
        with self._scheduler._cond:
            self._pending.extend(units)
            self._scheduler._cond.notify_all()

    def close(self) -> None:
        """No more units will be added."""
        with self._scheduler._cond:
            self._closed = True
        self._wakeup.set()

    def fail(self, error: BaseException) -> None:
        """Stop the job; the consumer raises ``error`` at its next read."""
        with self._scheduler._cond:
            self._error = error
            self._pending.clear()
        self._wakeup.set()

    def finish(self) -> None:
        """Release the job's slot (always called, also when the consumer gave up)."""
        self._scheduler._release(self)

    async def audio(self) -> AsyncIterator[PCM]:
        """Rendered units in order, as soon as each is ready."""
        cond = self._scheduler._cond
        while True:
            with cond:
                if self._error is not None:
                    raise self._error
                item = self._results.pop(self._consumed, None)
                if item is not None:
                    self._consumed += 1
                    cond.notify()  # lookahead room for this job
                elif self._closed and not self._pending and self._consumed == self._started:
                    return
                else:
                    self._wakeup.clear()
            if item is None:
                await self._wakeup.wait()
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item

    # Called by workers, under the scheduler's lock ------------------------------------

    def _runnable(self, lookahead: int) -> bool:
        buffered = self._in_flight + len(self._results)
        return bool(self._pending) and not self._done and buffered < lookahead

    def _deliver(self, index: int, result: PCM | BaseException) -> None:
        self._in_flight -= 1
        if not self._done:
            self._results[index] = result
            self._loop.call_soon_threadsafe(self._wakeup.set)


class Scheduler:
    """A fixed pool of worker threads shared by every job of every front door."""

    def __init__(self, workers: int, max_jobs: int = 64, lookahead: int | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.max_jobs = max_jobs
        self.lookahead = lookahead or workers
        self._cond = threading.Condition()
        self._jobs: list[Job] = []
        self._arrivals = itertools.count()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._accepting = True
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def busy_workers(self) -> int:
        return self._busy

    @property
    def active_jobs(self) -> int:
        return len(self._jobs)

    @property
    def queued_units(self) -> int:
        with self._cond:
            return sum(len(job._pending) for job in self._jobs)

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
            if len(self._jobs) >= self.max_jobs:
                raise Busy(f"server busy: {len(self._jobs)} requests in progress "
                           f"(limit {self.max_jobs}); retry shortly")
            job = Job(self, voice, params, next(self._arrivals))
            self._jobs.append(job)
            self._idle.clear()
            return job

    def _release(self, job: Job) -> None:
        with self._cond:
            job._done = True
            job._pending.clear()
            job._results.clear()
            if job in self._jobs:
                self._jobs.remove(job)
            if not self._jobs:
                self._idle.set()

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

    def _pick(self) -> Job | None:
        runnable = [job for job in self._jobs if job._runnable(self.lookahead)]
        if not runnable:
            return None
        return min(runnable, key=lambda job: (job._started, job._arrival))

    def _work(self) -> None:
        while True:
            with self._cond:
                job = self._pick()
                while job is None:
                    if self._stopping:
                        return
                    self._cond.wait()
                    job = self._pick()
                unit = job._pending.popleft()
                index = job._started
                job._started += 1
                job._in_flight += 1
                self._busy += 1
            try:
                result: PCM | BaseException = job.voice.render(unit, job.params)
            except Exception as err:
                _LOGGER.exception("Rendering a unit of voice %s failed", job.voice.spec.name)
                result = err
            with self._cond:
                self._busy -= 1
                job._deliver(index, result)
                self._cond.notify()
