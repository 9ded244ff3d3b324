"""The text front end as clients meet it: what LLM markdown, numbers and SSML sound like.

Each element must change the audio as it says: a break adds its silence to the sample,
``say-as characters`` spells, a voice switch speaks the other voice in the request's
format, markdown and emoji are not read out, numbers are read as amounts, and a stream
of markdown chunks sounds exactly like the whole text. The server runs without noise, so
the same units always give the same samples and differences can be counted exactly.
Hostile SSML is refused fast with the position of the fault.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from faster_whisper import WhisperModel
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from tests.conftest import ServerProcess, copy_joe, pcm_of, read_until
from tests.integration.listening import load_whisper, normalise, transcribe

pytestmark = pytest.mark.slow

RATE = 22050
OTHER = "en_US-other-low"
"""The joe voice under another name, declared at 16 kHz: its audio must be resampled."""
OTHER_RATE = 16000
QUIET = ["--noise-scale", "0", "--noise-w-scale", "0"]

Audio = npt.NDArray[np.int16]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    voices = tmp_path_factory.mktemp("front-end-voices")
    model = copy_joe(voices, OTHER)
    config_path = Path(f"{model}.json")
    config = json.loads(config_path.read_text())
    config["audio"]["sample_rate"] = OTHER_RATE
    config_path.write_text(json.dumps(config))
    log = tmp_path_factory.mktemp("front-end-logs") / "server.log"
    proc = ServerProcess([*QUIET, "--voices-dir", str(voices)], log)
    yield proc
    assert proc.terminate() == 0, proc.output()


@pytest.fixture(scope="module")
def whisper() -> WhisperModel:
    return load_whisper()


async def _say(server: ServerProcess, text: str, text_format: str | None = None,
               voice: str | None = None) -> Audio:
    async with server.client() as client:
        await client.write_event(Synthesize(
            text, text_format=text_format,
            voice=SynthesizeVoice(name=voice) if voice else None).event())
        events = await read_until(client, "audio-stop")
    assert events[-1].type == "audio-stop", events[-1]
    starts = [e for e in events if e.type == "audio-start"]
    assert [e.data["rate"] for e in starts] == [RATE if voice != OTHER else OTHER_RATE]
    return np.frombuffer(pcm_of(events), np.int16)


async def _stream(server: ServerProcess, chunks: list[str],
                  text_format: str | None = None) -> Audio:
    async with server.client() as client:
        await client.write_event(SynthesizeStart(text_format=text_format).event())
        for chunk in chunks:
            await client.write_event(SynthesizeChunk(chunk).event())
        await client.write_event(SynthesizeStop().event())
        events = await read_until(client, "synthesize-stopped")
    assert events[-1].type == "synthesize-stopped", events[-1]
    return np.frombuffer(pcm_of(events), np.int16)


async def _error(server: ServerProcess, event: Any) -> tuple[str, str, float]:
    """The error a request gets (code, text) and how long it took to come."""
    async with server.client() as client:
        began = time.monotonic()
        await client.write_event(event)
        events = await read_until(client, "audio-stop")
    assert events[-1].type == "error", [e.type for e in events]
    return events[-1].data["code"], events[-1].data["text"], time.monotonic() - began


def _inserted(longer: Audio, shorter: Audio) -> tuple[int, int]:
    """Where ``longer`` is ``shorter`` with a run of zeros inserted: (at, length)."""
    extra = len(longer) - len(shorter)
    assert extra > 0, (len(longer), len(shorter))
    at = int(np.argmax(longer[:len(shorter)] != shorter)) if not np.array_equal(
        longer[:len(shorter)], shorter) else len(shorter)
    assert np.array_equal(longer[:at], shorter[:at])
    assert not np.any(longer[at:at + extra]), "the inserted samples are not silence"
    assert np.array_equal(longer[at + extra:], shorter[at:])
    return at, extra


# -- pauses ----------------------------------------------------------------------------

async def test_a_break_adds_exactly_its_silence(server: ServerProcess) -> None:
    plain = await _say(server, "<speak>The first sentence. The second one.</speak>")
    paused = await _say(server, '<speak>The first sentence.<break time="500ms"/> '
                                "The second one.</speak>")
    at, extra = _inserted(paused, plain)
    assert abs(extra / RATE - 0.5) <= 0.03
    assert 0.5 < at / RATE < len(plain) / RATE - 0.5  # between the sentences


async def test_a_paragraph_gets_the_paragraph_silence(server: ServerProcess) -> None:
    one = await _say(server, "The first paragraph. It goes on.")
    two = await _say(server, "The first paragraph.\n\nIt goes on.")
    _, extra = _inserted(two, one)
    assert extra == round(0.5 * RATE)  # --paragraph-silence's default


async def test_a_break_opening_the_document_comes_first(server: ServerProcess) -> None:
    plain = await _say(server, "Hello there.")
    late = await _say(server, '<speak><break time="1s"/>Hello there.</speak>')
    assert _inserted(late, plain) == (0, RATE)


# -- say-as, prosody, voice --------------------------------------------------------------

async def test_say_as_characters_spells(server: ServerProcess, whisper: WhisperModel) -> None:
    word = await _say(server, "The word is cat.")
    spelled = await _say(server, '<speak>The word is <say-as interpret-as="characters">'
                                 "cat</say-as>.</speak>")
    assert len(spelled) > len(word) * 1.2
    heard = normalise(transcribe(whisper, spelled, RATE)).split()
    assert heard[-3:] == ["c", "a", "t"], heard


async def test_prosody_rate_speeds_up_and_slows_down(server: ServerProcess) -> None:
    text = "This sentence is spoken at three different rates."
    normal = len(await _say(server, text))
    fast = len(await _say(server, f'<speak><prosody rate="fast">{text}</prosody></speak>'))
    slow = len(await _say(server, f'<speak><prosody rate="50%">{text}</prosody></speak>'))
    assert fast < normal * 0.9
    assert slow > normal * 1.6


async def test_a_voice_switch_speaks_both_voices_in_one_format(server: ServerProcess) -> None:
    first, second = "This is the first voice.", "And this is the second one."
    alone_first = await _say(server, first)
    alone_second = await _say(server, second, voice=OTHER)
    mixed = await _say(server, f'<speak>{first} <voice name="{OTHER}">{second}</voice>'
                               "</speak>")
    assert np.array_equal(mixed[:len(alone_first)], alone_first)
    rest = mixed[len(alone_first):]
    expected = len(alone_second) * RATE / OTHER_RATE
    assert abs(len(rest) - expected) <= 0.002 * RATE, (len(rest), expected)
    # The same sound at the other rate: the loudness envelopes line up.
    envelope = np.abs(np.interp(np.linspace(0, len(alone_second) - 1, len(rest)),
                                np.arange(len(alone_second)), alone_second))
    assert np.corrcoef(envelope, np.abs(rest.astype(float)))[0, 1] > 0.9


async def test_an_unknown_voice_in_ssml_is_an_error(server: ServerProcess) -> None:
    code, text, _ = await _error(server, Synthesize(
        '<speak>Hi. <voice name="nobody-here">Bye.</voice></speak>').event())
    assert code == "unknown-voice"
    assert "nobody-here" in text


# -- LLM text ---------------------------------------------------------------------------

MARKDOWN = ("**Bold** claim with *emphasis*.\n\n# A heading\n\n- item one\n- item two\n\n"
            "See [the manual](https://example.com/docs/page).\n\n```python\nprint('x')\n```\n\n"
            "Great job 👍 and well done 🎉.\n")


async def test_markdown_is_read_as_what_it_shows(server: ServerProcess,
                                                 whisper: WhisperModel) -> None:
    heard = normalise(transcribe(whisper, await _say(server, MARKDOWN), RATE))
    for word in ("bold", "claim", "emphasis", "heading", "item", "the manual",
                 "code omitted", "great job", "well done"):
        assert word in heard, (word, heard)
    for said in ("asterisk", "star", "hash", "pound", "http", "example com", "print",
                 "thumbs", "party", "popper", "underscore", "bracket"):
        assert said not in heard.split() and said not in heard, (said, heard)


async def test_markdown_switched_off_reads_the_markup(server: ServerProcess,
                                                     whisper: WhisperModel) -> None:
    """The control: without the front end the same text is read with its markup."""
    async with aiohttp.ClientSession(server.http_url) as session, session.post(
            "/synthesize", json={"text": "See [the docs](https://example.com/docs).",
                                 "markdown": False, "cleanup": False,
                                 "format": "pcm"}) as response:
        assert response.status == 200
        pcm = np.frombuffer(await response.read(), np.int16)
    heard = normalise(transcribe(whisper, pcm, RATE))
    assert "example" in heard, heard


async def test_wyoming_requests_switch_front_end_steps_as_http_ones_do(
        server: ServerProcess) -> None:
    """The same switches ride in a Wyoming event's data: the markup-read audio is the
    HTTP request's, sample for sample, and not the default reading."""
    text = "See **the docs** at https://example.com/docs now."
    switches = {"markdown": False, "cleanup": False}
    async with aiohttp.ClientSession(server.http_url) as session, session.post(
            "/synthesize", json={"text": text, "format": "pcm", **switches}) as response:
        assert response.status == 200
        over_http = np.frombuffer(await response.read(), np.int16)
    for start in (Synthesize(text).event(), SynthesizeStart().event()):
        start.data.update(switches)
        async with server.client() as client:
            await client.write_event(start)
            if start.type == "synthesize-start":
                await client.write_event(SynthesizeChunk(text).event())
                await client.write_event(SynthesizeStop().event())
            events = await read_until(client, "audio-stop")
        assert np.array_equal(np.frombuffer(pcm_of(events), np.int16), over_http), start.type
    assert not np.array_equal(await _say(server, text), over_http)
    event = Synthesize(text).event()
    event.data["emoji"] = "sing"
    code, message, _ = await _error(server, event)
    assert code == "bad-request" and "emoji" in message and "describe" in message


