"""The Wyoming front door: one handler per connection.

Requests on a connection are answered in order, but reading never waits for
synthesis: a streaming request (``synthesize-start`` → ``synthesize-chunk``* →
``synthesize`` → ``synthesize-stop``) keeps receiving text while earlier sentences are
already playing, and a ``describe`` is answered at once even mid-request (only a
stream whose text runs more than ``--max-text-chars`` ahead of its speech is read no
further until the speech catches up: bounded buffering, with no total). Every
request gets exactly one ``audio-start`` … ``audio-stop`` span in one audio format
(Home Assistant takes the format from the first ``audio-start``); a stream ends with
``synthesize-stopped`` after its audio, and the connection accepts the next request.
Errors a client causes are answered with an ``error`` event carrying a code. Inside a
stream the connection stays open (``synthesize-stopped`` still follows); after a plain
``synthesize`` fails, or a stream of bytes that is not Wyoming, it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice, TtsVoiceSpeaker
from wyoming.ping import Ping, Pong
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)

from .engines.base import VoiceSpec
from .errors import BadRequest, Busy, ChorusError
from .metrics import Metrics, RequestMetrics
from .on_demand import OfferedVoice
from .synthesis import Synthesizer, Utterance, VoiceRequest
from .text import TextRequest
from .text_budget import TextBudget
from .text_fields import text_request
from .wyoming_protocol import ProtocolError, read_event

__all__ = ["SAMPLES_PER_CHUNK", "WyomingHandler", "build_info"]

_LOGGER = logging.getLogger(__name__)

SAMPLES_PER_CHUNK = 1024
_PIPER_ATTRIBUTION = Attribution(name="rhasspy", url="https://github.com/rhasspy/piper")
_CHORUS_ATTRIBUTION = Attribution(name="Chorus", url="https://github.com/chorus-tts/chorus")


def _version() -> str:
    try:
        return metadata.version("chorus-tts")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def build_info(voices: list[VoiceSpec], offered: Sequence[OfferedVoice] = ()) -> Info:
    """The ``info`` answer: one TTS program listing the installed voices, and with
    ``--download-voices`` the ones installed on first request.

    Offered voices are ``installed`` too, as wyoming-piper lists its downloadable ones:
    Home Assistant skips a voice whose ``installed`` is false, and could never ask for
    it. Their description says that the first request downloads them.
    """
    listed = [TtsVoice(
        name=spec.name,
        description=spec.description,
        attribution=_PIPER_ATTRIBUTION,
        installed=True,
        version=spec.version,
        languages=list(spec.all_languages),
        speakers=[TtsVoiceSpeaker(name=s) for s in spec.speakers] or None,
    ) for spec in voices]
    listed += [TtsVoice(
        name=voice.name,
        description=voice.description,
        attribution=_PIPER_ATTRIBUTION,
        installed=True,
        version=None,
        languages=[voice.language],
        speakers=[TtsVoiceSpeaker(name=s) for s in voice.speakers] or None,
    ) for voice in offered]
    return Info(tts=[TtsProgram(
        name="chorus",
        description="Chorus speech server (Piper)",
        attribution=_CHORUS_ATTRIBUTION,
        installed=True,
        version=_version(),
        supports_synthesize_streaming=True,
        voices=sorted(listed, key=lambda v: v.name),
    )])


def _optional_str(data: dict[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{where}.{key} must be a string")
    return value


def _voice_request(data: dict[str, Any]) -> VoiceRequest:
    voice = data.get("voice")
    if voice is None:
        return VoiceRequest()
    if not isinstance(voice, dict):
        raise BadRequest("voice must be an object with name, language or speaker")
    return VoiceRequest(
        name=_optional_str(voice, "name", "voice"),
        language=_optional_str(voice, "language", "voice"),
        speaker=_optional_str(voice, "speaker", "voice"),
    )


def _text(data: dict[str, Any], event_type: str) -> str:
    text = data.get("text")
    if not isinstance(text, str):
        raise BadRequest(f"{event_type} needs a text string")
    return text


@dataclass
class _Stream:
    """Text of one streaming request on its way to the response task.

    Text waiting here is bounded like text inside the utterance: past the budget's
    limit the connection's reader waits for :meth:`room` until the response takes some,
    or ends.
    """

    budget: TextBudget
    texts: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    failed: bool = False

    def put(self, text: str) -> None:
        self.texts.put_nowait(text)
        self.budget.hold(len(text))

    async def take(self) -> str | None:
        text = await self.texts.get()
        if text is not None:
            self.budget.free(len(text))
        return text

    async def room(self) -> None:
        await self.budget.room()

    def release(self) -> None:
        """The response is over: nobody will take text any more."""
        self.budget.release()

    def stop(self) -> None:
        self.texts.put_nowait(None)
        self.stopped.set()


@dataclass
class _Request:
    """One synthesis request waiting for (or in) this connection's single response slot."""

    voice: VoiceRequest
    stream: _Stream
    streaming: bool
    text: TextRequest
    refused: ChorusError | None = None
    """Why it cannot run (no room in ``--max-requests``): answered in order, as an error."""
    events: int = 1
    """Events it holds in the backlog: itself, and the stream events received for it
    while it waits."""


