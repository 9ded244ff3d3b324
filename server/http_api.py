"""The HTTP front door: synthesis (whole, streamed, OpenAI-compatible), voices, health
and metrics, on aiohttp in the same event loop as the Wyoming door.

Both doors share one :class:`~chorus.server.synthesis.Synthesizer`, so the scheduler's
fairness, the ``--max-requests`` bound, voice selection and text limits are the same
whichever protocol a client speaks. Errors a client causes are answered as JSON
``{"error": {"code", "message", "type", "param"}}`` (:mod:`.http_errors`) with a 4xx
status (503 for busy and shutting down), never a 5xx for bad input.

A streamed response is only started once the first audio exists (the first window of
the first sentence, or the whole sentence for a voice that does not stream): until
then an error (unknown speaker, busy, text that cannot be phonemized) can still be
answered with its proper status. After that an error can only cut the stream short,
and the connection is closed so the client sees a truncated body rather than a silent
end.

Whole responses (``/synthesize`` and non-streamed ``/v1/audio/speech``) go through the
audio cache (:mod:`chorus.server.cache`) unless the request says ``use_cache: false``;
streamed responses bypass it, since their point is audio before the whole exists. Each
client address (read through ``--trusted-proxies``, see :mod:`.client_address`) may have
``--max-requests-per-client`` requests in progress; one more gets 429 rather than a slot
other clients need.

A client that hangs up takes its request with it: aiohttp cancels the handler (it does
not by default, and a whole response would otherwise be rendered to the end for nobody,
holding a scheduler slot and the workers). Only an answer already rendered is finished
regardless, encoded and stored in the cache, since the next asker gets it for free.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import numpy as np
from aiohttp import web

from chorus.common.xtts import OUTPUT_SAMPLE_RATE

from . import sse as sse_events
from .audio_formats import STREAMABLE, AudioEncoder, content_type, encode, output_rate
from .cache import AudioCache, CacheEntry, cache_key
from .client_address import Network, TrustedProxies
from .connections import LISTEN_BACKLOG
from .engines.base import PCM, ReportsBackends, ReportsDevice, VoiceSpec
from .errors import BadRequest, ChorusError, CloningDisabled, TextTooLong, UnknownVoice
from .http_connections import HttpConnections
from .http_errors import error_body, error_response
from .http_logging import ProtocolLog
from .http_requests import (
    OPENAI_VOICES,
    SSML_CONTENT_TYPE,
    MalformedBody,
    SpeechRequest,
    Unsupported,
    load_json,
    parse_native,
    parse_openai,
    query_body,
)
from .metrics import CONTENT_TYPE, Metrics, RequestMetrics
from .on_demand import OfferedVoice
from .openapi import DOC_PATHS, OPENAI_MODELS, PUBLIC_ROUTES, add_doc_routes, build_openapi
from .rate_limit import ClientLimiter, TooManyRequests, client_id
from .synthesis import Synthesizer, VoiceRequest
from .voice_blends import InvalidVoiceBlend
from .voice_cloning import (
    MAX_UPLOAD_BYTES,
    CloneForm,
    VoiceCloning,
    describe_entry,
    read_form,
)
from .webpage import PUBLIC_PREFIXES, add_web_routes

__all__ = ["HttpApi", "error_status"]

_LOGGER = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS = {
    "bad-request": 422,
    "empty-text": 422,
    "invalid-ssml": 422,
    "text-too-long": 413,
    "unknown-voice": 404,
    "invalid-voice-blend": 422,
    "unknown-speaker": 404,
    "voice-unavailable": 503,
    "voice-download-failed": 503,
    "busy": 503,
    "shutting-down": 503,
    "body-timeout": 408,
    "clip-too-large": 413,
    "unsupported-clip": 415,
    "invalid-clip": 422,
    "voice-exists": 409,
    "voice-not-deletable": 409,
    "voice-cloning-disabled": 403,
    "voice-cloning-unavailable": 501,
    "xtts-checkpoint-missing": 503,
    "voices-dir-unwritable": 507,
}
_VOICE_PATH = "/voices/{name:(?!clone$)[^{}/]+}"
"""``/voices/{name}`` (its canonical form), for every name but ``clone``."""
_RETRY_AFTER = {"busy": "1", "shutting-down": "5"}
_EXPOSED = "X-Audio-Duration, X-Sample-Rate, X-Generation-Time, X-Voice, X-Cache"
_PUBLIC_PATHS = frozenset({"/", *DOC_PATHS})
"""Served without the API key (with the probes and ``PUBLIC_PREFIXES``)."""
_OPENAI_SPEECH = "/v1/audio/speech"
_OPENAI_PARAMS = {"text": "input"}
"""Our field names as OpenAI's body spells them, for an error's ``param``."""


class BodyTimeout(ChorusError):
    """The client took longer than the body deadline to send its request body."""

    code = "body-timeout"


class BodyTooLarge(TextTooLong):
    """The body is over the request size limit (no one field to blame)."""

    param = None


def _describe_offered(voice: OfferedVoice) -> dict[str, Any]:
    """A voice offered for download on first use (``--download-voices``): what the catalog
    says, ``installed`` false; its sample rate is known once it is installed."""
    return {"engine": "piper", "name": voice.name, "language": voice.language,
            "languages": [voice.language],
            "quality": voice.quality, "speakers": list(voice.speakers),
            "num_speakers": voice.num_speakers, "sample_rate": None,
            "description": voice.description, "resident": False, "default": False,
            "installed": False, "backends": None, "device": None}


def error_status(err: ChorusError) -> int:
    """The HTTP status of a Chorus error; unknown codes are the client's fault (400)."""
    if isinstance(err, MalformedBody | Unsupported):
        return 400
    return _STATUS.get(err.code, 400)