@pytest.mark.parametrize(("text", "heard"), [
    ("It costs $3.50 today.", r"3\.?50|three (dollars )?(and )?fifty"),
    ("She finished 21st in the race.", r"21st|twenty first"),
    ("There were 1,250 people.", r"1,?250|one thousand two hundred (and )?fifty|twelve fifty"),
    ("The meeting is at 10:30 tomorrow.", r"10[.:]30|ten thirty"),
])
async def test_numbers_are_spoken_as_words(server: ServerProcess, whisper: WhisperModel,
                                           text: str, heard: str) -> None:
    said = transcribe(whisper, await _say(server, text), RATE).lower()
    assert re.search(heard, said), said


async def test_chunked_markdown_sounds_like_the_whole(server: ServerProcess) -> None:
    whole = await _say(server, MARKDOWN)
    for size in (1, 7, 40):
        chunks = [MARKDOWN[i:i + size] for i in range(0, len(MARKDOWN), size)]
        assert np.array_equal(await _stream(server, chunks), whole), size


async def test_streamed_ssml_sounds_like_the_whole_document(server: ServerProcess) -> None:
    document = ('<speak><p>Streamed <prosody rate="fast">SSML</prosody> is spoken once '
                'it is complete.</p><break time="300ms"/><s>Then it sounds the same.</s>'
                "</speak>")
    whole = await _say(server, document, text_format="ssml")
    chunks = [document[i:i + 9] for i in range(0, len(document), 9)]
    assert np.array_equal(await _stream(server, chunks, text_format="ssml"), whole)
    assert np.array_equal(await _stream(server, chunks), whole)  # detected: <speak


