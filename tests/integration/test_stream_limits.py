"""Text limits per kind of request, through the real wyoming client.

A plain ``synthesize`` (and HTTP) has a total, ``--max-text-chars``; a Wyoming stream
has none, since it is spoken while it arrives, but it may run at most that far ahead of
the speech, and text with no sentence end is spoken in pieces of at most
``--max-sentence-chars``. The server here has a small total (150) so that streams of a
few times the limit stay quick; the 30,000-character answer is in the reliability tier.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator

import aiohttp
import pytest
from wyoming.client import AsyncClient
from wyoming.event import async_write_event
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from tests.conftest import PARAGRAPH_SENTENCES, ServerProcess, pcm_of, read_until

LIMIT = 150
QUIET = ["--noise-scale", "0", "--noise-w-scale", "0", "--max-text-chars", str(LIMIT),
         "--max-sentence-chars", "120"]
RELIABILITY = pytest.mark.skipif(os.environ.get("CHORUS_RELIABILITY") != "1",
                                 reason="reliability tier: set CHORUS_RELIABILITY=1 to run it")


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(QUIET, tmp_path_factory.mktemp("limits") / "server.log")
    yield proc
    assert proc.terminate() == 0, proc.output()


def _tokens(text: str) -> list[str]:
    """Pieces of a few characters, the way a language model's answer arrives."""
    return re.findall(r"\S*\s*", text)[:-1] or [text]


async def _stream(client: AsyncClient, text: str) -> tuple[bytes, float | None]:
    """Stream ``text`` token by token while reading audio; returns the PCM and the time
    of the first audio chunk relative to ``synthesize-stop`` (negative: before it)."""
    first: list[float] = []
    events = []

    async def read() -> None:
        while True:
            event = await asyncio.wait_for(client.read_event(), 120)
            assert event is not None and event.type != "error", event
            events.append(event)
            if event.type == "audio-chunk" and not first:
                first.append(time.monotonic())
            if event.type == "synthesize-stopped":
                return

    reader = asyncio.create_task(read())
    await client.write_event(SynthesizeStart().event())
    for token in _tokens(text):
        await client.write_event(SynthesizeChunk(token).event())
    await asyncio.sleep(0)
    stopped = time.monotonic()
    await client.write_event(SynthesizeStop().event())
    await reader
    return pcm_of(events), (first[0] - stopped) if first else None


async def _plain(client: AsyncClient, text: str) -> bytes:
    await client.write_event(Synthesize(text).event())
    events = await read_until(client, "audio-stop")
    assert events[-1].type == "audio-stop", events[-1]
    return pcm_of(events)


async def test_a_stream_five_times_the_limit_is_spoken_in_full(
        limited: ServerProcess) -> None:
    sentences = PARAGRAPH_SENTENCES[:12]
    text = " ".join(sentences)
    assert len(text) > 5 * LIMIT
    async with limited.client() as client:
        streamed, _ = await _stream(client, text)
        # Every sentence on its own (each under the limit), in order: the same audio.
        parts = [await _plain(client, sentence) for sentence in sentences]
    assert streamed == b"".join(parts)
    assert len(streamed) > 22050 * 2 * 40  # well over 40 s of speech


async def test_a_plain_synthesize_over_the_limit_is_refused(limited: ServerProcess) -> None:
    async with limited.client() as client:
        await client.write_event(Synthesize("word " * LIMIT).event())
        (error,) = await read_until(client, "audio-stop")
        assert error.type == "error" and error.data["code"] == "text-too-long", error
        assert f"the limit is {LIMIT}" in error.data["text"]
    async with aiohttp.ClientSession(limited.http_url) as session, session.post(
            "/synthesize", json={"text": "word " * LIMIT}) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "text-too-long"


async def test_a_stream_that_never_ends_a_sentence_is_spoken_as_it_arrives(
        limited: ServerProcess) -> None:
    """No sentence end in 600 characters: cut into pieces of at most 120, the first
    spoken before the stream ends, and all of it spoken."""
    words = " ".join(f"word{n % 10}" for n in range(100))
    assert len(words) > 3 * LIMIT and not re.search(r"[.!?]", words)
    async with limited.client() as client:
        reader_events = []
        await client.write_event(SynthesizeStart().event())
        for token in _tokens(words):
            await client.write_event(SynthesizeChunk(token).event())
        # Before synthesize-stop: audio must already come.
        while True:
            event = await asyncio.wait_for(client.read_event(), 60)
            assert event is not None and event.type != "error", event
            reader_events.append(event)
            if event.type == "audio-chunk":
                break
        await client.write_event(SynthesizeStop().event())
        reader_events += await read_until(client, "synthesize-stopped")
    seconds = len(pcm_of(reader_events)) / (22050 * 2)
    assert seconds > 25, seconds  # 100 words: all of them, not just the first piece


async def test_a_stream_far_ahead_of_the_speech_is_held_back(limited: ServerProcess) -> None:
    """Bounded buffering: a client that writes text much faster than it is spoken (and
    reads no audio) is slowed down by TCP once the server stops reading, instead of the
    server holding all of it. Loopback socket buffers take a few MB; 64 MB never fit."""
    text = "This sentence is about forty-five characters. " * 20
    _, port = limited.uri.rsplit(":", 1)
    _, writer = await asyncio.open_connection("127.0.0.1", int(port))
    written = 0
    try:
        await async_write_event(SynthesizeStart().event(), writer)
        while written < 64_000_000:
            try:
                await asyncio.wait_for(
                    async_write_event(SynthesizeChunk(text).event(), writer), 5)
            except TimeoutError:
                break
            written += len(text)
    finally:
        writer.transport.abort()  # leave at once, with audio unread
    print(f"held back after {written / 1e6:.1f} M characters")
    assert written < 32_000_000, written
    # The server let that client go and serves the next one.
    async with limited.client() as other:
        assert len(await _plain(other, "Still here.")) > 22050


@pytest.mark.reliability
@RELIABILITY
@pytest.mark.timeout(1800)
async def test_a_30000_character_answer_is_spoken_in_full(tmp_path_factory: pytest.
                                                          TempPathFactory) -> None:
    """At the default limits (10,000 per request): a long LLM answer, streamed."""
    server = ServerProcess(["--noise-scale", "0", "--noise-w-scale", "0"],
                           tmp_path_factory.mktemp("long") / "server.log", ready_timeout=240)
    try:
        sentences: list[str] = []
        while sum(len(s) + 1 for s in sentences) < 30_000:
            sentences.append(PARAGRAPH_SENTENCES[len(sentences) % len(PARAGRAPH_SENTENCES)])
        text = " ".join(sentences)
        async with server.client() as client:
            started = time.monotonic()
            streamed, _ = await _stream(client, text)
            took = time.monotonic() - started
            distinct = {s: await _plain(client, s) for s in PARAGRAPH_SENTENCES}
        expected = b"".join(distinct[s] for s in sentences)
        print(f"{len(text)} characters streamed: {len(streamed) / 44100:.0f} s of audio "
              f"in {took:.0f} s")
        assert streamed == expected
    finally:
        assert server.terminate() == 0, server.output()