class BacklogFull(Busy):
    """More pipelined events than a connection may queue: answered, then closed."""


class WyomingHandler:
    """Serves one Wyoming connection.

    At most one request is in progress per connection; pipelined requests wait in a
    bounded backlog (``max_backlog`` events), each counting against ``--max-requests``.
    One worker task serves the backlog in order, so a departing client costs one
    cancellation however many requests it queued.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 synthesizer: Synthesizer, write_timeout: float = 30.0,
                 stream_idle_timeout: float = 120.0, metrics: Metrics | None = None,
                 idle_timeout: float = 60.0, max_backlog: int = 16,
                 first_read: asyncio.Future[Event | None] | None = None) -> None:
        """``first_read``: a read of this connection's next event already under way (or
        done, or failed), as a connection arrives from the early door
        (:mod:`.early_door`); it is taken as the first event."""
        self.reader = reader
        self._first_read = first_read
        self.writer = writer
        self.synthesizer = synthesizer
        self.write_timeout = write_timeout
        """A client that reads nothing for this long is dropped, freeing its slot."""
        self.stream_idle_timeout = stream_idle_timeout
        """An open stream that receives nothing for this long is dropped (it holds a slot)."""
        self.idle_timeout = idle_timeout
        """A connection with no request in progress that sends nothing for this long closes."""
        self.max_backlog = max_backlog
        self.metrics = metrics or Metrics()
        self._write_lock = asyncio.Lock()
        self._stream: _Stream | None = None
        self._backlog: deque[_Request] = deque()
        self._backlog_events = 0
        """Events held by the requests in the backlog, kept as they come and go: summed
        over the backlog on every event, the cost grew with the square of its length
        (0.16 CPU s for 3,000 pipelined requests, all on the event loop)."""
        self._current: _Request | None = None
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._settled.set()
        self._worker: asyncio.Task[None] | None = None
        self._last_activity = asyncio.get_running_loop().time()
        self._ended = False
        self._ending = False
        """A plain ``synthesize`` failed: the connection is closing, nothing more is said."""

    def idle_since(self) -> float | None:
        """When it last finished something, while nothing is in progress or queued
        (the connection cap closes the longest-idle connection to admit a new one)."""
        if self._stream is not None or self._current is not None or self._backlog:
            return None
        return self._last_activity

    def closed(self) -> bool:
        return self._ended

    def close_idle(self) -> None:
        """Make room at the connection cap: the reader sees the end and run() returns."""
        self.writer.transport.close()

    async def write_event(self, event: Event) -> None:
        async with self._write_lock:
            if self._ending:  # half-closed: a write now raises RuntimeError, not an OSError
                raise ConnectionAbortedError("the connection is closing after a failed request")
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation
                # that arrives as the write completes, and the cancelled response goes on.
                async with asyncio.timeout(self.write_timeout):
                    await async_write_event(event, self.writer)
            except TimeoutError as err:
                _LOGGER.warning("Dropping Wyoming client: it left audio unread for %g s",
                                self.write_timeout)
                self.writer.transport.abort()
                raise ConnectionAbortedError("client stopped reading") from err

    async def run(self) -> None:
        """Read events until the peer leaves or breaks the protocol."""
        try:
            while True:
                try:
                    event = await self._next_event()
                except ProtocolError as err:
                    _LOGGER.warning("Closing Wyoming connection: %s", err)
                    await self._refuse(err)
                    return
                except TimeoutError:
                    if self._stream is None:
                        _LOGGER.debug("Closing Wyoming connection: idle for %g s",
                                      self.idle_timeout)
                        return
                    _LOGGER.warning("Closing Wyoming connection: stream idle for %.0f s",
                                    self.stream_idle_timeout)
                    await self.write_event(Error(
                        f"stream received nothing for {self.stream_idle_timeout:g} s",
                        "timeout").event())
                    return
                if event is None or self._ending:
                    return  # events read behind a failed plain request stay unanswered
                self._last_activity = asyncio.get_running_loop().time()
                try:
                    await self.handle_event(event)
                except BacklogFull as err:
                    _LOGGER.warning("Closing Wyoming connection: %s", err.message)
                    await self.write_event(Error(err.message, err.code).event())
                    return
                except ChorusError as err:
                    plain = Synthesize.is_type(event.type) and self._stream is None
                    if plain:
                        await self.drain()  # earlier requests are answered first
                    await self.write_event(Error(err.message, err.code).event())
                    if plain:
                        self._hang_up()
                        return
        except ConnectionError:
            _LOGGER.debug("Wyoming client went away")
        except asyncio.CancelledError:
            # Shutdown cancels connections still open. run() is the top of the connection
            # task, so it ends normally: Python 3.11's stream callback logs a cancelled
            # connection task as an ERROR with a traceback.
            _LOGGER.debug("Wyoming connection closed by shutdown")
        finally:
            self._ended = True
            await self._cancel_requests()
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()

    def _idle_limit(self) -> float | None:
        """Seconds of silence allowed now; ``None`` while a request is being answered."""
        if self._stream is not None:
            return self.stream_idle_timeout
        if self._current is not None or self._backlog:
            return None
        return self.idle_timeout

    async def _next_event(self) -> Event | None:
        """The next event, or :class:`TimeoutError` once the idle limit has passed.

        The limit is looked at again whenever it may have changed (a request ending
        starts the idle clock), without cancelling a read that is half-way through an
        event.
        """
        loop = asyncio.get_running_loop()
        read = self._first_read or asyncio.ensure_future(read_event(self.reader))
        self._first_read = None
        try:
            while True:
                limit = self._idle_limit()
                wait = 1.0 if limit is None else self._last_activity + limit - loop.time()
                if wait <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait({read}, timeout=min(wait, 1.0))
                if done:
                    return read.result()
        finally:
            if not read.done():
                read.cancel()
                # gather, not a suppressed await: a cancellation of this task must go on.
                await asyncio.gather(read, return_exceptions=True)

    async def _cancel_requests(self) -> None:
        """Drop every queued request and cancel the one in progress, all at once."""
        while self._backlog:
            if self._backlog.popleft().refused is None:
                self.synthesizer.scheduler.unreserve()
        self._backlog_events = 0
        worker, self._worker = self._worker, None
        if worker is not None:
            self._wake.set()  # a worker between requests sees the end and returns
            while not worker.done():  # a cancellation some library lost is sent again
                worker.cancel()
                await asyncio.wait({worker}, timeout=1.0)
            if not worker.cancelled():
                worker.exception()  # retrieved: it ended as it should

    async def _refuse(self, err: ProtocolError) -> None:
        """Say why, then close politely: half-close and discard what the peer still sends.

        Closing with unread input makes the kernel answer with a reset, which can destroy
        the error event before the peer reads it.
        """
        with contextlib.suppress(OSError):  # ENOTCONN from write_eof: the peer is gone
            await self.write_event(Error(str(err), "protocol-error").event())
            if self.writer.can_write_eof():
                self.writer.write_eof()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._discard_input()

    async def _discard_input(self, limit: int = 1 << 20) -> None:
        while limit > 0 and (chunk := await self.reader.read(65536)):
            limit -= len(chunk)

    async def drain(self) -> None:
        """Wait for this connection's requests to finish (graceful shutdown)."""
        await self._settled.wait()

    async def handle_event(self, event: Event) -> None:
        data = event.data
        if Describe.is_type(event.type):
            on_demand = self.synthesizer.on_demand
            await self.write_event(build_info(
                self.synthesizer.store.installed(),
                on_demand.offered() if on_demand is not None else ()).event())
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=data.get("text")).event())
        elif Synthesize.is_type(event.type):
            if self._stream is not None:
                return  # the compatibility copy sent inside a stream
            text = _text(data, event.type)
            voice = _voice_request(data)
            reading = text_request(data)
            self.synthesizer.check_text(text)
            whole = _Stream(TextBudget(self.synthesizer.max_chars))
            whole.put(text)
            whole.stop()
            self._start_response(voice, whole, False, reading)
        elif SynthesizeStart.is_type(event.type):
            if self._stream is not None:
                raise BadRequest("synthesize-start while a stream is open; "
                                 "send synthesize-stop first")
            voice = _voice_request(data)
            reading = text_request(data)
            self._stream = _Stream(TextBudget(self.synthesizer.max_chars))
            self._start_response(voice, self._stream, True, reading)
        elif SynthesizeChunk.is_type(event.type):
            text = _text(data, event.type)
            if self._stream is None:
                raise BadRequest("synthesize-chunk outside a stream; send synthesize-start")
            if not self._stream.failed:
                if self._waiting_stream() is not None:
                    self._check_backlog()  # its request has not started: the text waits
                self._hold_stream_event()
                self._stream.put(text)
                await self._stream.room()  # no total for a stream, but bounded buffering
        elif SynthesizeStop.is_type(event.type):
            if self._stream is None:
                raise BadRequest("synthesize-stop outside a stream")
            self._hold_stream_event()
            self._stream.stop()
            self._stream = None
        else:
            _LOGGER.debug("Ignoring Wyoming event %s", event.type)

    def _waiting_stream(self) -> _Request | None:
        """The open stream's request, while it waits in the backlog."""
        if self._backlog and self._backlog[-1].stream is self._stream:
            return self._backlog[-1]
        return None

    def _hold_stream_event(self) -> None:
        """Count an event of the open stream that waits with its request."""
        if (request := self._waiting_stream()) is not None:
            request.events += 1
            self._backlog_events += 1

    def _check_backlog(self) -> None:
        queued = self._backlog_events
        if queued >= self.max_backlog:
            raise BacklogFull(f"too many pipelined events: {queued} wait behind the request "
                              f"in progress (limit {self.max_backlog}); closing")

    def _start_response(self, voice: VoiceRequest, stream: _Stream, streaming: bool,
                        text: TextRequest) -> None:
        if self._current is not None or self._backlog:
            self._check_backlog()
        request = _Request(voice, stream, streaming, text)
        try:
            self.synthesizer.scheduler.reserve()
        except ChorusError as err:
            request.refused = err
        self._backlog.append(request)
        self._backlog_events += request.events
        self._settled.clear()
        self._wake.set()
        if self._worker is None:
            self._worker = asyncio.create_task(self._serve_backlog(), name="wyoming-requests")

    async def _serve_backlog(self) -> None:
        """The connection's one response slot: requests in arrival order, one at a time."""
        while not self._ended:
            while not self._backlog:
                self._settled.set()
                if self._ended:
                    return
                self._wake.clear()
                await self._wake.wait()
            request = self._current = self._backlog.popleft()
            self._backlog_events -= request.events
            if request.refused is None:
                self.synthesizer.scheduler.unreserve()
            try:
                if self._ending:  # queued behind a failed plain request: dropped
                    request.stream.release()
                    continue
                await self._respond(request)
            except ConnectionError:
                _LOGGER.debug("Wyoming client went away during a response")
            finally:
                self._current = None
                self._last_activity = asyncio.get_running_loop().time()

    async def _respond(self, request: _Request) -> None:
        voice, stream, streaming = request.voice, request.stream, request.streaming
        try:
            if request.refused is not None:
                raise request.refused
            await self._speak(voice, stream, streaming, request.text)
        except ChorusError as err:
            stream.failed = True
            await self.write_event(Error(err.message, err.code).event())
        except ConnectionError:
            return
        except Exception as err:
            _LOGGER.exception("Synthesis failed")
            stream.failed = True
            await self.write_event(Error(f"synthesis failed: {err}", "internal").event())
        finally:
            stream.release()
        if streaming:
            await stream.stopped.wait()  # after a failure too: answer synthesize-stop
            await self.write_event(SynthesizeStopped().event())
        elif stream.failed:
            self._hang_up()

    def _hang_up(self) -> None:
        """End the connection after a failed plain ``synthesize``, as wyoming-piper does.

        Home Assistant up to 2025.6 ignores ``error`` and waits for audio with no time
        limit; the end of the connection is what ends its wait. The half-close goes out
        before the close so the error is read before the end, not reset away. Nothing is
        written after it: events already read behind the failed request, and requests
        queued behind it, stay unanswered (after a half-close a write raises
        ``RuntimeError``, which is no client's doing).
        """
        self._ending = True
        if self.writer.can_write_eof():
            with contextlib.suppress(OSError):  # ENOTCONN: the peer is already gone
                self.writer.write_eof()
        self.writer.transport.close()  # the reader sees EOF: run() ends and cleans up

    async def _speak(self, voice: VoiceRequest, stream: _Stream, streaming: bool,
                     text: TextRequest) -> None:
        with self.metrics.request("wyoming", "pcm") as record:
            await self._speak_recorded(voice, stream, streaming, text, record)

    async def _speak_recorded(self, voice: VoiceRequest, stream: _Stream, streaming: bool,
                              text: TextRequest, record: RequestMetrics) -> None:
        always_frame = not streaming
        utterance = await self.synthesizer.open(voice, stream=streaming, text=text)
        rate = utterance.spec.sample_rate
        record.voice = utterance.spec.name
        pump = asyncio.create_task(self._pump(stream, utterance))
        started = False
        try:
            async for pcm in utterance.audio():
                if not started:
                    await self.write_event(AudioStart(rate=rate, width=2, channels=1).event())
                    started = True
                record.audio(len(pcm), rate)
                audio = pcm.tobytes()
                step = SAMPLES_PER_CHUNK * 2
                for offset in range(0, len(audio), step):
                    await self.write_event(AudioChunk(
                        rate=rate, width=2, channels=1, audio=audio[offset:offset + step],
                    ).event())
            if always_frame and not started:
                await self.write_event(AudioStart(rate=rate, width=2, channels=1).event())
                started = True
            if started:
                await self.write_event(AudioStop().event())
        finally:
            pump.cancel()
            try:
                # Not a suppressed await: that would swallow the cancellation of this
                # task (a departed client), and the connection would never close.
                await asyncio.gather(pump, return_exceptions=True)
            finally:
                await utterance.close()

    @staticmethod
    async def _pump(stream: _Stream, utterance: Utterance) -> None:
        """Move a stream's text into the utterance until synthesize-stop."""
        try:
            while True:
                await utterance.room()
                if (text := await stream.take()) is None:
                    break
                utterance.add_text(text)
            utterance.end_text()
        except ChorusError as err:
            stream.failed = True
            utterance.fail(err)