async def test_plain_sentences_are_unchanged_by_the_front_end(server: ServerProcess) -> None:
    text = "Plain sentences stay as they were. Nothing in them changes!"
    async with aiohttp.ClientSession(server.http_url) as session:
        bodies = []
        for switches in ({}, {"markdown": False, "cleanup": False, "normalize": False,
                              "text_format": "text"}):
            async with session.post("/synthesize", json={"text": text, "format": "pcm",
                                                         **switches}) as response:
                assert response.status == 200
                bodies.append(await response.read())
    assert bodies[0] == bodies[1]


# -- SSML over HTTP ---------------------------------------------------------------------

async def test_ssml_body_over_http(server: ServerProcess) -> None:
    document = '<speak>Hello <break time="200ms"/> over HTTP.</speak>'
    async with aiohttp.ClientSession(server.http_url) as session:
        async with session.post("/synthesize?format=pcm&voice=en_US-joe-medium",
                                data=document.encode(),
                                headers={"Content-Type": "application/ssml+xml"}) as response:
            assert response.status == 200, await response.text()
            typed = await response.read()
        async with session.post("/synthesize", json={"text": document, "format": "pcm",
                                                     "text_format": "ssml"}) as response:
            assert response.status == 200
            assert await response.read() == typed
        # Read as text, the same document is no SSML: its tags are not spoken as pauses.
        async with session.post("/synthesize", json={"text": document, "format": "pcm",
                                                     "text_format": "text"}) as response:
            assert response.status == 200
            assert await response.read() != typed


