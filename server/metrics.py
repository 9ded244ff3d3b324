"""Prometheus metrics for every front door, from one registry per server.

A dedicated :class:`~prometheus_client.CollectorRegistry` (not the global default) keeps
two runtimes in one process (tests, ``chorus say``) from colliding and keeps library
metrics we did not choose out of ``/metrics``; the process collector is added to it on
purpose (``process_resident_memory_bytes``, CPU seconds, open fds: what a memory or fd
leak shows up in first). Request metrics are recorded by the front
doors through :meth:`Metrics.request`; the state of the scheduler and the voice store is
read at scrape time by a collector, so nothing has to keep gauges in step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .engines.base import ReportsBackends, ReportsDevice
from .errors import ChorusError
from .voice_blends import metric_label

if TYPE_CHECKING:
    from .cache import AudioCache
    from .scheduler import Scheduler
    from .voices import VoiceStore

__all__ = ["CONTENT_TYPE", "Metrics", "RequestMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
_FIRST_AUDIO_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class _RuntimeCollector(Collector):
    """Live gauges read from the scheduler and voice store at scrape time."""

    def __init__(self, scheduler: Scheduler, store: VoiceStore) -> None:
        self._scheduler = scheduler
        self._store = store

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("chorus_queued_units",
                                "Units (model calls) waiting for a worker",
                                value=self._scheduler.queued_units)
        yield GaugeMetricFamily("chorus_busy_workers", "Workers rendering a unit now",
                                value=self._scheduler.busy_workers)
        yield GaugeMetricFamily("chorus_workers", "Worker threads",
                                value=self._scheduler.workers)
        yield GaugeMetricFamily("chorus_active_requests",
                                "Requests holding a scheduler slot (all front doors)",
                                value=self._scheduler.active_jobs)
        yield CounterMetricFamily("chorus_cancelled_model_calls",
                                  "Model calls stopped part-way because their request "
                                  "ended first (client gone, request failed)",
                                  value=self._scheduler.cancelled_calls)
        resident = self._store.resident()
        yield GaugeMetricFamily("chorus_resident_voices", "Voices loaded in memory",
                                value=len(resident))
        memory = GaugeMetricFamily("chorus_voice_memory_bytes",
                                   "Estimated memory of each resident voice",
                                   labels=["voice"])
        for voice in resident:
            memory.add_metric([voice.spec.name], voice.memory_bytes)
        yield memory
        backend = GaugeMetricFamily("chorus_voice_part_backend",
                                    "1 per resident voice's graph part: the backend and "
                                    "precision that run it (chosen at load)",
                                    labels=["voice", "part", "backend", "precision"])
        for voice in resident:
            if isinstance(voice, ReportsBackends):
                for part, choice in voice.backends.get("parts", {}).items():
                    backend.add_metric([voice.spec.name, part, str(choice["backend"]),
                                        str(choice["precision"])], 1)
        yield backend
        device = GaugeMetricFamily("chorus_voice_device",
                                   "1 per resident voice: the device its model runs on "
                                   "(cpu or cuda:N, from --device)",
                                   labels=["voice", "device"])
        for voice in resident:
            if isinstance(voice, ReportsDevice):
                device.add_metric([voice.spec.name, voice.device], 1)
        yield device


class _CacheCollector(Collector):
    """The audio cache's counters and size, read at scrape time.

    Exposed (as zeros) even with ``--no-cache``, so dashboards and alerts built on these
    names work on every server.
    """

    def __init__(self) -> None:
        self.cache: AudioCache | None = None

    def collect(self) -> Iterator[Metric]:
        cache = self.cache
        yield CounterMetricFamily("chorus_cache_hits", "Requests answered from the cache",
                                  value=cache.hits if cache else 0)
        yield CounterMetricFamily("chorus_cache_misses",
                                  "Cacheable requests that had to be synthesized",
                                  value=cache.misses if cache else 0)
        yield CounterMetricFamily("chorus_cache_write_errors",
                                  "Answers served but not stored: the cache could not write",
                                  value=cache.write_errors if cache else 0)
        yield GaugeMetricFamily("chorus_cache_bytes", "Bytes of audio in the cache",
                                value=cache.bytes if cache else 0)
        yield GaugeMetricFamily("chorus_cache_entries", "Entries in the cache",
                                value=cache.entries if cache else 0)


class _ConnectionCollector(Collector):
    """Open connections per front door, counted at scrape time."""

    def __init__(self) -> None:
        self.counters: dict[str, Callable[[], int]] = {}

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("chorus_open_connections",
                                   "Client connections open now, by front door",
                                   labels=["door"])
        for door, count in sorted(self.counters.items()):
            family.add_metric([door], count())
        yield family


class Metrics:
    """The server's metrics; one instance shared by all front doors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "chorus_requests", "Synthesis requests served, by front door, voice and format",
            ["door", "voice", "format"], registry=self.registry)
        self.errors = Counter(
            "chorus_request_errors", "Requests answered with an error, by error code",
            ["door", "code"], registry=self.registry)
        self.latency = Histogram(
            "chorus_synthesis_seconds", "Request start to last audio sent",
            ["door"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.first_audio = Histogram(
            "chorus_time_to_first_audio_seconds", "Request start to first audio ready",
            ["door"], buckets=_FIRST_AUDIO_BUCKETS, registry=self.registry)
        self.rtf = Histogram(
            "chorus_real_time_factor", "Synthesis time divided by audio duration",
            ["door"], buckets=_RTF_BUCKETS, registry=self.registry)
        self.pieces = Counter(
            "chorus_audio_windows", "Pieces of audio made ready for clients: windows of "
            "sentences, or whole sentences when a voice does not stream below them",
            ["door"], registry=self.registry)
        self.late = Counter(
            "chorus_late_windows", "Pieces of audio (windows or whole sentences) ready "
            "after the audio sent before them would have finished playing (playback in "
            "real time from the first audio, resuming after a gap)", ["door"],
            registry=self.registry)
        for door in ("wyoming", "http"):  # exposed at 0 from the start, for alerts
            self.pieces.labels(door)
            self.late.labels(door)
        self._cache = _CacheCollector()
        self.registry.register(self._cache)
        self.evicted = Counter(
            "chorus_connections_evicted", "Idle connections closed to admit a new one "
            "at the connection cap", ["door"], registry=self.registry)
        self.refused = Counter(
            "chorus_connections_refused", "Connections refused at the connection cap "
            "because every open one was busy", ["door"], registry=self.registry)
        for door in ("wyoming", "http"):
            self.evicted.labels(door)
            self.refused.labels(door)
        self._connections = _ConnectionCollector()
        self.registry.register(self._connections)

    def watch(self, scheduler: Scheduler, store: VoiceStore) -> None:
        """Expose the live state of a running server's scheduler and store."""
        self.registry.register(_RuntimeCollector(scheduler, store))

    def watch_cache(self, cache: AudioCache) -> None:
        """Expose the audio cache's hits, misses and size."""
        self._cache.cache = cache

    def watch_connections(self, door: str, count: Callable[[], int]) -> None:
        """Expose a front door's open connections (``count`` is read at scrape time)."""
        self._connections.counters[door] = count

    def request(self, door: str, fmt: str) -> RequestMetrics:
        """A recorder for one request; use it as a context manager around the request."""
        return RequestMetrics(self, door, fmt)

    def error(self, door: str, code: str) -> None:
        """Count an error answered before a request could be recorded (bad input)."""
        self.errors.labels(door, code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """Times one request; the outcome is recorded when its ``with`` block ends."""

    def __init__(self, metrics: Metrics, door: str, fmt: str) -> None:
        self._metrics = metrics
        self.door = door
        self.format = fmt
        self.voice = ""
        """Set once the voice is resolved; unknown-voice errors leave it empty."""
        self._start = time.perf_counter()
        self._first: float | None = None
        self._audio_seconds = 0.0
        self._playback_end = 0.0
        self._failed = False
        self.late = 0
        """Pieces of this request that were late (see :meth:`audio`)."""
        self.cached = False
        """Answered from the cache: counted, but kept out of the synthesis histograms,
        whose latency and real-time factor would otherwise mix disk reads with renders."""

    def audio(self, samples: int, rate: int) -> None:
        """Audio of ``samples`` at ``rate`` is ready to be sent.

        Every piece after the first is checked against its deadline: a listener who
        starts playing at the first audio runs out of sound when the audio sent so far
        has played. A piece ready after that is late (an audible gap), and playback
        resumes from its arrival.
        """
        now = time.perf_counter() - self._start
        duration = samples / rate
        self._metrics.pieces.labels(self.door).inc()
        if self._first is None:
            self._first = now
            self._metrics.first_audio.labels(self.door).observe(self._first)
            self._playback_end = now
        elif now > self._playback_end:
            self._metrics.late.labels(self.door).inc()
            self.late += 1
            self._playback_end = now
        self._playback_end += duration
        self._audio_seconds += duration

    def __enter__(self) -> RequestMetrics:
        return self

    def fail(self, error: BaseException) -> None:
        """Count the request as failed with the error's code (once)."""
        if self._failed:
            return
        self._failed = True
        if isinstance(error, ChorusError):
            code = error.code
        elif isinstance(error, asyncio.CancelledError):
            code = "cancelled"
        elif isinstance(error, ConnectionError | TimeoutError):
            code = "client-gone"
        else:
            code = "internal"
        self._metrics.errors.labels(self.door, code).inc()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._metrics.requests.labels(self.door, metric_label(self.voice),
                                      self.format).inc()
        if exc is not None:
            self.fail(exc)
        if self._failed or self.cached:
            return
        elapsed = time.perf_counter() - self._start
        self._metrics.latency.labels(self.door).observe(elapsed)
        if self._audio_seconds > 0:
            self._metrics.rtf.labels(self.door).observe(elapsed / self._audio_seconds)
