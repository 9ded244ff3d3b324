"""Requests as front doors see them: text in (whole or in chunks), audio out.

An :class:`Utterance` ties together the voice store (which voice), the sentence
boundary detector (when text is complete enough to speak), the engine's ``prepare``
(run off the loop) and a scheduler :class:`~chorus.server.scheduler.Job`. Wyoming,
HTTP and ``chorus say`` all go through :meth:`Synthesizer.open`, so limits and
voice selection behave the same on every front door.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

import numpy as np

from .audio_formats import Resampler
from .engines.base import PCM, LoadedVoice, SynthesisParams, VoiceSpec
from .errors import (
    BadRequest,
    ChorusError,
    EmptyText,
    InvalidSsml,
    TextTooLong,
    UnknownSpeaker,
)
from .on_demand import OnDemandVoices
from .scheduler import Job, Scheduler
from .text import FrontEndStream, SsmlError, TextFormat, TextFrontEnd, TextRequest
from .text.segments import Pause, Segment, Style, silence_seconds
from .text_budget import TextBudget
from .voices import VoiceStore

__all__ = ["Synthesizer", "TextLimits", "Utterance", "VoiceRequest", "merge_params"]

_LOGGER = logging.getLogger(__name__)

# Control characters (NUL included) crash espeak-ng's C API or are read out as noise;
# newlines and tabs are kept because blank lines mark sentence boundaries.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

WARNED_SPEAKERS = 256
"""Unknown (voice, speaker) pairs remembered as warned about: a client cycling through
made-up names can then neither grow memory nor fill the log without end."""


@dataclass(frozen=True)
class VoiceRequest:
    """Which voice a client asked for; every field optional."""

    name: str | None = None
    language: str | None = None
    speaker: str | None = None


def merge_params(defaults: SynthesisParams, request: SynthesisParams,
           speaker_id: int | None) -> SynthesisParams:
    """Request values win over server defaults, field by field."""
    merged = {name: getattr(request, name) if getattr(request, name) is not None
              else getattr(defaults, name) for name in SynthesisParams.__dataclass_fields__}
    if speaker_id is not None:
        merged["speaker_id"] = speaker_id
    return SynthesisParams(**merged)


def _check_characters(text: str) -> None:
    """JSON lets a client send half a surrogate pair (``"\\ud800"``); it is no character,
    cannot be spoken, and breaks everything that encodes the text (cache keys, logs)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadRequest(f"text has an unpaired UTF-16 surrogate at character {err.start}, "
                         "which is not a character") from err


@dataclass(frozen=True)
class TextLimits:
    """How much text a request may hold, and where.

    ``max_chars`` bounds a whole text known up front (plain ``synthesize``, HTTP). A
    Wyoming stream has no total, since its text is spoken as it arrives (a long LLM
    answer must not be cut off); ``max_chars`` then bounds how far its text may run
    ahead of the speech, and the stream's reader waits (TCP backpressure) rather than
    buffering more. ``max_unit_chars`` bounds one unit: text with no sentence end in
    it is cut at the last space before that length (or at it), so a stream that
    never ends a sentence neither grows a buffer without end nor rescans it on every
    chunk.
    """

    max_chars: int = 10_000
    max_unit_chars: int = 1_000


