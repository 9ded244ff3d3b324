"""The scheduler's ordering, fairness, bounds and failure handling.

The voice here is a test double whose ``render`` blocks on purpose; the real Piper
voice goes through the same scheduler in the integration tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from chorus.server.engines.base import PCM, SynthesisParams, Unit, VoiceSpec
from chorus.server.errors import Busy, ShuttingDown
from chorus.server.scheduler import Job, Scheduler

SPEC = VoiceSpec("test", "test", Path("m"), Path("c"), "en_US", 16000)


class RecordingVoice:
    """Renders unit ``[n, delay_ms]`` to ``[n]`` after ``delay_ms``, recording the order."""

    spec = SPEC
    memory_bytes = 0

    def __init__(self) -> None:
        self.order: list[int] = []
        self.lock = threading.Lock()

    def prepare(self, text: str) -> list[Unit]:
        return [[int(word), 0] for word in text.split()]

    def render(self, unit: Unit, params: SynthesisParams) -> PCM:
        number, delay_ms = unit
        if number < 0:
            raise RuntimeError("model exploded")
        time.sleep(delay_ms / 1000)
        with self.lock:
            self.order.append(number)
        return np.array([number], dtype=np.int16)


async def _collect(job: Job) -> list[int]:
    try:
        return [int(pcm[0]) async for pcm in job.audio()]
    finally:
        job.finish()


@pytest.fixture
async def scheduler() -> AsyncIterator[Scheduler]:
    sched = Scheduler(workers=2, max_jobs=3)
    sched.start()
    yield sched
    await sched.stop()


async def test_audio_comes_out_in_order(scheduler: Scheduler) -> None:
    job = scheduler.open(RecordingVoice(), SynthesisParams())
    job.add_units([[i, 30 if i % 2 == 0 else 1] for i in range(8)])
    job.close()
    assert await _collect(job) == list(range(8))


async def test_new_short_job_goes_before_a_long_ones_remaining_units() -> None:
    scheduler = Scheduler(workers=1)
    scheduler.start()
    voice = RecordingVoice()
    try:
        long_job = scheduler.open(voice, SynthesisParams())
        long_job.add_units([[i, 20] for i in range(10)])
        long_job.close()
        long_task = asyncio.create_task(_collect(long_job))
        await asyncio.sleep(0.05)  # the long job is under way
        short_job = scheduler.open(voice, SynthesisParams())
        short_job.add_units([[100, 1]])
        short_job.close()
        assert await _collect(short_job) == [100]
        assert await long_task == list(range(10))
    finally:
        await scheduler.stop()
    position = voice.order.index(100)
    assert position <= 4, voice.order  # not after the long job's ten units


async def test_busy_when_the_job_limit_is_reached(scheduler: Scheduler) -> None:
    jobs = [scheduler.open(RecordingVoice(), SynthesisParams()) for _ in range(3)]
    with pytest.raises(Busy, match="limit 3"):
        scheduler.open(RecordingVoice(), SynthesisParams())
    jobs[0].finish()
    scheduler.open(RecordingVoice(), SynthesisParams()).finish()
    for job in jobs[1:]:
        job.finish()
    assert scheduler.active_jobs == 0


async def test_a_render_failure_reaches_the_consumer(scheduler: Scheduler) -> None:
    job = scheduler.open(RecordingVoice(), SynthesisParams())
    job.add_units([[1, 0], [-1, 0], [3, 0]])
    job.close()
    audio = job.audio()
    assert int((await anext(audio))[0]) == 1
    with pytest.raises(RuntimeError, match="model exploded"):
        await anext(audio)
    job.finish()


async def test_a_slow_reader_bounds_the_work_done_ahead(scheduler: Scheduler) -> None:
    voice = RecordingVoice()
    job = scheduler.open(voice, SynthesisParams())
    job.add_units([[i, 1] for i in range(20)])
    job.close()
    await asyncio.sleep(0.3)
    assert len(voice.order) == scheduler.lookahead  # nobody read: no more rendered
    assert await _collect(job) == list(range(20))


async def test_failing_a_job_stops_it(scheduler: Scheduler) -> None:
    job = scheduler.open(RecordingVoice(), SynthesisParams())
    job.add_units([[1, 0]])
    job.fail(ValueError("client said too much"))
    with pytest.raises(ValueError, match="too much"):
        await _collect(job)


async def test_drain_refuses_new_jobs_and_waits_for_running_ones(
        scheduler: Scheduler) -> None:
    job = scheduler.open(RecordingVoice(), SynthesisParams())
    job.add_units([[i, 50] for i in range(4)])
    job.close()
    reader = asyncio.create_task(_collect(job))
    assert not await scheduler.drain(0.01)  # still running
    with pytest.raises(ShuttingDown):
        scheduler.open(RecordingVoice(), SynthesisParams())
    assert await scheduler.drain(5.0)
    assert await reader == [0, 1, 2, 3]
