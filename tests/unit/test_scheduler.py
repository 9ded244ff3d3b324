"""The scheduler's ordering, fairness, bounds and failure handling.

The voice here is a test double whose ``render`` blocks on purpose; the real Piper
voice goes through the same scheduler in the integration tests.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from chorus.server.engines.base import (
    PCM,
    Cancelled,
    StopSignal,
    SynthesisParams,
    Unit,
    VoiceSpec,
    Windows,
)
from chorus.server.errors import Busy, ShuttingDown
from chorus.server.scheduler import PLAN_SAFETY, Job, Paces, RenderWindow, Scheduler

SPEC = VoiceSpec("test", "test", Path("m"), Path("c"), "en_US", 16000)


def _wait(delay_ms: float, stop: StopSignal | None) -> None:
    """Take ``delay_ms`` like a model call, stopping part-way (:class:`Cancelled`) when
    ``stop`` fires, as the Piper engine's calls do."""
    if stop is None:
        time.sleep(delay_ms / 1000)
        return
    fired = threading.Event()
    with stop.hooked(fired.set):
        if fired.wait(delay_ms / 1000):
            raise Cancelled("stopped")


class RecordingVoice:
    """Renders unit ``[n, delay_ms]`` to 0.1 s of samples ``n`` after ``delay_ms``, recording
    the order; a call stops when its job's stop signal fires."""

    spec = SPEC
    memory_bytes = 0
    streaming = False

    def __init__(self) -> None:
        self.order: list[int] = []
        self.lock = threading.Lock()

    def prepare(self, text: str) -> list[Unit]:
        return [[int(word), 0] for word in text.split()]

    def render(self, unit: Unit, params: SynthesisParams, stop: StopSignal | None = None,
               ) -> PCM:
        number, delay_ms = unit
        if number < 0:
            raise RuntimeError("model exploded")
        _wait(delay_ms, stop)
        with self.lock:
            self.order.append(number)
        return np.full(1600, number, dtype=np.int16)  # 0.1 s of audio at 16 kHz

    def start(self, unit: Unit, params: SynthesisParams, lead: float = 0.0,
              stop: StopSignal | None = None) -> PCM | Windows:
        return self.render(unit, params, stop)


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


class SecondsVoice(RecordingVoice):
    """Each unit is a whole second of audio: a listener soon has plenty in hand."""

    def render(self, unit: Unit, params: SynthesisParams, stop: StopSignal | None = None,
               ) -> PCM:
        return np.repeat(super().render(unit, params, stop), 10)


async def test_new_short_job_goes_before_a_long_ones_remaining_units() -> None:
    """A request whose listener has audio in hand (more than PLAYING_MARGIN) yields to a
    new one; one about to run dry would not (see the scheduler's docstring)."""
    scheduler = Scheduler(workers=1)
    scheduler.start()
    voice = SecondsVoice()
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


async def test_reservations_count_against_the_job_limit(scheduler: Scheduler) -> None:
    job = scheduler.open(RecordingVoice(), SynthesisParams())
    scheduler.reserve()
    scheduler.reserve()
    with pytest.raises(Busy, match="limit 3"):
        scheduler.open(RecordingVoice(), SynthesisParams())
    with pytest.raises(Busy, match="limit 3"):
        scheduler.reserve()
    scheduler.unreserve()  # a queued request starts: its reservation becomes a job
    scheduler.open(RecordingVoice(), SynthesisParams()).finish()
    scheduler.unreserve()
    job.finish()
    assert (scheduler.active_jobs, scheduler.reserved) == (0, 0)


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


class _Windows:
    def __init__(self, voice: WindowedVoice, number: int, count: int, delay_ms: int,
                 samples: int = 1600) -> None:
        self.voice, self.number, self.count, self.delay_ms = voice, number, count, delay_ms
        self.size = samples

    def __len__(self) -> int:
        return self.count

    def samples(self, index: int) -> int:
        return self.size  # default 1600: 0.1 s at the test spec's 16 kHz

    def cost(self, index: int) -> float:
        return self.size / 16000

    def render(self, index: int) -> PCM:
        time.sleep(self.delay_ms / 1000)
        with self.voice.lock:
            self.voice.order.append((self.number, index))
        return np.full(self.size, self.number * 100 + index, dtype=np.int16)


