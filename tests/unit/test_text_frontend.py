"""The one front end: format detection, each step switchable, streamed equals whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chorus.server.text import (
    CodeMode,
    EmojiMode,
    FrontEndOptions,
    Pause,
    PauseKind,
    Segment,
    Speech,
    SsmlError,
    SsmlLimits,
    Style,
    TextFormat,
    TextFrontEnd,
)

FRONT_END = TextFrontEnd()
LLM = ("## Price list\n\n**Tea** costs $3.50 on the 21st 🎉. See https://example.com/tea!\n\n"
       "- 1,250 cups sold\n- open at 10:30\n\n```sh\nbrew tea\n```\n")


def _texts(segments: list[Segment]) -> list[str]:
    return [s.text if isinstance(s, Speech) else "|" for s in segments]


def test_llm_markdown_comes_out_clean_and_in_words() -> None:
    assert _texts(FRONT_END.process(LLM, language="en_US")) == [
        "Price list", "|",
        "Tea costs three dollars, fifty cents on the twenty-first.",
        "See example.com!", "|",
        "one thousand, two hundred and fifty cups sold", "open at ten thirty", "|",
        "Code omitted."]


def test_plain_sentences_are_unchanged() -> None:
    text = "The quick brown fox jumps over the lazy dog. It was not amused!"
    assert FRONT_END.process(text, language="en_US") == [
        Speech("The quick brown fox jumps over the lazy dog."), Speech("It was not amused!")]


def test_each_step_can_be_switched_off() -> None:
    raw = FrontEndOptions(markdown=False, cleanup=False, normalize=False)
    assert _texts(FRONT_END.process("**Tea** at 10:30 👍", options=raw)) == ["**Tea** at 10:30 👍"]
    no_numbers = FrontEndOptions(normalize=False)
    assert _texts(FRONT_END.process("**Tea** at 10:30 👍", options=no_numbers)) == [
        "Tea at 10:30"]
    described = FrontEndOptions(normalize=False, emoji=EmojiMode.DESCRIBE)
    assert _texts(FRONT_END.process("**Tea** at 10:30 👍", options=described)) == [
        "Tea at 10:30 thumbs up"]
    quiet = FRONT_END.options.with_changes(emoji=EmojiMode.DESCRIBE, code=CodeMode.SKIP,
                                           normalize=None)
    assert quiet.normalize and quiet.emoji is EmojiMode.DESCRIBE
    assert _texts(FRONT_END.process("Hi 👍\n\n```\nx\n```\n", options=quiet)) == [
        "Hi thumbs up"]


def test_ssml_is_detected_asked_for_or_switched_off() -> None:
    doc = ' <speak>Wait <break time="2s"/> 5 minutes</speak>'
    expected = [Speech("Wait", Style(language="en_US")), Pause(PauseKind.BREAK, 2.0),
                Speech("five minutes", Style(language="en_US"))]
    assert FRONT_END.process(doc, language="en_US") == expected
    assert FRONT_END.process(doc, TextFormat.SSML, language="en_US") == expected
    assert _texts(FRONT_END.process(doc, TextFormat.TEXT)) == ["Wait five minutes"]
    assert _texts(FRONT_END.process(doc, options=FrontEndOptions(ssml=False))) == [
        "Wait five minutes"]
    with pytest.raises(SsmlError, match="root element"):
        FRONT_END.process("<p>x</p>", TextFormat.SSML)


def test_a_streamed_ssml_document_is_refused_as_soon_as_it_is_too_long() -> None:
    stream = FRONT_END.stream(options=FrontEndOptions(ssml_limits=SsmlLimits(max_chars=100)))
    assert stream.feed("<spe") == []
    assert stream.feed("ak>" + "a" * 50) == []
    with pytest.raises(SsmlError, match="more than 100 characters"):
        stream.feed("a" * 60)


def test_ssml_switches_the_normalising_language_with_xml_lang() -> None:
    doc = '<speak>3 cats <lang xml:lang="de-DE">3 Katzen</lang></speak>'
    assert _texts(FRONT_END.process(doc, language="en_US")) == ["three cats", "drei Katzen"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([LLM, LLM.replace("\n\n", "\n"), "<speak>Hi <s>there</s></speak>",
                        "Plain text. Two sentences!\n\nAnd a paragraph with 10:30."]),
       st.data())
def test_any_chunking_gives_the_whole_text_result(text: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=30)))
    stream = FRONT_END.stream(language="en_US")
    out: list[Segment] = []
    start = 0
    for cut in [*cuts, len(text)]:
        out += stream.feed(text[start:cut])
        start = max(start, cut)
    assert out + stream.finish() == FRONT_END.process(text, language="en_US")


_LANGUAGES = ["en_US", "de_DE", "fr", "es", "ru", "pt_BR", "pl", "ja", "ar", "zz", None]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=120),
                 st.text(st.sampled_from(list("0123456789.,:/-+$€£%() apm")), max_size=30)),
       st.sampled_from(_LANGUAGES))
def test_any_text_in_any_language_gives_segments_not_errors(text: str,
                                                           language: str | None) -> None:
    """num2words' converters differ per language in what they refuse; a token one of
    them cannot read is left as written, never an error for the request."""
    segments = FRONT_END.process(text, TextFormat.TEXT, language=language)
    assert all(s.text.strip() for s in segments if isinstance(s, Speech))
