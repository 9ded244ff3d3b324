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
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
from sentence_stream import SentenceBoundaryDetector

from .engines.base import PCM, LoadedVoice, SynthesisParams, VoiceSpec
from .errors import BadRequest, EmptyText, TextTooLong, UnknownSpeaker
from .scheduler import Job, Scheduler
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


class Utterance:
    """One request in progress: feed text, read audio, always :meth:`close`.

    ``stream`` lifts the total (see :class:`TextLimits`); its feeder waits for
    :meth:`room` instead.
    """

    def __init__(self, voice: LoadedVoice, job: Job, limits: TextLimits,
                 sentence_silence: float = 0.0, *, stream: bool = False) -> None:
        self.voice = voice
        self._job = job
        self._limits = limits
        self._stream = stream
        self._chars = 0
        self._ahead = TextBudget(limits.max_chars)
        """Characters of sentences handed on but not yet spoken to the end."""
        self._silence = np.zeros(round(sentence_silence * voice.spec.sample_rate), np.int16)
        self._units = 0
        self._sentence_ends: dict[int, int] = {}
        """Unit index ending a sentence -> that sentence's length: silence follows it,
        and once it is played its characters no longer count as ahead."""
        self._detector = SentenceBoundaryDetector()
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self._feeder = asyncio.create_task(self._feed(), name="utterance-feeder")

    @property
    def spec(self) -> VoiceSpec:
        return self.voice.spec

    def add_text(self, text: str) -> None:
        """Add text; complete sentences (and over-long units) are scheduled at once."""
        _check_characters(text)
        self._chars += len(text)
        if not self._stream and self._chars > self._limits.max_chars:
            raise TextTooLong(f"text is longer than the limit of {self._limits.max_chars} "
                              "characters")
        for sentence in self._detector.add_chunk(_CONTROL.sub(" ", text)):
            self._queue(sentence)
        self._cut_long_unit()

    def _cut_long_unit(self) -> None:
        detector, limit = self._detector, self._limits.max_unit_chars
        while len(pending := detector.current_sentence + detector.remaining_text) > limit:
            at = _cut(pending, limit)
            self._queue(pending[:at].strip())
            self._detector = detector = SentenceBoundaryDetector()
            for sentence in detector.add_chunk(pending[at:]):
                self._queue(sentence)

    def _queue(self, sentence: str) -> None:
        if not sentence:
            return
        self._ahead.hold(len(sentence))
        self._sentences.put_nowait(sentence)

    async def room(self) -> None:
        """Wait until the text ahead of the speech is below ``max_chars`` (streams)."""
        await self._ahead.room()

    def end_text(self) -> None:
        """No more text: the rest is the last sentence."""
        self._queue(self._detector.finish())
        self._sentences.put_nowait(None)

    async def _feed(self) -> None:
        try:
            while (sentence := await self._sentences.get()) is not None:
                try:
                    units = await asyncio.to_thread(self.voice.prepare, sentence)
                except Exception as err:  # noqa: BLE001 - reported to the reader of audio()
                    _LOGGER.warning("Voice %s cannot phonemize %r: %s", self.spec.name,
                                    sentence[:80], err)
                    self._job.fail(BadRequest(f"text could not be turned into speech: {err}"))
                    return
                if units:
                    self._units += len(units)
                    self._sentence_ends[self._units - 1] = len(sentence)
                    self._job.add_units(units)
                else:
                    self._ahead.free(len(sentence))
            self._job.close()
        finally:
            self._ahead.release()  # nothing more will be spoken by this feeder: never block

    def fail(self, error: BaseException) -> None:
        """Abort: the reader of :meth:`audio` raises ``error``."""
        self._job.fail(error)
        self._ahead.release()

    async def audio(self) -> AsyncIterator[PCM]:
        """Audio in order, per unit or per window of a unit as the voice renders it;
        sentence silence is appended to the last piece of a sentence."""
        async for piece in self._job.pieces():
            pcm = piece.pcm
            ended = piece.last and piece.unit in self._sentence_ends
            if self._silence.size and ended:
                pcm = np.concatenate([pcm, self._silence])
            yield pcm
            if ended:
                self._ahead.free(self._sentence_ends.pop(piece.unit))

    async def close(self) -> None:
        """Give the scheduler slot back, whether or not all audio was read."""
        self._job.finish()
        self._ahead.release()
        if not self._feeder.done():
            self._feeder.cancel()
            # gather, not a suppressed await: a cancellation of the caller must go on.
            await asyncio.gather(self._feeder, return_exceptions=True)


class Synthesizer:
    """Voice selection, limits and scheduling shared by all front doors."""

    def __init__(self, store: VoiceStore, scheduler: Scheduler, limits: TextLimits,
                 defaults: SynthesisParams | None = None, *,
                 strict_speakers: bool = False) -> None:
        self.store = store
        self.scheduler = scheduler
        self.limits = limits
        self.defaults = defaults or SynthesisParams()
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
                         params: SynthesisParams | None) -> SynthesisParams:
        """What a request renders with: its own values, the server defaults where it gives
        none, and the speaker resolved (the one merge, also behind HTTP cache keys)."""
        return merge_params(self.defaults, params or SynthesisParams(),
                            self.speaker_id(spec, speaker))

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

    async def open(self, voice: VoiceRequest, params: SynthesisParams | None = None,
                   *, stream: bool = False) -> Utterance:
        """Resolve and load the voice, then take a scheduler slot (or raise Busy).

        ``stream``: text arrives while it is spoken, with no total (see :class:`TextLimits`).
        """
        spec = self.store.resolve(voice.name, voice.language)
        params = self.effective_params(spec, voice.speaker, params)
        loaded = await self.store.acquire(spec)
        job = self.scheduler.open(loaded, params)
        return Utterance(loaded, job, self.limits, params.sentence_silence or 0.0,
                         stream=stream)

    async def speak(self, text: str, voice: VoiceRequest,
                    params: SynthesisParams | None = None) -> AsyncIterator[PCM]:
        """Convenience for a whole text: audio in pieces, slot released at the end."""
        self.check_text(text)
        utterance = await self.open(voice, params)
        try:
            utterance.add_text(text)
            utterance.end_text()
            async for pcm in utterance.audio():
                yield pcm
        finally:
            await utterance.close()