async def test_invalid_ssml_over_http_names_the_position(server: ServerProcess) -> None:
    async with aiohttp.ClientSession(server.http_url) as session:
        async with session.post("/synthesize", json={
                "text": "<speak>\n  <s>Unclosed\n</speak>", "format": "pcm"}) as response:
            assert response.status == 422
            error = (await response.json())["error"]
        assert error["code"] == "invalid-ssml"
        assert "line 3" in error["message"], error
        async with session.post("/v1/audio/speech", data=b"<speak><break time='x'/></speak>",
                                headers={"Content-Type": "application/ssml+xml"}) as response:
            assert response.status == 422
            error = (await response.json())["error"]
        assert error["code"] == "invalid-ssml"
        assert error["param"] == "input"
        assert "line 1, column" in error["message"], error


# -- hostile SSML -----------------------------------------------------------------------

LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">'
                    for i in range(1, 10)).replace("&lol0;", "&lol;")
          + ']><speak>&lol9;</speak>')
EXTERNAL = ('<?xml version="1.0"?><!DOCTYPE speak [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            "<speak>&x;</speak>")
DEEP = "<speak>" + "<s>" * 10_000 + "deep" + "</s>" * 10_000 + "</speak>"


@pytest.mark.parametrize("document", [LAUGHS, EXTERNAL, DEEP], ids=["laughs", "external",
                                                                   "deep"])
async def test_hostile_ssml_is_refused_fast(server: ServerProcess, document: str) -> None:
    code, text, took = await _error(server, Synthesize(document, text_format="ssml").event())
    assert code in ("invalid-ssml", "text-too-long"), (code, text)
    assert took < 5.0
    if code == "invalid-ssml":
        assert "line 1, column" in text, text
    async with aiohttp.ClientSession(server.http_url) as session, session.post(
            "/synthesize", data=document.encode(),
            headers={"Content-Type": "application/ssml+xml"}) as response:
        assert response.status in (413, 422)
        error = (await response.json())["error"]
    assert error["code"] in ("invalid-ssml", "text-too-long")


async def test_ten_megabytes_of_ssml_are_refused(server: ServerProcess) -> None:
    document = "<speak>" + "word " * 2_000_000 + "</speak>"
    async with server.client() as client:
        await client.write_event(SynthesizeStart(text_format="ssml").event())
        for at in range(0, len(document), 100_000):
            await client.write_event(SynthesizeChunk(document[at:at + 100_000]).event())
            if at > 200_000:
                break  # the refusal has come by now, or never will
        events = await read_until(client, "audio-stop", "synthesize-stopped")
    assert events[-1].type == "error", [e.type for e in events]
    assert events[-1].data["code"] == "text-too-long"
    async with aiohttp.ClientSession(server.http_url) as session, session.post(
            "/synthesize", data=document.encode(),
            headers={"Content-Type": "application/ssml+xml"}) as response:
        assert response.status == 413
    await asyncio.sleep(0)
