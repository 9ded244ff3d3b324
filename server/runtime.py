"""Assembling and running the server: voice store, scheduler, front doors, shutdown.

``chorus serve`` (:mod:`.startup`) and ``chorus say`` build the same :class:`Runtime`;
tests start it in-process or through the CLI. The Wyoming socket opens once the voices
are scanned, while the default voice warms (or earlier, as ``chorus serve``'s early
door, :mod:`.early_door`, whose connections the runtime takes over then); the HTTP API
(:mod:`chorus.server.http_api`) opens at the same moment, on the same loop and the same
synthesizer; its ``/health/ready`` says whether the default voice is warm, and turns
503 as soon as shutdown begins.
The metrics door (``--metrics-port``, :mod:`chorus.server.metrics_http`) opens first,
before the voices load, and closes last, so warm-up and shutdown can be scraped.
On SIGTERM the listeners close first, requests in progress get ``shutdown_grace``
seconds to finish (new ones are refused with ``shutting-down``), then the process
exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from wyoming.error import Error
from wyoming.event import Event, async_write_event

from . import describe_snapshot
from .connections import ConnectionCap, raise_open_file_limit
from .discovery import Announcement, announce, announced_address
from .engines import devices
from .engines.base import SynthesisParams
from .engines.native_memory import trim_heaps
from .engines.piper import PiperEngine
from .engines.registry import EngineOptions, discover
from .metrics import Metrics
from .on_demand import OnDemandVoices, VoiceInstaller
from .scheduler import Scheduler
from .settings import ServerSettings
from .synthesis import Synthesizer, TextLimits
from .text import TextFrontEnd, warm_libraries
from .voices import VoiceStore
from .wyoming_handler import WyomingHandler, build_info
from .wyoming_protocol import listen

if TYPE_CHECKING:  # the HTTP doors (aiohttp) are imported when they open, after Wyoming's
    from .cache import AudioCache
    from .early_door import EarlyDoor
    from .http_api import HttpApi
    from .metrics_http import MetricsDoor
    from .voice_cloning import VoiceCloning

__all__ = ["Runtime"]

_LOGGER = logging.getLogger(__name__)


class Runtime:
    """The parts of a running server, started and stopped together."""

    def __init__(self, settings: ServerSettings,
                 installer: VoiceInstaller | None = None) -> None:
        """``installer``: where voices offered for download on first use come from
        (``--download-voices``; see :mod:`.on_demand`).

        ``--device`` is resolved here, once, before anything loads: a GPU that cannot be
        used raises :class:`~.engines.devices.DeviceError` (``chorus serve`` exits with
        its message before any door opens)."""
        self.settings = settings
        self.device = devices.resolve(settings.device, settings.backend).name
        """Where onnxruntime's models (Piper, Kokoro) run: ``cpu`` or ``cuda:N``; XTTS
        decides for torch by the same rules (:func:`.engines.devices.resolve_torch`)."""
        engine = PiperEngine(
            threads_per_voice=settings.threads_per_worker,
            max_phonemes=settings.max_sentence_phonemes,
            stream_windows=(settings.stream_windows if settings.sub_sentence_streaming
                            else None),
            graph_cache_dir=settings.effective_graph_cache_dir,
            prebuilt_graphs=settings.prebuilt_graphs,
            backend=settings.backend, precision=settings.precision,
            workers=settings.worker_count, device=self.device)
        engines = discover(EngineOptions(threads_per_voice=settings.threads_per_worker,
                                         device=self.device,
                                         requested_device=settings.device,
                                         backend=settings.backend,
                                         precision=settings.precision,
                                         workers=settings.worker_count,
                                         graph_cache_dir=settings.effective_graph_cache_dir),
                           engine)
        self._engines = engines
        self.store = VoiceStore(
            list(engines.available.values()),
            settings.voice_directories(),
            default_voice=settings.effective_default_voice,
            memory_budget=settings.voice_memory_mb * 1024 * 1024,
            rescan_interval=settings.rescan_interval,
            preload=settings.preload,
            missing_engines=engines.missing,
        )
        self.scheduler = Scheduler(settings.worker_count, max_jobs=settings.max_requests,
                                   on_idle=trim_heaps)
        defaults = SynthesisParams(length_scale=settings.length_scale,
                                   noise_scale=settings.noise_scale,
                                   noise_w_scale=settings.noise_w_scale,
                                   sentence_silence=settings.sentence_silence,
                                   paragraph_silence=settings.paragraph_silence)
        limits = TextLimits(settings.max_text_chars, settings.max_sentence_chars)
        self.on_demand = (OnDemandVoices(installer, self.store) if installer is not None
                          else None)
        self.synthesizer = Synthesizer(self.store, self.scheduler, limits, defaults,
                                       front_end=TextFrontEnd(settings.front_end_options),
                                       strict_speakers=settings.strict_speakers,
                                       on_demand=self.on_demand)
        self.metrics = Metrics()
        self.metrics.watch(self.scheduler, self.store)
        self._wyoming: asyncio.Server | None = None
        self._http: HttpApi | None = None
        self._metrics_door: MetricsDoor | None = None
        self._announcement: Announcement | None = None
        self.cache: AudioCache | None = None
        self._started = False
        self._stopping = False
        self._wyoming_cap = ConnectionCap("wyoming", settings.max_connections, self.metrics)
        self._connections: dict[asyncio.Task[None], WyomingHandler] = {}
        """Each open Wyoming connection's task, to cancel at stop, and its handler, to drain."""

    async def start(self, doors: bool = True, early_door: EarlyDoor | None = None) -> None:
        """Open the front doors, then warm the default voice.

        The doors open as soon as the voices are scanned, so a client's ``describe`` is
        answered at once; a request that comes before the default voice is warm waits
        for that load, and the HTTP readiness check says "not ready" until it is (what
        load balancers and Kubernetes go by). ``doors=False`` (``chorus say``) opens
        neither Wyoming nor HTTP. ``early_door``: the Wyoming listener ``chorus serve``
        opened before this module was imported (:mod:`.early_door`); its connections
        become this runtime's where the Wyoming door would otherwise open. What
        ``describe`` answers is kept for the next start's early door
        (:mod:`.describe_snapshot`).
        """
        if doors and self.settings.zeroconf:
            announced_address(self.settings.wyoming_uri)  # a bad URI fails before any load
        if doors:
            self.settings.check_ports()
            if self.settings.metrics_port is not None:
                # First, unlike the speech doors: a taken port fails at once, and the
                # warm-up (memory, CPU) can already be scraped.
                from .metrics_http import MetricsDoor

                self._metrics_door = MetricsDoor(
                    self.metrics, keepalive_timeout=self.settings.http_keepalive_timeout)
                await self._metrics_door.start(self.settings.http_host,
                                               self.settings.metrics_port)
        self.scheduler.start()
        if self.on_demand is not None:  # a default voice still to download comes first
            await self.on_demand.install_default(self.settings.effective_default_voice)
        await self.store.open()
        opened = ""
        snapshot = None
        if doors:
            if self.on_demand is None:
                snapshot = (build_info(self.store.installed()).event().data,
                            list(self.store.scanned))
            if early_door is not None:  # which raised the open-file limit before it opened
                self._wyoming = early_door.hand_over(self._on_connection)
            else:
                raise_open_file_limit(self.settings.connection_caps)
                self._wyoming = await listen(self.settings.wyoming_uri, self._on_connection)
            opened += f", Wyoming on {self.settings.wyoming_uri}"
            if self.settings.zeroconf:
                self._announcement = await announce(self.settings.zeroconf_name,
                                                    self.settings.wyoming_uri)
            if self.settings.http:
                if self.settings.cache:
                    from .cache import AudioCache  # after the Wyoming door: ~10 ms

                    self.cache = AudioCache(self.settings.effective_cache_dir,
                                            int(self.settings.cache_max_mb * 1024 * 1024),
                                            self.settings.cache_ttl)
                    await self.cache.start()
                    self.metrics.watch_cache(self.cache)
                await self._start_http()
                opened += f", HTTP on http://{self.settings.http_host}:{self.settings.http_port}"
            if self._metrics_door is not None:
                opened += (f", metrics on http://{self.settings.http_host}:"
                           f"{self._metrics_door.port}/metrics")
        # The text front end's libraries load beside the default voice: neither the
        # first describe nor the first request waits for them (text/frontend.py).
        await asyncio.gather(self.store.warm(), asyncio.to_thread(warm_libraries),
                             *([asyncio.to_thread(describe_snapshot.save, self.settings,
                                                  *snapshot)] if snapshot else []))
        self._started = True
        offered = (f" (+{len(self.on_demand.offered())} on first use)"
                   if self.on_demand is not None else "")
        _LOGGER.info("Chorus ready: %d voice(s)%s, default %s, %d worker(s) x %d thread(s) "
                     "on %s%s", len(self.store.installed()), offered,
                     self.store.default_voice, self.scheduler.workers,
                     self.settings.threads_per_worker, self.device, opened)

    async def _start_http(self) -> None:
        settings = self.settings
        from .http_api import HttpApi

        self._http = HttpApi(self.synthesizer, self.metrics, ready=self.not_ready,
                             api_key=settings.api_key or None,
                             cors_origins=settings.cors_origins,
                             openai_voices=settings.openai_voices,
                             write_timeout=settings.client_timeout, cache=self.cache,
                             max_requests_per_client=settings.max_requests_per_client,
                             body_timeout=settings.http_body_timeout,
                             max_connections=settings.max_http_connections,
                             public_routes=settings.public_routes,
                             trusted_proxies=settings.trusted_proxies,
                             cloning=self._cloning())
        await self._http.start(settings.http_host, settings.http_port,
                               keepalive_timeout=settings.http_keepalive_timeout)

    def _cloning(self) -> VoiceCloning:
        """Cloned voices are written into the first ``--voices-dir`` (the embedded
        voice's directory is the package's own) and must be spoken by the XTTS engine."""
        from .voice_cloning import XTTS_INSTALL_HINT, CloneTarget, VoiceCloning

        settings = self.settings
        first = settings.voices_dirs[0] if settings.voices_dirs else None
        missing = (None if "xtts" in self._engines.available
                   else self._engines.missing.get("xtts", XTTS_INSTALL_HINT))
        on_demand = self.on_demand

        def offered(name: str) -> bool:
            return on_demand is not None and on_demand.get(name) is not None

        return VoiceCloning(
            self.store, CloneTarget(first, tuple(settings.voice_directories())),
            enabled=settings.voice_cloning, engine_missing=missing, offered=offered)

    def not_ready(self) -> str | None:
        """Why the server should get no traffic now, or ``None`` when it is ready."""
        if self._stopping:
            return "shutting down"
        default = self.store.default_voice
        if default and default not in {v.spec.name for v in self.store.resident()}:
            return f"default voice {default} is not loaded"
        if not self._started:
            return "starting"
        return None

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter,
                             first_read: asyncio.Future[Event | None] | None = None) -> None:
        """``first_read``: a read already under way on a connection from the early door."""
        if not self._wyoming_cap.make_room():
            if first_read is not None:
                first_read.cancel()
                await asyncio.gather(first_read, return_exceptions=True)
            await self._turn_away(writer)
            return
        handler = WyomingHandler(reader, writer, self.synthesizer, metrics=self.metrics,
                                 write_timeout=self.settings.client_timeout,
                                 stream_idle_timeout=self.settings.stream_idle_timeout,
                                 idle_timeout=self.settings.idle_timeout,
                                 max_backlog=self.settings.max_pipelined,
                                 first_read=first_read)
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("connection callback outside a task")
        self._wyoming_cap.add(handler)
        self._connections[task] = handler
        try:
            await handler.run()
        finally:
            self._wyoming_cap.discard(handler)
            del self._connections[task]

    async def _turn_away(self, writer: asyncio.StreamWriter) -> None:
        """Every connection busy at the cap: say ``busy`` and close, keeping the fd
        budget."""
        limit = self.settings.max_connections
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(async_write_event(Error(
                f"all {limit} connections are busy (the limit); retry shortly", "busy"
            ).event(), writer), 1.0)
        writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def stop(self) -> None:
        """Graceful stop: no new connections, in-flight requests finish, then close."""
        self._stopping = True
        if self._announcement is not None:
            try:  # first, so Home Assistant stops offering a server that is going away
                await asyncio.wait_for(self._announcement.withdraw(), 5.0)
            except (OSError, TimeoutError, RuntimeError) as err:  # must not block the stop
                _LOGGER.warning("Zeroconf withdrawal failed: %s", err)
            self._announcement = None
        if self._wyoming is not None:
            self._wyoming.close()
        if self._http is not None:
            await self._http.stop_listening()
        drained = await self.scheduler.drain(self.settings.shutdown_grace)
        if not drained:
            _LOGGER.warning("Requests still running after %.0f s; closing them",
                            self.settings.shutdown_grace)
        handlers = list(self._connections.values())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(h.drain() for h in handlers)), 2.0)
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._wyoming is not None:
            await self._wyoming.wait_closed()
        if self._http is not None:
            await self._http.close()  # responses still being written get a moment
        if self._metrics_door is not None:
            await self._metrics_door.close()  # last: a scrape still sees the shutdown
        await self.scheduler.stop()
        await self.store.close()
        if self.cache is not None:
            await self.cache.close()