class WindowedVoice:
    """Unit ``[n, windows, delay_ms(, window_ms(, samples))]`` starts with an encoder call
    taking ``delay_ms``, then renders ``windows`` windows ``[100 n + k]``, each taking
    ``window_ms`` (default: ``delay_ms``) and announcing ``samples`` (default 1600)."""

    spec = SPEC
    memory_bytes = 0
    streaming = True

    def __init__(self) -> None:
        self.order: list[tuple[int, int]] = []
        self.lock = threading.Lock()
        self.leads: dict[int, float] = {}
        """Unit number -> the ``lead`` its first call was given."""

    def prepare(self, text: str) -> list[Unit]:
        return [[int(word), 3, 5] for word in text.split()]

    def render(self, unit: Unit, params: SynthesisParams, stop: StopSignal | None = None,
               ) -> PCM:
        raise AssertionError("a streaming voice is started, not rendered whole")

    def start(self, unit: Unit, params: SynthesisParams, lead: float = 0.0,
              stop: StopSignal | None = None) -> PCM | Windows:
        number, count, delay_ms, *rest = unit
        with self.lock:
            self.leads[number] = lead
        time.sleep(delay_ms / 1000)
        with self.lock:
            self.order.append((number, -1))
        if count == 1:
            return np.full(1600, number * 100, dtype=np.int16)
        return _Windows(self, number, count, rest[0] if rest else delay_ms, *rest[1:2])


async def test_windows_come_out_in_order_and_mark_the_end_of_their_unit(
        scheduler: Scheduler) -> None:
    voice = WindowedVoice()
    job = scheduler.open(voice, SynthesisParams())
    job.add_units([[1, 4, 5], [2, 1, 1], [3, 3, 1]])
    job.close()
    try:
        pieces = [(p.unit, int(p.pcm[0]), p.last) async for p in job.pieces()]
    finally:
        job.finish()
    assert pieces == [(0, 100, False), (0, 101, False), (0, 102, False), (0, 103, True),
                      (1, 200, True), (2, 300, False), (2, 301, False), (2, 302, True)]
    # The worker that ran a unit's first call went straight on with its first window.
    first = voice.order.index((1, -1))
    assert (1, 0) in voice.order[first + 1:first + 3]


async def test_windows_of_two_long_requests_interleave() -> None:
    scheduler = Scheduler(workers=1)
    scheduler.start()
    voice = WindowedVoice()
    try:
        jobs = [scheduler.open(voice, SynthesisParams()) for _ in range(2)]
        for number, job in zip((1, 2), jobs, strict=True):
            job.add_units([[number, 8, 10, 10, 16000]])  # windows of 1 s of audio
            job.close()
        results = await asyncio.gather(*(_collect(job) for job in jobs))
    finally:
        await scheduler.stop()
    assert results == [[100 + k for k in range(8)], [200 + k for k in range(8)]]
    owners = [number for number, _ in voice.order]
    runs = [len(list(group)) for _, group in itertools.groupby(owners)]
    # Least attained service alternates the two requests window by window (a request's
    # first call and its first window run back to back), never one after the other.
    assert max(runs) <= 2, voice.order


async def test_a_failing_window_reaches_the_consumer_in_order(scheduler: Scheduler) -> None:
    class Failing(WindowedVoice):
        def start(self, unit: Unit, params: SynthesisParams, lead: float = 0.0,
                  stop: StopSignal | None = None) -> PCM | Windows:
            windows = super().start(unit, params)
            assert isinstance(windows, _Windows)
            original = windows.render

            def render(index: int) -> PCM:
                if index == 2:
                    raise RuntimeError("window exploded")
                return original(index)

            windows.render = render  # type: ignore[method-assign]
            return windows

    job = scheduler.open(Failing(), SynthesisParams())
    job.add_units([[1, 4, 1]])
    job.close()
    audio = job.audio()
    assert [int((await anext(audio))[0]) for _ in range(2)] == [100, 101]
    with pytest.raises(RuntimeError, match="window exploded"):
        await anext(audio)
    job.finish()


async def test_later_units_finishing_first_cannot_block_the_piece_awaited(
        scheduler: Scheduler) -> None:
    """A short sentence's windows, done while a long one still encodes, fill the
    lookahead; the long one's windows must still be taken (this once deadlocked)."""
    voice = WindowedVoice()
    job = scheduler.open(voice, SynthesisParams())
    # Unit 1 starts first and renders its first window slowly; unit 2 starts a little
    # later, so its windows were once queued ahead of unit 1's remaining ones.
    job.add_units([[1, 3, 5, 80], [2, 2, 20, 1], [3, 2, 1]])
    job.close()
    got = await asyncio.wait_for(_collect(job), 10)
    assert got == [100, 101, 102, 200, 201, 300, 301]
    assert voice.order.index((1, 1)) < voice.order.index((2, 1))


