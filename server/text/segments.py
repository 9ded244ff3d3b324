"""What the front end hands to synthesis: text units to speak and the pauses between them.

A :class:`Speech` always ends a unit (the end of a sentence, a list item, a heading or a
paragraph piece), so an engine may speak it as soon as it arrives; it carries the
:class:`Style` in force (rate, voice, language) because SSML can change them anywhere.
A :class:`Pause` marks silence: a paragraph's end, or an explicit SSML ``break``.
Sentence silence is the engine's business (it follows every sentence it finds inside a
:class:`Speech`, and the end of each), so the same text gives the same pacing streamed
or whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Pause", "PauseKind", "Segment", "Speech", "Style", "coalesce", "silence_seconds"]


class PauseKind(StrEnum):
    """Why there is silence: a paragraph's lasts the server's ``paragraph_silence``
    (instead of the ``sentence_silence`` that follows every other sentence); a break
    carries its own length."""

    PARAGRAPH = "paragraph"
    BREAK = "break"


@dataclass(frozen=True)
class Style:
    """How a unit is spoken; ``None`` means the request's own voice or language."""

    rate: float = 1.0
    """Speaking rate as a multiple of normal (SSML ``prosody rate``): 2.0 is twice as fast."""
    voice: str | None = None
    """A voice to switch to (SSML ``voice name``)."""
    language: str | None = None
    """A language tag such as ``en-US`` (SSML ``xml:lang``)."""


@dataclass(frozen=True)
class Speech:
    """Text to speak, ending a unit."""

    text: str
    style: Style = Style()


@dataclass(frozen=True)
class Pause:
    """Silence after the unit before it."""

    kind: PauseKind
    seconds: float = 0.0
    """Only for :attr:`PauseKind.BREAK`: how long."""


Segment = Speech | Pause


def silence_seconds(pause: Pause, paragraph_silence: float) -> float:
    """How long a pause lasts under a server's (or request's) pacing settings."""
    return pause.seconds if pause.kind is PauseKind.BREAK else paragraph_silence


def coalesce(segments: list[Segment], previous: Segment | None = None) -> list[Segment]:
    """Drop empty speech and paragraph pauses that say nothing new (at the very start,
    or right after another pause); explicit breaks always stay.

    ``previous`` is the last segment already handed out, so a stream coalesces across
    the pieces it emits exactly as a whole text would.
    """
    out: list[Segment] = []
    last = previous
    for segment in segments:
        if isinstance(segment, Speech):
            if not segment.text.strip():
                continue
        elif segment.kind is PauseKind.PARAGRAPH and (last is None or isinstance(last, Pause)):
            continue
        out.append(segment)
        last = segment
    return out
