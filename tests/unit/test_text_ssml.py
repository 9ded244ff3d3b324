"""The SSML subset: each element's effect, and hostile documents refused fast and clearly."""

from __future__ import annotations

import time

import pytest

from chorus.server.text.segments import Pause, PauseKind, Segment, Speech, Style
from chorus.server.text.ssml import SsmlError, SsmlLimits, looks_like_ssml, parse_ssml

EN = Style(language="en-US")


def _speak(body: str, **attrs: str) -> list[Segment]:
    extra = "".join(f' {k.replace("_", ":")}="{v}"' for k, v in attrs.items())
    return parse_ssml(f'<speak xml:lang="en-US"{extra}>{body}</speak>')


def test_paragraphs_sentences_and_breaks() -> None:
    assert _speak('<p><s>One.</s><s>Two <break time="500ms"/> three.</s></p><p>Four</p>') == [
        Speech("One.", EN), Speech("Two", EN), Pause(PauseKind.BREAK, 0.5),
        Speech("three.", EN), Pause(PauseKind.PARAGRAPH), Speech("Four", EN),
        Pause(PauseKind.PARAGRAPH)]


@pytest.mark.parametrize(("attrs", "seconds"), [
    ('time="1.5s"', 1.5), ('time="250ms"', 0.25), ('strength="strong"', 1.0),
    ('strength="none"', 0.0), ("", 0.75),
])
def test_break_lengths(attrs: str, seconds: float) -> None:
    assert _speak(f"a<break {attrs}/>b")[1] == Pause(PauseKind.BREAK, seconds)


def test_prosody_rate_nests_and_voice_and_language_switch() -> None:
    segments = _speak('Normal <prosody rate="slow">slow <prosody rate="200%">quicker'
                      '</prosody></prosody><prosody rate="+50%">faster</prosody>'
                      '<voice name="de_DE-thorsten-medium"><lang xml:lang="de-DE">Hallo'
                      '</lang></voice> back')
    assert segments == [
        Speech("Normal", EN), Speech("slow", Style(rate=0.64, language="en-US")),
        Speech("quicker", Style(rate=1.28, language="en-US")),
        Speech("faster", Style(rate=1.5, language="en-US")),
        Speech("Hallo", Style(voice="de_DE-thorsten-medium", language="de-DE")),
        Speech("back", EN)]


@pytest.mark.parametrize(("element", "spoken"), [
    ('<say-as interpret-as="characters">abc</say-as>', "A B C"),
    ('<say-as interpret-as="cardinal">1,250</say-as>', "one thousand, two hundred and fifty"),
    ('<say-as interpret-as="ordinal">21</say-as>', "twenty-first"),
    ('<say-as interpret-as="digits">2026</say-as>', "two zero two six"),
    ('<say-as interpret-as="date" format="mdy">12/05/2026</say-as>',
     "December fifth, twenty twenty-six"),
    ('<say-as interpret-as="date">2026-12-05</say-as>', "December fifth, twenty twenty-six"),
    ('<say-as interpret-as="time">10:30</say-as>', "ten thirty"),
    ('<say-as interpret-as="telephone">555-1234</say-as>', "five five five, one two three four"),
    ('<say-as interpret-as="unknown-kind">as is</say-as>', "as is"),
    ('<sub alias="World Wide Web">WWW</sub>', "World Wide Web"),
    ("<emphasis>plainly</emphasis>", "plainly"),
    ("<unknown-tag>still spoken</unknown-tag>", "still spoken"),
])
def test_say_as_sub_and_ignored_elements(element: str, spoken: str) -> None:
    assert _speak(f"Say {element}, ok.") == [Speech(f"Say {spoken}, ok.", EN)]


def test_a_namespaced_document_with_a_declaration() -> None:
    doc = ('<?xml version="1.0" encoding="UTF-8"?>\n<speak version="1.1" '
           'xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US"><s>Hi</s></speak>')
    assert looks_like_ssml(doc) and looks_like_ssml("  <speak>")
    assert not looks_like_ssml("Hello <speak>")
    assert parse_ssml(doc) == [Speech("Hi", EN)]


_LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
           + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i else "&lol;" * 10}">'
                     for i in range(9))
           + ']>\n<speak>&lol8;</speak>')
_XXE = ('<?xml version="1.0"?>\n<!DOCTYPE speak [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        "\n<speak>&xxe;</speak>")


@pytest.mark.parametrize(("document", "message", "line"), [
    (_LAUGHS, "may not declare a DTD", 2),
    (_XXE, "may not declare a DTD", 2),
    ("<speak>" + "<s>" * 10_000 + "x" + "</s>" * 10_000 + "</speak>", "nests deeper", 1),
    ("<speak>" + "a" * 10_000_000 + "</speak>", "characters; the limit is", None),
    ("<speak>\n<p>hi</s></speak>", "not well-formed XML: mismatched tag", 2),
    ("<speak>&nbsp;</speak>", "undefined entity", 1),
    ("<p>hi</p>", "root element must be <speak>", 1),
    ('<speak>\n a <break time="1h"/></speak>', "not a duration", 2),
    ('<speak><break time="60s"/></speak>', "over the limit", 1),
    ('<speak><break strength="huge"/></speak>', "break strength", 1),
    ('<speak><prosody rate="fastest">x</prosody></speak>', "prosody rate", 1),
    ('<speak><prosody rate="1000%">x</prosody></speak>', "times normal speed", 1),
    ("<speak>" + "<s/>" * 6000 + "</speak>", "more than 5000 elements", 1),
])
def test_hostile_and_broken_documents_are_refused_fast_with_a_position(
        document: str, message: str, line: int | None) -> None:
    started = time.perf_counter()
    with pytest.raises(SsmlError, match=message) as caught:
        parse_ssml(document)
    assert time.perf_counter() - started < 0.5
    assert caught.value.line == line
    if line is not None:
        assert caught.value.column is not None and caught.value.column >= 1
        assert f"line {line}, column" in str(caught.value)


def test_limits_are_configurable() -> None:
    with pytest.raises(SsmlError, match="nests deeper than 2"):
        parse_ssml("<speak><p><s>x</s></p></speak>", limits=SsmlLimits(max_depth=2))
