"""Chunk streams in the scheduler: a voice whose units answer a sequential stream
(:class:`~chorus.server.engines.base.Chunks`), as an autoregressive model does.

The stream here is a test double that holds the real rules: chunks only in order, never
two pulls at once, the end known only when it comes, :class:`Cancelled` once its stop
signal fires, ``close`` once nobody pulls any more. The XTTS engine's real streams go
through the same scheduler in ``tests/integration/test_xtts.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from chorus.server.engines.base import (
    PCM,
    Cancelled,
    Chunks,
    StopSignal,
    SynthesisParams,
    Unit,
    VoiceSpec,
)
from chorus.server.scheduler import Job, Scheduler

SPEC = VoiceSpec("chunky", "test", Path("m"), Path("c"), "en", 16000)


class Stream:
    """Unit ``[number, chunks, delay_ms]``: ``chunks`` chunks of 0.1 s of samples
    ``number * 100 + index``, each after ``delay_ms``."""

    def __init__(self, voice: ChunkVoice, unit: Unit, stop: StopSignal | None) -> None:
        self.voice = voice
        self.number, self.count, self.delay_ms = unit
        self.stop = stop
        self.index = 0
        self.busy = threading.Lock()
        self.closed = 0

    def next(self) -> PCM | None:
        if not self.busy.acquire(blocking=False):
            raise AssertionError("two pulls of one stream at once")
        try:
            if self.stop is not None:
                self.stop.check()
            if self.closed:
                raise AssertionError("pulled after close")
            if self.index >= self.count:
                return None
            time.sleep(self.delay_ms / 1000)
            with self.voice.lock:
                self.voice.pulls.append((self.number, self.index))
            self.index += 1
            return np.full(1600, self.number * 100 + self.index - 1, dtype=np.int16)
        finally:
            self.busy.release()

    def close(self) -> None:
        self.closed += 1
        with self.voice.lock:
            self.voice.closed.append(self.number)

    def cost(self) -> float:
        return 0.1


class ChunkVoice:
    spec = SPEC
    memory_bytes = 0
    streaming = True

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pulls: list[tuple[int, int]] = []
        self.closed: list[int] = []
        self.streams: list[Stream] = []

    def prepare(self, text: str) -> list[Unit]:
        return [[int(word), 3, 1] for word in text.split()]

    def render(self, unit: Unit, params: SynthesisParams, stop: StopSignal | None = None,
               ) -> PCM:
        raise AssertionError("the scheduler starts units, it does not render them whole")

    def start(self, unit: Unit, params: SynthesisParams, lead: float = 0.0,
              stop: StopSignal | None = None) -> Chunks:
        stream = Stream(self, unit, stop)
        self.streams.append(stream)
        return stream


@pytest.fixture
async def scheduler() -> AsyncIterator[Scheduler]:
    sched = Scheduler(workers=2, max_jobs=4)
    sched.start()
    yield sched
    await sched.stop()


async def _pieces(job: Job) -> list[tuple[int, int, bool, int]]:
    """(unit, first sample, last, samples) of every piece."""
    try:
        return [(p.unit, int(p.pcm[0]) if len(p.pcm) else -1, p.last, len(p.pcm))
                async for p in job.pieces()]
    finally:
        job.finish()


async def test_chunks_come_out_in_order_and_the_end_is_the_last_piece(
        scheduler: Scheduler) -> None:
    voice = ChunkVoice()
    job = scheduler.open(voice, SynthesisParams())
    job.add_units([[1, 3, 5], [2, 2, 1], [3, 0, 1]])
    job.close()
    assert await _pieces(job) == [
        (0, 100, False, 1600), (0, 101, False, 1600), (0, 102, False, 1600),
        (0, -1, True, 0),
        (1, 200, False, 1600), (1, 201, False, 1600), (1, -1, True, 0),
        (2, -1, True, 0),  # a stream with no audio at all
    ]
    # A unit's stream is complete before the next unit starts: nothing interleaves.
    assert voice.pulls == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]
    assert sorted(voice.closed) == [1, 2, 3]
    assert all(stream.closed == 1 for stream in voice.streams)


async def test_two_jobs_streams_share_the_workers(scheduler: Scheduler) -> None:
    voice = ChunkVoice()
    jobs = []
    for number in (1, 2):
        job = scheduler.open(voice, SynthesisParams())
        job.add_units([[number, 6, 20]])
        job.close()
        jobs.append(job)
    results = await asyncio.gather(*(_pieces(job) for job in jobs))
    assert [len(pieces) for pieces in results] == [7, 7]
    first_of_2 = voice.pulls.index((2, 0))
    assert first_of_2 < 3, voice.pulls  # the second job did not wait for the first's end


async def test_a_released_job_stops_and_closes_its_stream(scheduler: Scheduler) -> None:
    voice = ChunkVoice()
    job = scheduler.open(voice, SynthesisParams())
    job.add_units([[7, 1000, 10]])
    job.close()
    pieces = job.audio()
    await anext(pieces)
    job.finish()  # the client left after the first chunk
    for _ in range(200):
        if voice.closed:
            break
        await asyncio.sleep(0.01)
    assert voice.closed == [7]
    pulled = len(voice.pulls)
    await asyncio.sleep(0.1)
    assert len(voice.pulls) == pulled < 1000  # no pull after the release


async def test_a_failing_pull_reaches_the_consumer_in_order(scheduler: Scheduler) -> None:
    class Failing(Stream):
        def next(self) -> PCM | None:
            if self.index == 2:
                raise RuntimeError("model exploded")
            return super().next()

    class FailingVoice(ChunkVoice):
        def start(self, unit: Unit, params: SynthesisParams, lead: float = 0.0,
                  stop: StopSignal | None = None) -> Chunks:
            stream = Failing(self, unit, stop)
            self.streams.append(stream)
            return stream

    voice = FailingVoice()
    job = scheduler.open(voice, SynthesisParams())
    job.add_units([[4, 5, 1]])
    job.close()
    got: list[int] = []

    async def read() -> None:
        async for pcm in job.audio():
            got.append(int(pcm[0]))

    with pytest.raises(RuntimeError, match="model exploded"):
        await read()
    job.finish()
    assert got == [400, 401]
    assert voice.closed == [4]


async def test_a_cancelled_stream_counts_as_a_cancelled_call() -> None:
    scheduler = Scheduler(workers=1)
    scheduler.start()
    try:
        voice = ChunkVoice()
        job = scheduler.open(voice, SynthesisParams())
        job.add_units([[5, 50, 20]])
        job.close()
        pieces = job.pieces()
        await anext(pieces)
        job.fail(Cancelled("gone"))
        with pytest.raises(Cancelled):
            await anext(pieces)
        job.finish()
        for _ in range(200):
            if voice.closed:
                break
            await asyncio.sleep(0.01)
        assert voice.closed == [5]
    finally:
        await scheduler.stop()