async def test_service_is_counted_in_audio_not_in_calls() -> None:
    """A request given one long window has had more service than one given a few short
    ones: the short-window request catches up before the other gets its next window.
    (A lookahead of 4 keeps the readers' pace out of the order.)"""
    scheduler = Scheduler(workers=1, lookahead=4)
    scheduler.start()
    voice = WindowedVoice()
    try:
        long_job = scheduler.open(voice, SynthesisParams())
        long_job.add_units([[1, 3, 1, 5, 16000]])  # 1 s of audio per window
        long_job.close()
        short_job = scheduler.open(voice, SynthesisParams())
        short_job.add_units([[2, 8, 1, 5, 1600]])  # 0.1 s per window
        short_job.close()
        await asyncio.gather(_collect(long_job), _collect(short_job))
    finally:
        await scheduler.stop()
    assert voice.order.index((1, 1)) > voice.order.index((2, 7)), voice.order


async def test_a_request_about_to_run_dry_goes_before_a_new_one() -> None:
    """A playing request with less audio in hand than the margin is more urgent than a
    request that has not started (a gap is worse than a slightly later first sound);
    one well ahead of its listener yields to the new request."""
    scheduler = Scheduler(workers=1)  # not started: only the choice is looked at
    voice = WindowedVoice()
    playing = scheduler.open(voice, SynthesisParams())
    new = scheduler.open(voice, SynthesisParams())
    playing.add_units([[1, 3, 1]])
    new.add_units([[2, 1, 1]])
    playing._first_at = time.monotonic()
    playing._service = 0.1  # given 0.1 s, playing since now
    assert scheduler.pick() is playing
    playing._service = 2.0
    assert scheduler.pick() is new
    playing.finish()
    new.finish()


async def test_a_unit_is_told_how_much_audio_its_first_window_may_hold(
        scheduler: Scheduler) -> None:
    """A streaming voice's unit starts once the unit before it has answered, so its lead
    counts all of that unit's audio: here 4 windows of 1 s, each rendered in >= 20 ms, so
    the pace is >= 0.02 and the lead at most 4 s / (3 x 0.02)."""
    voice = WindowedVoice()
    job = scheduler.open(voice, SynthesisParams())
    job.add_units([[1, 4, 30, 20, 16000], [2, 2, 1, 20, 16000], [3, 1, 1]])
    job.close()
    await asyncio.wait_for(_collect(job), 10)
    assert voice.leads[1] == 0.0  # nothing in hand, and no pace measured yet
    assert 3.0 / (PLAN_SAFETY * 0.5) < voice.leads[2] <= 4.0 / (PLAN_SAFETY * 0.02)
    assert 5.0 / (PLAN_SAFETY * 0.5) < voice.leads[3] <= 6.0 / (PLAN_SAFETY * 0.02)
    assert voice.order.index((1, -1)) < voice.order.index((2, -1))
    assert scheduler.paces.get(voice) is not None


def test_pace_is_a_moving_average_per_voice() -> None:
    paces = Paces()
    one, two = WindowedVoice(), WindowedVoice()
    assert paces.get(one) is None
    paces.observe(one, 0.1, 1.0)
    paces.observe(one, 0.6, 1.0)
    paces.observe(two, 0.3, 2.0)
    paces.observe(two, 5.0, 0.0)  # no audio: ignored
    assert paces.get(one) == pytest.approx(0.8 * 0.1 + 0.2 * 0.6)
    assert paces.get(two) == pytest.approx(0.15)


async def test_a_playing_request_whose_next_window_takes_long_goes_first() -> None:
    """Slack counts the next item's expected time: 2 s in hand are plenty before a small
    window, too little before a window that takes 1.8 s at the voice's pace."""
    scheduler = Scheduler(workers=1)  # not started: only the choice is looked at
    voice = WindowedVoice()
    scheduler.paces.observe(voice, 0.1, 1.0)  # 0.1 s of work per second of audio
    playing = scheduler.open(voice, SynthesisParams())
    new = scheduler.open(voice, SynthesisParams())
    playing.add_units([[1, 3, 1]])
    new.add_units([[2, 1, 1]])
    windows = _Windows(voice, 1, 3, 1, samples=16000)  # 1 s of audio per window
    playing._pending.clear()
    playing._pending.append(RenderWindow(0, 1, windows, voice))
    playing._first_at = time.monotonic()
    playing._service = 2.0
    assert scheduler.pick() is new
    windows.size = 16000 * 18  # the next window: 18 s of audio, ~1.8 s of work
    assert scheduler.pick() is playing
    playing.finish()
    new.finish()


