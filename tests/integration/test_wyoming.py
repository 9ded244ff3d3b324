"""The Wyoming front door, spoken to by real ``wyoming`` clients over real sockets."""

from __future__ import annotations

import asyncio
import time

from wyoming.audio import AudioStart
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from tests.conftest import (
    JOE,
    PARAGRAPH_SENTENCES,
    ServerProcess,
    describe,
    pcm_of,
    read_until,
)

TEXT = "The weather today is sunny and warm. Tomorrow it may rain in the afternoon."
PARAGRAPH = " ".join(PARAGRAPH_SENTENCES)


async def test_describe_lists_the_installed_voice(server: ServerProcess) -> None:
    async with server.client() as client:
        info = await describe(client)
    [program] = info.tts
    assert program.supports_synthesize_streaming
    voice = next(v for v in program.voices if v.name == JOE)
    assert voice.languages == ["en_US"]
    assert voice.installed
    assert voice.version == "1.0.0"
    assert voice.attribution.name == "rhasspy"
    assert "joe" in (voice.description or "")


async def test_synthesize_returns_one_framed_audio_stream(server: ServerProcess) -> None:
    async with server.client() as client:
        await client.write_event(Synthesize(TEXT).event())
        events = await read_until(client, "audio-stop")
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[-1] == "audio-stop", types
    assert set(types[1:-1]) == {"audio-chunk"}
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (22050, 2, 1)
    seconds = len(pcm_of(events)) / 2 / 22050
    # ~13 words per sentence at normal speaking rate: a few seconds, not silence or minutes
    assert 3.0 < seconds < 9.0, seconds


async def test_home_assistant_streaming_flow_then_more_requests(server: ServerProcess) -> None:
    words = PARAGRAPH.split(" ")[:40]
    text = " ".join(words)
    async with server.client() as client:
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name=JOE)).event())
        for word in words:
            await client.write_event(SynthesizeChunk(word + " ").event())
        # Audio for the first sentences arrives before the stream is stopped.
        first = await asyncio.wait_for(client.read_event(), 30)
        assert first is not None and first.type == "audio-start", first
        await client.write_event(Synthesize(text).event())  # compatibility copy: ignored
        await client.write_event(SynthesizeStop().event())
        events = [first, *await read_until(client, "synthesize-stopped")]
        types = [e.type for e in events]
        assert types.count("audio-start") == 1 and types.count("audio-stop") == 1, types
        assert types[-2:] == ["audio-stop", "synthesize-stopped"], types
        streamed = len(pcm_of(events)) / 2 / 22050
        assert streamed > 8.0, streamed  # 40 words of speech, spoken once (copy ignored)
        assert streamed < 25.0, streamed

        # The same connection takes a plain request and another stream afterwards.
        await client.write_event(Synthesize("Second request.").event())
        plain = await read_until(client, "audio-stop")
        assert plain[0].type == "audio-start" and len(pcm_of(plain)) > 0

        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk("And a third ").event())
        await client.write_event(SynthesizeChunk("one, streamed.").event())
        await client.write_event(SynthesizeStop().event())
        third = await read_until(client, "synthesize-stopped")
        assert third[0].type == "audio-start"
        assert len(pcm_of(third)) > 0


async def test_stream_sends_audio_per_sentence_before_stop(server: ServerProcess) -> None:
    async with server.client() as client:
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk("This first sentence is complete. ").event())
        await client.write_event(SynthesizeChunk("And the second").event())
        # The first sentence is complete once the next one starts; its audio must come
        # while the stream is still open.
        events = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            event = await asyncio.wait_for(client.read_event(), 20)
            assert event is not None
            events.append(event)
            if event.type == "audio-chunk" and len(pcm_of(events)) > 22050:  # > 0.5 s
                break
        assert len(pcm_of(events)) > 22050
        await client.write_event(SynthesizeStop().event())
        rest = await read_until(client, "synthesize-stopped")
        assert [e.type for e in rest][-2:] == ["audio-stop", "synthesize-stopped"]


async def test_empty_stream_just_stops(server: ServerProcess) -> None:
    async with server.client() as client:
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeStop().event())
        events = await read_until(client, "synthesize-stopped")
    assert [e.type for e in events] == ["synthesize-stopped"]


async def test_concurrent_clients_all_get_their_audio(server: ServerProcess) -> None:
    async def one(index: int) -> float:
        async with server.client() as client:
            await client.write_event(Synthesize(f"Client number {index} says hello.").event())
            events = await read_until(client, "audio-stop")
        assert events[0].type == "audio-start", events[0]
        return len(pcm_of(events)) / 2 / 22050

    durations = await asyncio.gather(*(one(i) for i in range(8)))
    assert all(1.0 < d < 5.0 for d in durations), durations


async def test_describe_is_prompt_while_a_long_synthesis_runs(server: ServerProcess) -> None:
    async with server.client() as busy, server.client() as other:
        await busy.write_event(Synthesize(PARAGRAPH).event())
        first = await asyncio.wait_for(busy.read_event(), 30)
        assert first is not None and first.type == "audio-start"
        latencies = []
        for _ in range(5):
            started = time.perf_counter()
            await describe(other)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.05)
        rest = await read_until(busy, "audio-stop")
    assert rest[-1].type == "audio-stop"
    # wyoming-piper answers after the synthesis (~4 s); a free loop answers in ms.
    assert max(latencies) < 0.25, latencies


async def test_short_request_is_not_held_up_by_a_long_one(server: ServerProcess) -> None:
    async with server.client() as long_client, server.client() as short_client:
        await long_client.write_event(Synthesize(PARAGRAPH * 2).event())
        first = await asyncio.wait_for(long_client.read_event(), 30)
        assert first is not None and first.type == "audio-start"
        started = time.perf_counter()
        await short_client.write_event(Synthesize("Quick one.").event())
        short = await read_until(short_client, "audio-stop")
        short_latency = time.perf_counter() - started
        long_events = await read_until(long_client, "audio-stop", limit=120)
        long_done = time.perf_counter() - started
    assert short[-1].type == "audio-stop" and long_events[-1].type == "audio-stop"
    # The long request still had most of its ~24 sentences to go.
    assert short_latency < long_done / 3, (short_latency, long_done)


async def test_language_only_and_default_selection(server: ServerProcess) -> None:
    async with server.client() as client:
        await client.write_event(Synthesize("Hello.", voice=SynthesizeVoice(
            language="en_US")).event())
        by_language = await read_until(client, "audio-stop")
        await client.write_event(Synthesize("Hello.", voice=SynthesizeVoice(
            language="de_DE")).event())
        [error] = await read_until(client, "audio-stop")
    assert by_language[-1].type == "audio-stop"
    assert error.type == "error" and error.data["code"] == "unknown-voice"
    assert "en_US" in error.data["text"]


async def test_describe_after_synthesis_on_the_same_connection(server: ServerProcess) -> None:
    async with server.client() as client:
        await client.write_event(Synthesize("One.").event())
        await read_until(client, "audio-stop")
        info = await describe(client)
    assert info.tts and info.tts[0].voices
