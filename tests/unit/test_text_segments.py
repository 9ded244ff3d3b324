"""The front end's output model: units to speak and the pauses between them."""

from __future__ import annotations

from chorus.server.text.segments import (
    Pause,
    PauseKind,
    Speech,
    Style,
    coalesce,
    silence_seconds,
)

PARAGRAPH = Pause(PauseKind.PARAGRAPH)


def test_pauses_last_by_kind() -> None:
    assert silence_seconds(PARAGRAPH, paragraph_silence=0.7) == 0.7
    assert silence_seconds(Pause(PauseKind.BREAK, 0.5), paragraph_silence=0.7) == 0.5


def test_coalesce_drops_empty_speech_and_pauses_that_say_nothing_new() -> None:
    one, two = Speech("One."), Speech("Two.", Style(rate=1.5))
    assert coalesce([PARAGRAPH, one, PARAGRAPH, Speech("  "), PARAGRAPH, two]) == [
        one, PARAGRAPH, two]
    # explicit breaks always stay, even back to back
    brk = Pause(PauseKind.BREAK, 0.2)
    assert coalesce([one, brk, brk, PARAGRAPH, two]) == [one, brk, brk, two]


def test_coalesce_continues_from_what_was_already_handed_out() -> None:
    assert coalesce([PARAGRAPH, Speech("B")], previous=PARAGRAPH) == [Speech("B")]
    assert coalesce([PARAGRAPH, Speech("B")], previous=Speech("A")) == [PARAGRAPH, Speech("B")]
