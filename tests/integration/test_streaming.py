"""Sub-sentence streaming through both front doors, against a server that renders whole
sentences: the same bytes, but the first audio is a window and comes earlier.

Both servers run without noise, so every render of a text is deterministic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from wyoming.tts import Synthesize

from tests.conftest import ServerProcess, pcm_of, read_until

SENTENCE_199 = (
    "The morning train to the coast leaves the central station at a quarter past eight, "
    "so please arrive a little early and remember to bring your ticket, a warm coat, "
    "and a good book to read on your way.")
TEXT = SENTENCE_199 + " Short one. And a last sentence, with a comma, to finish."
QUIET = ["--noise-scale", "0", "--noise-w-scale", "0", "--sentence-silence", "0.2"]
WINDOW_BYTES = 16 * 256 * 2
"""The first window: 16 frames of 256 samples, 16-bit."""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    logs = tmp_path_factory.mktemp("streaming")
    streaming = ServerProcess(QUIET, logs / "streaming.log")
    try:
        whole = ServerProcess([*QUIET, "--no-sub-sentence-streaming"], logs / "whole.log")
    except BaseException:
        streaming.terminate()
        raise
    yield streaming, whole
    assert streaming.terminate() == 0, streaming.output()
    assert whole.terminate() == 0, whole.output()


def test_servers_say_whether_they_stream(servers: tuple[ServerProcess, ServerProcess],
                                         ) -> None:
    streaming, whole = servers
    assert "streaming in windows of 16,48,96,384 frames" in streaming.output()
    assert "bit-exact" in streaming.output()
    assert "streaming in windows" not in whole.output()


async def _wyoming(server: ServerProcess, text: str) -> tuple[bytes, float, float]:
    """PCM, seconds to the first audio chunk and to audio-stop."""
    async with server.client() as client:
        started = time.perf_counter()
        await client.write_event(Synthesize(text).event())
        first = None
        events = []
        while True:
            event = await asyncio.wait_for(client.read_event(), 60)
            assert event is not None and event.type != "error", event
            events.append(event)
            if event.type == "audio-chunk" and first is None:
                first = time.perf_counter() - started
            if event.type == "audio-stop":
                break
    assert first is not None
    return pcm_of(events), first, time.perf_counter() - started


async def test_wyoming_audio_is_byte_identical_with_and_without_streaming(
        servers: tuple[ServerProcess, ServerProcess]) -> None:
    streaming, whole = servers
    streamed, _, _ = await _wyoming(streaming, TEXT)
    rendered, _, _ = await _wyoming(whole, TEXT)
    assert len(streamed) > 22050 * 2 * 8  # three sentences of speech plus silences
    assert streamed == rendered


async def _http(server: ServerProcess, body: dict[str, object],
                path: str = "/synthesize/stream") -> tuple[bytes, bytes]:
    """The whole body, and its first HTTP chunk (one write of the server)."""
    async with aiohttp.ClientSession(server.http_url) as session, \
            session.post(path, json=body) as response:
        assert response.status == 200, await response.text()
        first = b""
        data = b""
        first_done = False
        async for chunk, end_of_chunk in response.content.iter_chunks():
            data += chunk
            if not first_done:
                first += chunk
                first_done = end_of_chunk
    return data, first


@pytest.mark.parametrize(("speed", "silence"), [(1.0, 0.0), (0.7, 0.3), (1.5, 0.0)])
async def test_http_stream_is_byte_identical_with_and_without_streaming(
        servers: tuple[ServerProcess, ServerProcess], speed: float, silence: float) -> None:
    streaming, whole = servers
    body = {"text": TEXT, "format": "pcm", "speed": speed, "sentence_silence": silence,
            "noise_scale": 0, "noise_w_scale": 0}
    streamed, first = await _http(streaming, body)
    rendered, whole_first = await _http(whole, body)
    assert streamed == rendered
    # The first piece on the wire is a window, a small part of the first sentence.
    assert len(first) == WINDOW_BYTES
    assert len(whole_first) > 4 * WINDOW_BYTES
    whole_body, _ = await _http(streaming, {**body, "use_cache": False}, "/synthesize")
    assert whole_body == streamed


async def test_first_audio_of_a_long_sentence_comes_before_the_sentence_is_rendered(
        servers: tuple[ServerProcess, ServerProcess]) -> None:
    streaming, whole = servers
    timings = {}
    for name, server in (("streaming", streaming), ("whole", whole)):
        await _wyoming(server, SENTENCE_199)  # warm
        _, first, done = await _wyoming(server, SENTENCE_199)
        timings[name] = (first, done)
    # Relative, not absolute: windows make the first audio earlier than a whole-sentence
    # render does on the same machine, and well before the streamed request ends.
    assert timings["streaming"][0] < timings["whole"][0], timings
    assert timings["streaming"][0] < timings["streaming"][1] / 2, timings


async def _metrics(server: ServerProcess) -> dict[tuple[str, str], float]:
    async with aiohttp.ClientSession(server.http_url) as session, \
            session.get("/metrics") as response:
        text = await response.text()
    return {(sample.name, sample.labels.get("door", "")): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def test_window_metrics(servers: tuple[ServerProcess, ServerProcess]) -> None:
    streaming, whole = servers
    before = {name: await _metrics(server) for name, server in
              (("streaming", streaming), ("whole", whole))}
    await asyncio.gather(_wyoming(streaming, SENTENCE_199), _wyoming(whole, SENTENCE_199))
    after = {name: await _metrics(server) for name, server in
             (("streaming", streaming), ("whole", whole))}
    key = ("chorus_audio_windows_total", "wyoming")

    def pieces(name: str) -> float:
        return after[name][key] - before[name].get(key, 0.0)

    units = pieces("whole")  # one piece per unit: the sentence is split at its comma
    assert units >= 1
    # The first unit, which its listener waits for, in at least four windows; later
    # ones in as few as the audio ahead of them allows (one, here).
    assert pieces("streaming") >= units + 3
    late = ("chorus_late_windows_total", "wyoming")
    assert late in after["streaming"] and late in after["whole"]
    assert ("chorus_time_to_first_audio_seconds_count", "wyoming") in after["streaming"]


async def test_plain_wyoming_request_still_reads_like_one_stream(
        servers: tuple[ServerProcess, ServerProcess]) -> None:
    streaming, _ = servers
    async with streaming.client() as client:
        await client.write_event(Synthesize("One. Two.").event())
        events = await read_until(client, "audio-stop")
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[-1] == "audio-stop"
    assert set(types[1:-1]) == {"audio-chunk"}