def _log_unanswered_failure(task: asyncio.Task[Any]) -> None:
    """A rendered answer whose client left failed to encode or store: a bug, logged."""
    if not task.cancelled() and (err := task.exception()) is not None:
        _LOGGER.error("Encoding or storing an answer nobody waits for failed",
                      exc_info=err)


def _error(status: int, code: str, message: str,
           headers: Mapping[str, str] | None = None) -> web.Response:
    return error_response(status, code, message, headers=headers)


def _param(request: web.Request, err: ChorusError) -> str | None:
    """The field at fault, as the route's body names it."""
    if request.path == _OPENAI_SPEECH and err.param is not None:
        return _OPENAI_PARAMS.get(err.param, err.param)
    return err.param


class HttpApi:
    """The aiohttp application and its listener."""

    def __init__(self, synthesizer: Synthesizer, metrics: Metrics, *,
                 ready: Callable[[], str | None], api_key: str | None = None,
                 cors_origins: tuple[str, ...] = (),
                 openai_voices: tuple[tuple[str, str], ...] = (),
                 write_timeout: float = 30.0, cache: AudioCache | None = None,
                 max_requests_per_client: int | None = None,
                 body_timeout: float = 30.0, max_connections: int = 512,
                 public_routes: Iterable[str] = (),
                 trusted_proxies: Iterable[Network] = (),
                 cloning: VoiceCloning | None = None) -> None:
        self.synthesizer = synthesizer
        self.cloning = cloning
        """Cloned voices (``POST /voices/clone``, ``DELETE /voices/{name}``); None: the
        routes answer that cloning is off."""
        self.metrics = metrics
        self._ready = ready
        """``None`` when ready, else why not (for the /health/ready body)."""
        self._api_key = api_key
        self._public_routes = frozenset(route for group in public_routes
                                        for route in PUBLIC_ROUTES[group])
        """Listing routes (as templates, ``/voices/{name}``) answered without the key."""
        self._proxies = TrustedProxies(trusted_proxies)
        self._cors_origins = frozenset(cors_origins)
        self._openai_voices = dict(openai_voices)
        self._write_timeout = write_timeout
        self._body_timeout = body_timeout
        """A slow body would hold a request slot (and a per-client slot) for as long as
        the sender likes; aiohttp itself sets no deadline on reading it."""
        self.cache = cache
        self._limiter = (ClientLimiter(max_requests_per_client)
                         if max_requests_per_client else None)
        self.connections = HttpConnections(max_connections, metrics)
        self.app = self._build()
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._tails: set[asyncio.Task[tuple[bytes, dict[str, str]]]] = set()
        """Rendered whole answers being encoded and stored, whoever is still waiting."""

    # -- lifecycle ----------------------------------------------------------------------

    def _build(self) -> web.Application:
        app = web.Application(middlewares=[self.connections.middleware,
                                           self._cors_middleware, self._error_middleware,
                                           self._auth_middleware, self._limit_middleware])
        app.on_response_prepare.append(self._add_cors_headers)
        app.add_routes([
            web.post("/synthesize", self.synthesize),
            web.post("/synthesize/stream", self.synthesize_stream),
            web.get("/voices", self.voices),
            web.post("/voices/clone", self.clone_voice),
            # any name but the clone route's own: GET /voices/clone is 405, not a voice
            web.get(_VOICE_PATH, self.voice),
            web.delete(_VOICE_PATH, self.delete_voice),
            web.post("/v1/audio/speech", self.openai_speech),
            web.get("/v1/audio/voices", self.openai_voices),
            web.get("/v1/audio/models", self.openai_audio_models),
            web.get("/v1/models", self.openai_models),
            web.get("/health/live", self.live),
            web.get("/health/ready", self.ready),
            web.get("/metrics", self.metrics_page),
            web.get("/cache/stats", self.cache_stats),
            web.delete("/cache", self.cache_clear),
        ])
        add_web_routes(app)
        add_doc_routes(app, build_openapi(self.synthesizer.max_chars,
                                          auth=self._api_key is not None,
                                          public=self._public_routes))
        return app

    async def start(self, host: str, port: int, shutdown_timeout: float = 5.0,
                    keepalive_timeout: float = 15.0) -> None:
        """Listen; ``keepalive_timeout`` also bounds how long a new connection may take to
        send its first request headers (aiohttp starts that clock at connect).

        The listener is opened here rather than by an aiohttp site so that every
        connection passes through the connection cap (:mod:`.http_connections`).
        """
        self._runner = web.AppRunner(self.app, shutdown_timeout=shutdown_timeout,
                                     keepalive_timeout=keepalive_timeout,
                                     handler_cancellation=True,
                                     logger=ProtocolLog(logging.getLogger("aiohttp.server")))
        await self._runner.setup()
        self.connections.server = self._runner.server
        self._listener = await asyncio.get_running_loop().create_server(
            self.connections.protocol, host, port, reuse_address=True,
            backlog=LISTEN_BACKLOG)

    async def stop_listening(self) -> None:
        """Refuse new connections; requests in progress carry on (graceful shutdown)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def close(self) -> None:
        """Wait (up to the shutdown timeout) for open responses, then close everything."""
        await self.stop_listening()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await asyncio.gather(*self._tails, return_exceptions=True)

    # -- middleware ---------------------------------------------------------------------

    def _cors_allowed(self, origin: str | None) -> bool:
        return origin is not None and (origin in self._cors_origins
                                       or "*" in self._cors_origins)

    @web.middleware
    async def _cors_middleware(self, request: web.Request,
                               handler: Handler) -> web.StreamResponse:
        """Answer CORS preflights for allowed origins (before auth: browsers send none)."""
        origin = request.headers.get("Origin")
        if (request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
                and self._cors_allowed(origin)):
            return web.Response(status=204, headers={
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            })
        return await handler(request)

    async def _add_cors_headers(self, request: web.Request,
                                response: web.StreamResponse) -> None:
        """Every response, streamed ones included, gets the CORS headers it needs."""
        origin = request.headers.get("Origin")
        if not self._cors_origins:
            return
        response.headers.add("Vary", "Origin")
        if origin is not None and self._cors_allowed(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = _EXPOSED

    def _public(self, request: web.Request) -> bool:
        """The probes, the page, the docs, and the listings ``--public-routes`` opens."""
        if request.path in _PUBLIC_PATHS or request.path.startswith(
                ("/health/", *PUBLIC_PREFIXES)):
            return True
        resource = request.match_info.route.resource
        return (request.method in ("GET", "HEAD") and resource is not None
                and resource.canonical in self._public_routes)

    @web.middleware
    async def _auth_middleware(self, request: web.Request,
                               handler: Handler) -> web.StreamResponse:
        """With an API key, all but the public routes need ``Bearer <key>``."""
        if self._api_key is None or self._public(request):
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        # Header bytes that are not UTF-8 reach us as surrogate escapes: back to bytes.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode("utf-8", "surrogateescape"), self._api_key.encode()):
            return _error(401, "unauthorized", "missing or wrong API key; send "
                          "'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"})
        return await handler(request)

    @web.middleware
    async def _limit_middleware(self, request: web.Request,
                                handler: Handler) -> web.StreamResponse:
        """At most N synthesis requests (POSTs) in progress per client.

        Only POSTs count: they are what costs model time, while GETs (listings, probes,
        scrapes, the web page's static files, which a browser fetches several at once)
        are cheap and must not be refused. The slot is held until the response is sent
        (a whole response is sent here, inside the slot), and released however the
        request ends, a client that hangs up included.
        """
        if self._limiter is None or request.method != "POST":
            return await handler(request)
        client = client_id(self._proxies.client(
            request.remote, request.headers.getall("X-Forwarded-For", ())))
        try:
            with self._limiter.hold(client):
                response = await handler(request)
                if not response.prepared:
                    await response.prepare(request)
                    await response.write_eof()
                return response
        except TooManyRequests as err:
            self.metrics.error("http", "too-many-requests")
            return _error(429, "too-many-requests", str(err), {"Retry-After": "1"})

    @web.middleware
    async def _error_middleware(self, request: web.Request,
                                handler: Handler) -> web.StreamResponse:
        """Every error leaves as JSON; a Chorus error gets its status, bugs a 500."""
        try:
            return await handler(request)
        except ChorusError as err:
            status = error_status(err)
            return error_response(status, err.code, err.message, _param(request, err),
                                  {"Retry-After": _RETRY_AFTER[err.code]}
                                  if err.code in _RETRY_AFTER else None)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items()
                       if k.lower() not in ("content-type", "content-length")}
            code = exc.reason.lower().replace(" ", "-")
            return _error(exc.status, code, exc.text or exc.reason, headers)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as err:
            _LOGGER.exception("HTTP %s %s failed", request.method, request.path)
            return _error(500, "internal", f"synthesis failed: {err}")

    # -- synthesis ----------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self._body_timeout):  # see _write on wait_for
                raw = await request.read()
        except TimeoutError as err:
            raise BodyTimeout(f"request body not received within {self._body_timeout:g} s"
                              ) from err
        except web.HTTPRequestEntityTooLarge as err:
            raise BodyTooLarge(f"request body is larger than {request.client_max_size} "
                               "bytes") from err
        except (ConnectionResetError, RuntimeError) as err:
            if request.transport is not None:
                raise
            # aiohttp says "Connection closed." with a RuntimeError when the connection
            # went first; either way nobody is left to answer (see http_connections).
            raise ConnectionResetError("connection closed before the request body "
                                       "arrived") from err
        if request.content_type == SSML_CONTENT_TYPE:
            try:
                document = raw.decode(request.charset or "utf-8")
            except (UnicodeDecodeError, LookupError) as err:
                raise MalformedBody(f"SSML body is not {request.charset or 'utf-8'} text: "
                                    f"{err}") from err
            return query_body(request.query, document,
                              "input" if request.path == _OPENAI_SPEECH else "text")
        return load_json(raw)

    async def synthesize(self, request: web.Request) -> web.StreamResponse:
        """The whole audio in one response, with its duration and timing in headers."""
        with self.metrics.request("http", "") as record:
            speech = parse_native(await self._body(request))
            record.format = speech.format.name
            return await self._whole(speech, record)

    async def synthesize_stream(self, request: web.Request) -> web.StreamResponse:
        """Chunked audio; the first bytes leave once the first window is rendered."""
        with self.metrics.request("http", "") as record:
            speech = parse_native(await self._body(request))
            record.format = speech.format.name
            if speech.format.name not in STREAMABLE:
                raise BadRequest(f"format: {speech.format.name} cannot be streamed; use "
                                 f"one of {', '.join(sorted(STREAMABLE))}, or /synthesize")
            return await self._stream(request, speech, record)

    async def openai_speech(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's ``/v1/audio/speech``: streamed like OpenAI does (the bytes, or SSE
        events with ``stream_format: sse``), flac whole."""
        with self.metrics.request("http", "") as record:
            given = parse_openai(await self._body(request))
            speech = given.speech
            record.format = speech.format.name
            speech = dataclasses.replace(
                speech, voice=VoiceRequest(name=self._openai_voice(given.voice)))
            if speech.format.name in STREAMABLE:
                return await self._stream(request, speech, record, sse=given.sse)
            return await self._whole(speech, record)

    def _openai_voice(self, name: str | None) -> str | None:
        """Mapped OpenAI name, else an installed voice, else the default for OpenAI names."""
        if not name:
            return None
        if name in self._openai_voices:
            return self._openai_voices[name]
        if name.lower() in OPENAI_VOICES:
            return None
        return name  # an installed voice, or unknown-voice with close names

    def _headers(self, speech: SpeechRequest, voice: str, voice_rate: int) -> dict[str, str]:
        rate = output_rate(speech.format, voice_rate, speech.sample_rate)
        return {"Content-Type": content_type(speech.format, rate),
                "X-Voice": voice,
                "X-Sample-Rate": str(rate)}

    def _cache_key(self, speech: SpeechRequest, spec: VoiceSpec) -> str:
        """Every input that changes the bytes: a different value is a different entry.

        Parameters are merged with the server defaults first, so a request that spells
        out a default shares the entry of one that leaves it out. The voice files'
        fingerprint (mtime, size) makes a replaced voice miss instead of serving stale
        audio.
        """
        # The very merge Synthesizer.open applies, so the key describes what is rendered.
        params = self.synthesizer.effective_params(spec, speech.voice.speaker, speech.params,
                                                   speech.voice.language)
        fmt = speech.format
        rate = output_rate(fmt, spec.sample_rate, speech.sample_rate)
        return cache_key(
            engine=spec.engine, voice=spec.name, fingerprint=list(spec.fingerprint),
            **dataclasses.asdict(params),  # every knob, including ones added later
            text=speech.text, text_format=speech.reading.format,
            reading=dataclasses.asdict(
                speech.reading.options(self.synthesizer.front_end.options)),
            format=fmt.name, container=fmt.container, codec=fmt.codec,
            voice_rate=spec.sample_rate, requested_rate=speech.sample_rate,
            output_rate=rate, content_type=content_type(fmt, rate))

    async def _whole(self, speech: SpeechRequest, record: RequestMetrics) -> web.Response:
        self.synthesizer.check_text(speech.text)
        cache = self.cache if speech.use_cache else None
        if cache is not None:
            key = self._cache_key(speech, await self.synthesizer.resolve(speech.voice))
            entry = await cache.get(key)
            if entry is not None:
                record.voice = entry.voice
                record.cached = True
                return web.Response(body=entry.body, headers={
                    "Content-Type": entry.content_type, "X-Voice": entry.voice,
                    "X-Sample-Rate": str(entry.sample_rate),
                    "X-Audio-Duration": f"{entry.duration:.3f}",
                    "X-Generation-Time": "0.000", "X-Cache": "hit"})
        started = time.perf_counter()
        utterance = await self.synthesizer.open(speech.voice, speech.params,
                                                text=speech.reading)
        spec = utterance.spec
        record.voice = spec.name
        chunks = []
        try:
            utterance.add_text(speech.text)
            utterance.end_text()
            async for pcm in utterance.audio():
                record.audio(len(pcm), spec.sample_rate)
                chunks.append(pcm)
        finally:
            await utterance.close()
        generation = time.perf_counter() - started
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        tail = asyncio.create_task(self._encode_and_store(speech, spec, pcm, cache))
        self._tails.add(tail)
        tail.add_done_callback(self._tails.discard)
        try:
            body, headers = await asyncio.shield(tail)
        except asyncio.CancelledError:
            tail.add_done_callback(_log_unanswered_failure)  # nobody else will see it
            raise
        headers["X-Generation-Time"] = f"{generation:.3f}"
        return web.Response(body=body, headers=headers)

    async def _encode_and_store(self, speech: SpeechRequest, spec: VoiceSpec, pcm: PCM,
                                cache: AudioCache | None) -> tuple[bytes, dict[str, str]]:
        """A rendered answer's body and headers, stored in the cache on the way."""
        body = await asyncio.to_thread(encode, speech.format, pcm, spec.sample_rate,
                                       speech.sample_rate)
        headers = self._headers(speech, spec.name, spec.sample_rate)
        headers["X-Audio-Duration"] = f"{len(pcm) / spec.sample_rate:.3f}"
        headers["X-Cache"] = "miss"
        if cache is not None:
            # Keyed by the spec actually rendered (a rescan may have replaced the voice
            # since the lookup); stored before answering so that the next request hits.
            await cache.put(self._cache_key(speech, spec), CacheEntry(
                body, headers["Content-Type"], len(pcm) / spec.sample_rate,
                int(headers["X-Sample-Rate"]), spec.name))
        return body, headers

    async def _stream(self, request: web.Request, speech: SpeechRequest,
                      record: RequestMetrics, *, sse: bool = False) -> web.StreamResponse:
        """Encoded audio as it is rendered: the bytes themselves, or with ``sse`` each
        piece in a ``speech.audio.delta`` event (:mod:`.sse`)."""
        self.synthesizer.check_text(speech.text)
        utterance = await self.synthesizer.open(speech.voice, speech.params,
                                                text=speech.reading)
        spec = utterance.spec
        record.voice = spec.name
        frame: Callable[[bytes], bytes] = sse_events.audio_delta if sse else bytes
        encoder: AudioEncoder | None = None
        response: web.StreamResponse | None = None
        try:
            encoder = AudioEncoder(speech.format, spec.sample_rate, speech.sample_rate,
                                   streaming=True)
            utterance.add_text(speech.text)
            utterance.end_text()
            async for pcm in utterance.audio():
                record.audio(len(pcm), spec.sample_rate)
                data = encoder.feed(pcm)
                if response is None:
                    response = await self._start_stream(request, speech, spec, sse)
                if data:
                    await self._write(response, frame(data))
            if response is None:  # no audio at all (text of punctuation only)
                response = await self._start_stream(request, speech, spec, sse)
            tail = encoder.finish()
            if tail:
                await self._write(response, frame(tail))
            if sse:
                await self._write(response, sse_events.audio_done())
            await response.write_eof()
        except (Exception, asyncio.CancelledError) as err:
            if response is None:
                raise  # nothing sent yet: a Chorus error is answered with its status
            gone = isinstance(err, ConnectionError | TimeoutError | asyncio.CancelledError)
            if gone or isinstance(err, ChorusError):
                _LOGGER.info("HTTP stream cut short: %s",
                             getattr(err, "message", None) or repr(err))
            else:
                _LOGGER.exception("HTTP stream failed")
            record.fail(err)
            if sse and not gone and await self._end_with_error(request, response, err):
                return response
            if request.transport is not None:
                request.transport.abort()  # a truncated chunked body, not a clean end
            if isinstance(err, asyncio.CancelledError):
                raise
        finally:
            if encoder is not None:
                encoder.close()
            await utterance.close()
        return response

    async def _end_with_error(self, request: web.Request, response: web.StreamResponse,
                              err: BaseException) -> bool:
        """End an event stream with an ``error`` event; ``False`` if it could not be sent."""
        if isinstance(err, ChorusError):
            status = error_status(err)
            body = error_body(status, err.code, err.message, _param(request, err))
        else:
            body = error_body(500, "internal", f"synthesis failed: {err}")
        try:
            await self._write(response, sse_events.error_event(body["error"]))
            await response.write_eof()
        except (ConnectionError, TimeoutError, RuntimeError):
            return False
        return True

    async def _start_stream(self, request: web.Request, speech: SpeechRequest,
                            spec: VoiceSpec, sse: bool) -> web.StreamResponse:
        headers = self._headers(speech, spec.name, spec.sample_rate)
        if sse:
            headers.update({"Content-Type": sse_events.CONTENT_TYPE,
                            "Cache-Control": "no-cache"})
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        return response

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        """Send, dropping a client that leaves audio unread (it holds a scheduler slot).

        asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation (a
        departed client) that arrives as the write completes, and rendering goes on."""
        async with asyncio.timeout(self._write_timeout):
            await response.write(data)

    # -- voices -------------------------------------------------------------------------

    def _describe(self, name: str) -> dict[str, Any]:
        on_demand = self.synthesizer.on_demand
        if on_demand is not None and (offered := on_demand.get(name)) is not None:
            return _describe_offered(offered)
        spec = self.synthesizer.store.resolve(name)
        resident = {v.spec.name: v for v in self.synthesizer.store.resident()}
        loaded = resident.get(spec.name)
        return {"engine": spec.engine, "name": spec.name, "language": spec.language,
                "languages": list(spec.all_languages),
                "quality": spec.quality, "speakers": list(spec.speakers),
                "num_speakers": spec.num_speakers, "sample_rate": spec.sample_rate,
                "description": spec.description, "resident": spec.name in resident,
                "default": spec.name == self.synthesizer.store.default_voice,
                "installed": not spec.blend,  # a blend is made per request
                # what runs each graph part, with its quality-gate figures (resident only)
                "backends": (loaded.backends if isinstance(loaded, ReportsBackends)
                             else None),
                # where its model runs, cpu or cuda:N (resident only)
                "device": loaded.device if isinstance(loaded, ReportsDevice) else None}

    def _names(self) -> list[str]:
        """Installed voices, then those offered for download on first use."""
        on_demand = self.synthesizer.on_demand
        offered = on_demand.offered() if on_demand is not None else []
        return ([spec.name for spec in self.synthesizer.store.installed()]
                + [voice.name for voice in offered])

    async def voices(self, request: web.Request) -> web.Response:
        return web.json_response({"voices": [self._describe(n) for n in self._names()]})

    async def voice(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            return web.json_response(self._describe(name))
        except InvalidVoiceBlend as err:  # a lookup: a name that is no voice is not found
            raise UnknownVoice(f"voice {name!r} is not installed, nor a voice blend: "
                               f"{err.message}") from err

    def _cloning(self) -> VoiceCloning:
        if self.cloning is None:
            raise CloningDisabled("voice cloning is turned off on this server")
        self.cloning.check_enabled()
        return self.cloning

    async def clone_voice(self, request: web.Request) -> web.Response:
        """A cloned voice from uploaded clips (:mod:`.voice_cloning`): 201 with the voice
        as ``/voices`` lists it."""
        cloning = self._cloning()
        try:
            form = await self._clone_form(request)
        except ChorusError as err:
            if (request.content_length or 0) <= MAX_UPLOAD_BYTES:
                raise  # aiohttp drains what is left (for a few seconds) after the answer
            # Announced larger than any clone: answer and close, reading none of it.
            response = error_response(error_status(err), err.code, err.message, err.param)
            response.force_close()
            return response
        entry = await cloning.clone(form)
        name = form.name or ""
        try:
            body = self._describe(name)
        except ChorusError:  # its files changed since: what the entry says
            body = describe_entry(name, entry, OUTPUT_SAMPLE_RATE)
        return web.json_response(body, status=201, headers={"Location": f"/voices/{name}"})

    async def _clone_form(self, request: web.Request) -> CloneForm:
        try:
            async with asyncio.timeout(self._body_timeout):  # see _write on wait_for
                return await read_form(request)
        except TimeoutError as err:
            raise BodyTimeout(f"request body not received within {self._body_timeout:g} s"
                              ) from err
        except (ConnectionResetError, RuntimeError) as err:
            if request.transport is not None:
                raise
            raise ConnectionResetError("connection closed before the request body "
                                       "arrived") from err

    async def delete_voice(self, request: web.Request) -> web.Response:
        """Delete a cloned voice (only those: the others belong to their manifest)."""
        await self._cloning().delete(request.match_info["name"])
        return web.Response(status=204)

    async def openai_voices(self, request: web.Request) -> web.Response:
        """Installed voices (and offered ones), then OpenAI names with the installed voice
        each speaks with."""
        store = self.synthesizer.store
        voices: list[dict[str, str]] = [{"id": name, "name": name} for name in self._names()]
        for alias in sorted(set(OPENAI_VOICES) | set(self._openai_voices)):
            target = self._openai_voices.get(alias, store.default_voice)
            voices.append({"id": alias, "name": alias, "voice": target})
        return web.json_response({"voices": voices})

    async def openai_audio_models(self, request: web.Request) -> web.Response:
        """Speech models, shaped as Open WebUI reads them (``{"models": [{"id"}]}``)."""
        return web.json_response({"models": [{"id": model, "name": model}
                                             for model in OPENAI_MODELS]})

    async def openai_models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": model, "object": "model", "created": 0, "owned_by": "chorus"}
            for model in OPENAI_MODELS]})

    # -- health and metrics -------------------------------------------------------------

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "live"})

    async def ready(self, request: web.Request) -> web.Response:
        reason = self._ready()
        if reason is not None:
            return web.json_response({"status": "not-ready", "reason": reason}, status=503)
        return web.json_response({"status": "ready"})

    # -- cache ----------------------------------------------------------------------------

    async def cache_stats(self, request: web.Request) -> web.Response:
        if self.cache is None:
            return web.json_response({"enabled": False, "entries": 0, "bytes": 0,
                                      "max_bytes": 0, "hits": 0, "misses": 0, "ttl": 0,
                                      "write_errors": 0})
        return web.json_response({"enabled": True, **self.cache.stats()})

    async def cache_clear(self, request: web.Request) -> web.Response:
        if self.cache is not None:
            await self.cache.clear()
        return web.Response(status=204)

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE})