def _cut(text: str, limit: int) -> int:
    """Where to break ``text`` (longer than ``limit``): after the last whitespace in the
    second half of the limit, else at the limit."""
    space = max(text.rfind(" ", limit // 2, limit), text.rfind("\n", limit // 2, limit))
    return space + 1 if space >= 0 else limit


@dataclass(frozen=True)
class _Sentence:
    """Text to speak as one sentence, and how."""

    text: str
    voice: VoiceSpec | str | None
    """``None``: the utterance's own voice; else the voice SSML switched to (by name
    while it is yet to be installed, see :meth:`Utterance._switch_to`)."""
    params: SynthesisParams


@dataclass(frozen=True)
class _Silence:
    """A pause after the sentence before it: it replaces that sentence's own silence."""

    seconds: float


class Utterance:
    """One request in progress: feed text, read audio, always :meth:`close`.

    Text goes through the request's front end (:mod:`.text`), whose speech is split
    into sentences (each one unit at least) and whose pauses become silence after the
    sentence before them. The audio is in the utterance's voice's format throughout: a
    sentence spoken in another voice (SSML ``voice``) is resampled to it.

    ``stream`` lifts the total (see :class:`TextLimits`); its feeder waits for
    :meth:`room` instead.
    """

    def __init__(self, voice: LoadedVoice, job: Job, limits: TextLimits,
                 front: FrontEndStream, store: VoiceStore, *, stream: bool = False,
                 on_demand: OnDemandVoices | None = None) -> None:
        self.voice = voice
        self._job = job
        self._limits = limits
        self._front = front
        self._store = store
        self._on_demand = on_demand
        self._stream = stream
        self._chars = 0
        self._ahead = TextBudget(limits.max_chars)
        """Characters of sentences handed on but not yet spoken to the end."""
        params = job.params
        self._sentence_silence = params.sentence_silence or 0.0
        self._paragraph_silence = params.paragraph_silence or 0.0
        self._units = 0
        self._fed = False
        """The feeder has queued every unit: no pause can come any more."""
        self._gaps: dict[int, float] = {}
        """Unit index ending a sentence -> seconds of silence after it (-1: before the
        first unit, for a document that opens with a break)."""
        self._replaced: set[int] = set()
        """Sentence ends whose silence a pause has set (later pauses add to it)."""
        self._sentence_ends: dict[int, int] = {}
        """Unit index ending a sentence -> that sentence's length: once it is played its
        characters no longer count as ahead."""
        self._rates: dict[int, int] = {}
        """Unit index -> its voice's sample rate, where it is not the utterance's."""
        self._voices: dict[str, LoadedVoice] = {voice.spec.name: voice}
        self._queue: asyncio.Queue[_Sentence | _Silence | None] = asyncio.Queue()
        self._feeder = asyncio.create_task(self._feed(), name="utterance-feeder")

    @property
    def spec(self) -> VoiceSpec:
        return self.voice.spec

    def add_text(self, text: str) -> None:
        """Add text; whatever the front end lets go of (complete sentences, mostly) is
        scheduled at once."""
        _check_characters(text)
        self._chars += len(text)
        whole = not self._stream or self._front.format is TextFormat.SSML
        if whole and self._chars > self._limits.max_chars:
            what = "SSML" if self._stream else "text"  # SSML is spoken only once complete
            raise TextTooLong(f"{what} is longer than the limit of {self._limits.max_chars} "
                              "characters")
        self._take(self._front_call(self._front.feed, _CONTROL.sub(" ", text)))

    def end_text(self) -> None:
        """No more text: the front end lets go of the rest."""
        self._take(self._front_call(self._front.finish))
        self._queue.put_nowait(None)

    @staticmethod
    def _front_call(call: Callable[..., list[Segment]], *args: str) -> list[Segment]:
        try:
            return call(*args)
        except SsmlError as err:
            raise InvalidSsml(f"text is not SSML that can be spoken: {err.message}") from err

    def _take(self, segments: list[Segment]) -> None:
        for segment in segments:
            if isinstance(segment, Pause):
                self._put(_Silence(silence_seconds(segment, self._paragraph_silence)), 0)
                continue
            voice, params = self._style(segment.style)
            for sentence in _sentences(segment.text, self._limits.max_unit_chars):
                self._put(_Sentence(sentence, voice, params), len(sentence))

    def _style(self, style: Style) -> tuple[VoiceSpec | str | None, SynthesisParams]:
        """The voice (resolved now, so an unknown one fails the request before any
        audio of it) and the params a style asks for."""
        params = self._job.params
        voice: VoiceSpec | str | None = None
        if style.voice is not None and style.voice != self.spec.name:
            voice = self._switch_to(style.voice)
            if isinstance(voice, VoiceSpec) and voice.name == self.spec.name:
                voice = None
            else:  # the request's speaker is one of its own voice's
                params = replace(params, speaker_id=None)
        if style.rate != 1.0:
            params = replace(params, rate=(params.rate or 1.0) * style.rate)
        return voice, params

    def _switch_to(self, name: str) -> VoiceSpec | str:
        """The voice an SSML ``voice`` switches to; one offered for download
        (``--download-voices``) stays a name, installed when the feeder reaches it, so
        the speech before it is not held up by the download."""
        if self._on_demand is not None and self._on_demand.get(name) is not None:
            return name
        return self._store.resolve(name)

    def _put(self, item: _Sentence | _Silence, chars: int) -> None:
        self._ahead.hold(chars)
        self._queue.put_nowait(item)

    async def room(self) -> None:
        """Wait until the text ahead of the speech is below ``max_chars`` (streams)."""
        await self._ahead.room()

    async def _feed(self) -> None:
        try:
            while (item := await self._queue.get()) is not None:
                if isinstance(item, _Silence):
                    self._pause(item.seconds)
                elif not await self._speak(item):
                    return
            self._fed = True
            self._job.close()
        finally:
            self._ahead.release()  # nothing more will be spoken by this feeder: never block

    def _pause(self, seconds: float) -> None:
        last = self._units - 1
        if last in self._replaced:
            self._gaps[last] += seconds
        else:
            self._gaps[last] = seconds
            self._replaced.add(last)

    async def _speak(self, sentence: _Sentence) -> bool:
        """Prepare a sentence and queue its units; False when the job failed."""
        try:
            voice = self.voice if sentence.voice is None else await self._voice(sentence.voice)
        except ChorusError as err:
            self._job.fail(err)
            return False
        try:
            units = await asyncio.to_thread(voice.prepare, sentence.text)
        except Exception as err:  # noqa: BLE001 - reported to the reader of audio()
            _LOGGER.warning("Voice %s cannot phonemize %r: %s", voice.spec.name,
                            sentence.text[:80], err)
            self._job.fail(BadRequest(f"text could not be turned into speech: {err}"))
            return False
        if not units:
            self._ahead.free(len(sentence.text))
            return True
        first = self._units
        self._units += len(units)
        if voice.spec.sample_rate != self.spec.sample_rate:
            self._rates.update(dict.fromkeys(range(first, self._units), voice.spec.sample_rate))
        self._sentence_ends[self._units - 1] = len(sentence.text)
        self._gaps[self._units - 1] = self._sentence_silence
        self._job.add_units(units, voice, sentence.params)
        return True

    async def _voice(self, spec: VoiceSpec | str) -> LoadedVoice:
        if isinstance(spec, str):
            if self._on_demand is not None:
                await self._on_demand.ensure(spec)
            spec = self._store.resolve(spec)
        loaded = self._voices.get(spec.name)
        if loaded is None:
            loaded = self._voices[spec.name] = await self._store.acquire(spec)
        return loaded

    def fail(self, error: BaseException) -> None:
        """Abort: the reader of :meth:`audio` raises ``error``."""
        self._job.fail(error)
        self._ahead.release()

    def _zeros(self, seconds: float) -> PCM:
        return np.zeros(round(seconds * self.spec.sample_rate), np.int16)

    def _settled(self, unit: int) -> bool:
        """Whether the silence after ``unit`` is final: a later unit is queued (pauses
        come before the speech that follows them) or no more text will come."""
        return self._fed or self._units - 1 > unit

    async def audio(self) -> AsyncIterator[PCM]:
        """Audio in order, per unit or per window of a unit as the voice renders it, in
        the utterance's voice's sample rate.

        A sentence's silence is appended to its last piece when it is final by then;
        in a stream whose next text has not come yet a pause may still follow it, so
        the silence then goes out before the next unit's first piece (or at the end).
        """
        resampler: Resampler | None = None
        owed: int | None = -1
        """The unit whose silence is yet to go out (-1: the silence before the first)."""
        async for piece in self._job.pieces():
            if owed is not None and owed < piece.unit:
                if gap := self._gaps.pop(owed, 0.0):
                    yield self._zeros(gap)
                owed = None
            pcm = piece.pcm
            rate = self._rates.get(piece.unit)
            if rate is not None:
                if resampler is None:
                    resampler = Resampler(rate, self.spec.sample_rate)
                pcm = resampler.feed(pcm)
                if piece.last:
                    pcm = np.concatenate([pcm, resampler.flush()])
                    resampler = None
            if piece.last and piece.unit in self._sentence_ends:
                if not self._settled(piece.unit):
                    owed = piece.unit
                elif gap := self._gaps.pop(piece.unit, 0.0):
                    pcm = np.concatenate([pcm, self._zeros(gap)])
                yield pcm
                self._ahead.free(self._sentence_ends.pop(piece.unit))
            else:
                yield pcm
        if owed is not None and (gap := self._gaps.pop(owed, 0.0)):
            yield self._zeros(gap)

    async def close(self) -> None:
        """Give the scheduler slot back, whether or not all audio was read."""
        self._job.finish()
        self._ahead.release()
        if not self._feeder.done():
            self._feeder.cancel()
            # gather, not a suppressed await: a cancellation of the caller must go on.
            await asyncio.gather(self._feeder, return_exceptions=True)


def _sentences(text: str, max_chars: int) -> list[str]:
    """A front end's speech as sentences, none longer than ``max_chars`` (cut at a space
    where there is no sentence end, see :class:`TextLimits`). sentence-stream (and the
    regex package under it, ~13 ms) is imported at the first text, not at every start;
    :func:`~.text.warm_libraries` imports it once the doors are open."""
    from sentence_stream import SentenceBoundaryDetector

    detector = SentenceBoundaryDetector()
    found = [*detector.add_chunk(text), detector.finish()]
    out: list[str] = []
    for sentence in found:
        while len(sentence) > max_chars:
            at = _cut(sentence, max_chars)
            out.append(sentence[:at].strip())
            sentence = sentence[at:]
        out.append(sentence.strip())
    return [sentence for sentence in out if sentence]


class Synthesizer:
    """Voice selection, limits and scheduling shared by all front doors."""

    def __init__(self, store: VoiceStore, scheduler: Scheduler, limits: TextLimits,
                 defaults: SynthesisParams | None = None, *,
                 front_end: TextFrontEnd | None = None,
                 strict_speakers: bool = False,
                 on_demand: OnDemandVoices | None = None) -> None:
        self.store = store
        self.on_demand = on_demand
        """Voices installed on first request (``--download-voices``); ``None``: off."""
        self.scheduler = scheduler
        self.limits = limits
        self.defaults = defaults or SynthesisParams()
        self.front_end = front_end or TextFrontEnd()
        """The server's text front end; a request may switch its steps (TextRequest)."""
        self.strict_speakers = strict_speakers
        self._warned: set[tuple[str, str | None]] = set()

    def speaker_id(self, spec: VoiceSpec, speaker: str | None) -> int | None:
        """The speaker to render; an unknown one is speaker 0 with a warning, as in
        wyoming-piper (Home Assistant setups keep their speaker when the voice changes),
        unless ``strict_speakers`` makes it an ``unknown-speaker`` error.

        The warning comes once per voice and speaker, not per request (a Home Assistant
        setup sends the same stale speaker with every request, and one HTTP request
        resolves its speaker more than once: cache key and rendering)."""
        try:
            return self.store.speaker_id(spec, speaker)
        except UnknownSpeaker as err:
            if self.strict_speakers:
                raise
            pair = (spec.name, speaker)
            if pair not in self._warned and len(self._warned) < WARNED_SPEAKERS:
                self._warned.add(pair)
                _LOGGER.warning("%s; speaking with speaker 0 (said once per voice and "
                                "speaker)", err.message)
            else:
                _LOGGER.debug("%s; speaking with speaker 0", err.message)
            return 0

    def effective_params(self, spec: VoiceSpec, speaker: str | None,
                         params: SynthesisParams | None, language: str | None = None,
                         ) -> SynthesisParams:
        """What a request renders with: its own values, the server defaults where it gives
        none, and the speaker and language resolved (the one merge, also behind HTTP
        cache keys)."""
        merged = merge_params(self.defaults, params or SynthesisParams(),
                              self.speaker_id(spec, speaker))
        return replace(merged, language=self.store.spoken_language(spec, language))

    def check_text(self, text: str) -> None:
        """Limits for a whole text known up front."""
        _check_characters(text)
        if not _CONTROL.sub("", text).strip():
            raise EmptyText("text is empty")
        if len(text) > self.max_chars:
            raise TextTooLong(f"text has {len(text)} characters; the limit is {self.max_chars}")

    @property
    def max_chars(self) -> int:
        """The longest whole text a request may send."""
        return self.limits.max_chars

    async def resolve(self, voice: VoiceRequest) -> VoiceSpec:
        """The installed voice a request speaks with; a voice offered for download
        (``--download-voices``) is installed first."""
        if self.on_demand is not None:
            await self.on_demand.ensure(voice.name)
        return self.store.resolve(voice.name, voice.language)

    async def open(self, voice: VoiceRequest, params: SynthesisParams | None = None,
                   *, stream: bool = False, text: TextRequest | None = None) -> Utterance:
        """Resolve and load the voice, then take a scheduler slot (or raise Busy).

        ``stream``: text arrives while it is spoken, with no total (see :class:`TextLimits`).
        ``text``: the request's text format and front-end switches.
        """
        spec = await self.resolve(voice)
        params = self.effective_params(spec, voice.speaker, params, voice.language)
        text = text or TextRequest()
        front = self.front_end.stream(text.format, language=params.language or spec.language,
                                      options=text.options(self.front_end.options))
        loaded = await self.store.acquire(spec)
        job = self.scheduler.open(loaded, params)
        return Utterance(loaded, job, self.limits, front, self.store, stream=stream,
                         on_demand=self.on_demand)

    async def speak(self, text: str, voice: VoiceRequest,
                    params: SynthesisParams | None = None,
                    text_request: TextRequest | None = None) -> AsyncIterator[PCM]:
        """Convenience for a whole text: audio in pieces, slot released at the end."""
        self.check_text(text)
        utterance = await self.open(voice, params, text=text_request)
        try:
            utterance.add_text(text)
            utterance.end_text()
            async for pcm in utterance.audio():
                yield pcm
        finally:
            await utterance.close()