async def test_whole_sentence_voices_still_start_units_side_by_side(
        scheduler: Scheduler) -> None:
    """Without windows a unit's first call is the whole sentence: waiting for it would
    leave the second worker idle, so units of one request render at the same time."""
    both = threading.Barrier(2, timeout=5)

    class Parallel(RecordingVoice):
        def render(self, unit: Unit, params: SynthesisParams,
                   stop: StopSignal | None = None) -> PCM:
            both.wait()  # raises BrokenBarrierError unless two units render at once
            return super().render(unit, params, stop)

    job = scheduler.open(Parallel(), SynthesisParams())
    job.add_units([[1, 0], [2, 0]])
    job.close()
    assert await asyncio.wait_for(_collect(job), 10) == [1, 2]


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, f"not within {within} s"
        await asyncio.sleep(0.01)


async def test_a_released_jobs_running_call_is_stopped(scheduler: Scheduler) -> None:
    """A client that leaves mid-sentence frees its worker at once, not when the call
    would have ended; the worker then serves the next job."""
    voice = RecordingVoice()
    job = scheduler.open(voice, SynthesisParams())
    job.add_units([[1, 10_000]])  # a ten-second model call
    job.close()
    await _until(lambda: scheduler.busy_workers == 1)
    job.finish()
    await _until(lambda: scheduler.busy_workers == 0, within=2.0)  # not ten seconds
    assert scheduler.cancelled_calls == 1
    assert job.stop.hooks == 0  # nothing of the call is left hooked to the job
    assert voice.order == []
    for _ in range(scheduler.workers):  # every worker survived and takes new work
        other = scheduler.open(voice, SynthesisParams())
        other.add_units([[2, 0], [3, 0]])
        other.close()
        assert await asyncio.wait_for(_collect(other), 5) == [2, 3]
    assert scheduler.cancelled_calls == 1


async def test_a_failed_jobs_other_calls_are_stopped_and_counted(
        scheduler: Scheduler) -> None:
    job = scheduler.open(RecordingVoice(), SynthesisParams())
    job.add_units([[1, 10_000], [2, 10_000]])  # both workers busy for ten seconds
    job.close()
    await _until(lambda: scheduler.busy_workers == 2)
    job.fail(ValueError("the stream broke"))
    with pytest.raises(ValueError, match="stream broke"):
        await asyncio.wait_for(_collect(job), 2.0)
    await _until(lambda: scheduler.busy_workers == 0, within=2.0)
    assert scheduler.cancelled_calls == 2


async def test_a_job_that_ends_normally_cancels_nothing(scheduler: Scheduler) -> None:
    job = scheduler.open(RecordingVoice(), SynthesisParams())
    job.add_units([[i, 5] for i in range(4)])
    job.close()
    assert await _collect(job) == [0, 1, 2, 3]
    assert scheduler.cancelled_calls == 0


async def test_idle_hook_runs_once_per_quiet_spell_after_work() -> None:
    """The server trims its heaps there: once after calls, not while none have run."""
    calls: list[float] = []
    scheduler = Scheduler(workers=2, on_idle=lambda: calls.append(time.monotonic()),
                          idle_after=0.2)
    scheduler.start()
    try:
        await asyncio.sleep(0.5)
        assert calls == []  # nothing ran yet: nothing to give back
        job = scheduler.open(RecordingVoice(), SynthesisParams())
        job.add_units([[1, 1], [2, 1]])
        job.close()
        ended = time.monotonic()
        assert await _collect(job) == [1, 2]
        await _until(lambda: len(calls) == 1)
        assert calls[0] - ended >= 0.2
        await asyncio.sleep(0.6)
        assert len(calls) == 1  # once per quiet spell, by one worker
        assert scheduler.idle_runs == 1
    finally:
        await scheduler.stop()


def _ran(scheduler: Scheduler, runs: int) -> bool:
    return scheduler.idle_runs == runs


async def test_a_failing_idle_hook_leaves_the_workers_working() -> None:
    def broken() -> None:
        raise RuntimeError("no")

    scheduler = Scheduler(workers=1, on_idle=broken, idle_after=0.05)
    scheduler.start()
    try:
        for runs in (1, 2):
            job = scheduler.open(RecordingVoice(), SynthesisParams())
            job.add_units([[runs, 1]])
            job.close()
            assert await _collect(job) == [runs]
            await _until(functools.partial(_ran, scheduler, runs))
    finally:
        await scheduler.stop()
