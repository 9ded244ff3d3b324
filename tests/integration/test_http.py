"""The HTTP front door, spoken to by a real HTTP client against a real ``chorus serve``.

Most tests share the session's server (HTTP open, no key, CORS closed). A second server
with an API key, CORS origins, an OpenAI voice mapping and ``--max-requests 1`` covers
the settings that change behaviour; a third runs with ``--no-http``.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from prometheus_client.parser import text_string_to_metric_families
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from tests.conftest import (
    JOE,
    PARAGRAPH_SENTENCES,
    ServerProcess,
    describe,
    free_port,
    pcm_of,
    read_until,
)

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
PARAGRAPH = " ".join(PARAGRAPH_SENTENCES[:10])
DETERMINISTIC = {"noise_scale": 0, "noise_w_scale": 0}
"""Piper's noise changes phoneme durations; without it every format has the same length."""
KEY = "s3cret-key"
ORIGIN = "https://app.example"


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(server.http_url) as session:
        yield session


METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """API key and CORS origins from the environment (URLs contain ':'), OpenAI mapping,
    a metrics door."""
    log = tmp_path_factory.mktemp("secured") / "server.log"
    proc = ServerProcess(
        ["--max-requests", "1", "--workers", "1", "--openai-voice", "nova=" + JOE,
         "--metrics-port", str(METRICS_PORT)],
        log, env={"CHORUS_API_KEY": KEY,
                  "CHORUS_CORS_ORIGIN": f"{ORIGIN},http://localhost:3000"})
    yield proc
    assert proc.terminate() == 0, proc.output()


def decode(data: bytes) -> tuple[int, float]:
    """(sample rate, seconds) of an encoded body, decoded by libav."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, samples / stream.rate


async def post(session: aiohttp.ClientSession, path: str, body: Any,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with session.post(path, json=body, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def error_of(session: aiohttp.ClientSession, path: str, body: Any,
                   ) -> tuple[int, dict[str, Any], dict[str, str]]:
    kwargs: dict[str, Any] = ({"data": body} if isinstance(body, bytes | str)
                              else {"json": body})
    async with session.post(path, **kwargs) as response:
        assert response.content_type == "application/json", await response.text()
        payload = await response.json()
        return response.status, payload["error"], dict(response.headers)


# -- synthesis -------------------------------------------------------------------------


async def test_synthesize_returns_wav_with_timing_headers(
        http: aiohttp.ClientSession) -> None:
    status, headers, body = await post(http, "/synthesize", {"text": SENTENCE})
    assert status == 200, body
    assert headers["Content-Type"] == "audio/wav"
    assert headers["X-Voice"] == JOE
    assert headers["X-Sample-Rate"] == "22050"
    assert float(headers["X-Generation-Time"]) > 0
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    assert struct.unpack("<I", body[40:44])[0] == len(body) - 44
    rate, seconds = decode(body)
    assert rate == 22050
    assert seconds == pytest.approx(float(headers["X-Audio-Duration"]), abs=0.01)
    assert 2.0 < seconds < 6.0


@pytest.fixture(scope="module")
def reference_seconds(server: ServerProcess) -> float:
    async def fetch() -> float:
        async with aiohttp.ClientSession(server.http_url) as session:
            status, headers, _ = await post(session, "/synthesize",
                                            {"text": SENTENCE, **DETERMINISTIC})
        assert status == 200
        return float(headers["X-Audio-Duration"])
    return asyncio.run(fetch())


@pytest.mark.parametrize("fmt", ["wav", "pcm", "mp3", "opus", "flac", "aac"])
@pytest.mark.parametrize("path", ["/synthesize", "/synthesize/stream"])
async def test_every_format_decodes_to_the_same_duration(
        http: aiohttp.ClientSession, reference_seconds: float, fmt: str, path: str) -> None:
    if path.endswith("stream") and fmt == "flac":
        status, error, _ = await error_of(http, path, {"text": SENTENCE, "format": fmt})
        assert status == 422 and "format" in error["message"]
        return
    status, headers, body = await post(http, path,
                                       {"text": SENTENCE, "format": fmt, **DETERMINISTIC})
    assert status == 200, body
    rate = int(headers["X-Sample-Rate"])
    if fmt == "pcm":
        assert headers["Content-Type"] == f"audio/pcm;rate={rate}"  # s16le: not audio/L16
        seconds = len(body) / 2 / rate
    else:
        decoded_rate, seconds = decode(body)
        assert decoded_rate == rate
    # mp3/opus/aac decoders return encoder priming and padding; ADTS (aac) cannot say
    # how much, so it gets the widest margin.
    assert seconds == pytest.approx(reference_seconds, abs=0.15 if fmt == "aac" else 0.1)
    if path == "/synthesize":
        assert float(headers["X-Audio-Duration"]) == pytest.approx(reference_seconds,
                                                                   abs=0.01)


@pytest.mark.parametrize(("fmt", "rate"), [("wav", 16000), ("pcm", 8000), ("mp3", 44100),
                                           ("opus", 24000), ("flac", 48000)])
async def test_sample_rate_resamples(http: aiohttp.ClientSession, reference_seconds: float,
                                     fmt: str, rate: int) -> None:
    status, headers, body = await post(http, "/synthesize", {
        "text": SENTENCE, "format": fmt, "sample_rate": rate, **DETERMINISTIC})
    assert status == 200, body
    assert headers["X-Sample-Rate"] == str(rate)
    if fmt == "pcm":
        seconds = len(body) / 2 / rate
    else:
        decoded_rate, seconds = decode(body)
        # Opus decoders always output 48 kHz; the rate asked for is the encoder's.
        assert decoded_rate == (48000 if fmt == "opus" else rate)
    assert seconds == pytest.approx(reference_seconds, abs=0.1)


@pytest.mark.parametrize("fmt", ["wav", "pcm", "mp3"])
@pytest.mark.parametrize("path", ["/synthesize", "/synthesize/stream"])
async def test_no_audio_with_a_resample_is_an_empty_answer(http: aiohttp.ClientSession,
                                                           path: str, fmt: str) -> None:
    """Punctuation alone renders no audio; with a rate other than the voice's that was a
    500 (the resampler refused an empty frame)."""
    status, headers, body = await post(http, path, {"text": ".", "format": fmt,
                                                    "sample_rate": 16000})
    assert status == 200, body
    assert headers["X-Sample-Rate"] == "16000"
    if fmt == "wav":
        assert body[:4] == b"RIFF" and len(body) == 44
    elif fmt == "pcm":
        assert body == b""


async def test_speed_changes_duration(http: aiohttp.ClientSession,
                                      reference_seconds: float) -> None:
    """speed maps to length_scale = 1/speed; Piper's durations do not scale exactly."""
    durations = {}
    for speed in (0.5, 2.0):
        status, headers, _ = await post(http, "/synthesize",
                                        {"text": SENTENCE, "speed": speed, **DETERMINISTIC})
        assert status == 200
        durations[speed] = float(headers["X-Audio-Duration"])
    assert durations[2.0] < 0.7 * reference_seconds
    assert durations[0.5] > 1.4 * reference_seconds


async def test_stream_sends_first_audio_before_the_paragraph_is_rendered(
        http: aiohttp.ClientSession) -> None:
    started = time.perf_counter()
    async with http.post("/synthesize/stream", json={"text": PARAGRAPH}) as response:
        assert response.status == 200
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert "X-Audio-Duration" not in response.headers
        first = await response.content.readany()
        first_at = time.perf_counter() - started
        rest = await response.read()
    total = time.perf_counter() - started
    body = first + rest
    assert body[:4] == b"RIFF"
    assert struct.unpack("<I", body[40:44])[0] == 0xFFFFFFFF  # streaming header
    assert len(first) > 44  # audio of the first sentence, not just the header
    assert first_at < total / 2, (first_at, total)
    rate, seconds = decode(body)
    assert rate == 22050 and seconds > 20


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "status", "code", "mentions"), [
    (b"{not json", 400, "bad-request", "JSON"),
    ([1, 2], 422, "bad-request", "object"),
    ({}, 422, "bad-request", "text"),
    ({"text": 5}, 422, "bad-request", "text"),
    ({"text": "hi", "speed": 9}, 422, "bad-request", "speed"),
    ({"text": "hi", "speed": "fast"}, 422, "bad-request", "speed"),
    ({"text": "hi", "speed": True}, 422, "bad-request", "speed"),
    ({"text": "hi", "noise_scale": -1}, 422, "bad-request", "noise_scale"),
    ({"text": "hi", "noise_w_scale": "x"}, 422, "bad-request", "noise_w_scale"),
    ({"text": "hi", "format": "ogg"}, 422, "bad-request", "format"),
    ({"text": "hi", "format": "opus", "sample_rate": 44100}, 422, "bad-request",
     "sample_rate"),
    ({"text": "hi", "sample_rate": "fast"}, 422, "bad-request", "sample_rate"),
    ({"text": "hi", "sample_rate": 100}, 422, "bad-request", "sample_rate"),
    ({"text": "hi", "speaker": [1]}, 422, "bad-request", "speaker"),
    ({"text": "hi", "voice": 3}, 422, "bad-request", "voice"),
    ({"text": "hi", "volume": 3}, 422, "bad-request", "volume"),
    ({"text": "  \n "}, 422, "empty-text", "empty"),
    ({"text": "a" * 10_001}, 413, "text-too-long", "10000"),
    ({"text": "hi", "voice": "en_US-joe-mediun"}, 404, "unknown-voice", JOE),
    ({"text": "hi", "language": "tlh"}, 404, "unknown-voice", "tlh"),
    (b'{"text": "hi \\ud800 there"}', 422, "bad-request", "surrogate"),  # cache on
])
@pytest.mark.parametrize("path", ["/synthesize", "/synthesize/stream"])
async def test_bad_requests_get_a_clear_4xx(http: aiohttp.ClientSession, path: str,
                                            body: Any, status: int, code: str,
                                            mentions: str) -> None:
    got, error, _ = await error_of(http, path, body)
    assert (got, error["code"]) == (status, code), error
    assert mentions in error["message"]


@pytest.mark.parametrize(("path", "speaker"), [("/synthesize", "7"),
                                               ("/synthesize/stream", "8")])
async def test_unknown_speaker_speaks_with_speaker_0_and_warns_once(
        server: ServerProcess, http: aiohttp.ClientSession, path: str, speaker: str) -> None:
    """Once per voice and speaker: a stale speaker in every request must not flood the log."""
    logged = len(server.output())
    for _ in range(3):
        async with http.post(path, json={"text": "Hi.", "speaker": speaker}) as response:
            assert response.status == 200, await response.text()
            assert len(await response.read()) > 1000
    warnings = [line for line in server.output()[logged:].splitlines()
                if "WARNING" in line and f"'{speaker}'" in line]
    assert len(warnings) == 1, warnings
    assert "speaker 0" in warnings[0]


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(["--strict-speakers"], tmp_path_factory.mktemp("strict") / "log")
    yield proc
    assert proc.terminate() == 0, proc.output()


@pytest.mark.parametrize("path", ["/synthesize", "/synthesize/stream"])
async def test_unknown_speaker_is_404_with_strict_speakers(strict: ServerProcess,
                                                           path: str) -> None:
    async with aiohttp.ClientSession(strict.http_url) as session:
        got, error, _ = await error_of(session, path, {"text": "hi", "speaker": "7"})
    assert (got, error["code"]) == (404, "unknown-speaker"), error
    assert "speaker" in error["message"]


async def test_unknown_routes_and_methods_answer_json(http: aiohttp.ClientSession) -> None:
    async with http.get("/nope") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not-found"
    async with http.get("/synthesize") as response:
        assert response.status == 405
        assert "POST" in response.headers["Allow"]
        assert "error" in await response.json()


# -- voices, health, OpenAI ------------------------------------------------------------


async def exchange(port: int | None, raw: bytes) -> bytes:
    """Raw bytes in, everything the server sends until it closes out."""
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("raw", [
    b"POST /synthesize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\n",
    b"FOO /synthesize HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health/live HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["chunk-size", "method", "header-name", "long-line"])
async def test_malformed_http_is_a_400_and_no_error_in_the_log(server: ServerProcess,
                                                               raw: bytes) -> None:
    """aiohttp answers these itself, and logged each as an ERROR with a traceback."""
    logged = len(server.output())
    answer = await exchange(server.http_port, raw)
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] in (b"400", b"414"), answer
    await asyncio.sleep(0.2)  # the log line is written after the answer
    log = server.output()[logged:]
    assert "Traceback" not in log and " ERROR " not in log, log
    if not raw.startswith(b"FOO"):  # aiohttp itself says a bad first method at DEBUG
        assert "Error handling request from 127.0.0.1: answered 4" in log, log


async def test_voices_list_and_detail(http: aiohttp.ClientSession) -> None:
    async with http.get("/voices") as response:
        assert response.status == 200
        voices = (await response.json())["voices"]
    joe = next(v for v in voices if v["name"] == JOE)
    assert joe["engine"] == "piper" and joe["language"] == "en_US"
    assert joe["quality"] == "medium" and joe["sample_rate"] == 22050
    assert joe["speakers"] == [] and joe["resident"] is True
    async with http.get(f"/voices/{JOE}") as response:
        assert response.status == 200
        assert (await response.json())["name"] == JOE
    async with http.get("/voices/en_US-joe-mediun") as response:
        assert response.status == 404
        error = (await response.json())["error"]
    assert error["code"] == "unknown-voice" and f"did you mean {JOE}" in error["message"]


async def test_health(http: aiohttp.ClientSession) -> None:
    async with http.get("/health/live") as response:
        assert response.status == 200
    async with http.get("/health/ready") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"


@pytest.mark.parametrize(("fmt", "rate"), [("mp3", 22050), ("opus", 48000), ("aac", 22050),
                                           ("flac", 22050), ("wav", 22050), ("pcm", 24000)])
async def test_openai_speech_formats(http: aiohttp.ClientSession, reference_seconds: float,
                                     fmt: str, rate: int) -> None:
    status, headers, body = await post(http, "/v1/audio/speech", {
        "model": "tts-1", "input": SENTENCE, "voice": "alloy", "response_format": fmt,
        "instructions": "ignored"})
    assert status == 200, body
    assert headers["X-Voice"] == JOE  # alloy is unmapped: the default voice
    assert headers["X-Sample-Rate"] == str(rate)
    if fmt == "pcm":
        seconds = len(body) / 2 / rate  # OpenAI's pcm is 24 kHz s16le
    else:
        decoded_rate, seconds = decode(body)
        assert decoded_rate == rate
    assert 2.0 < seconds < 6.0  # noise on: close to, not exactly, the reference
    assert seconds == pytest.approx(reference_seconds, rel=0.25)


async def test_openai_defaults_and_errors(http: aiohttp.ClientSession) -> None:
    status, headers, body = await post(http, "/v1/audio/speech",
                                       {"model": "tts-1", "input": "Hello.", "voice": JOE})
    assert status == 200 and headers["Content-Type"] == "audio/mpeg"
    assert headers["X-Voice"] == JOE
    assert decode(body)[0] == 22050
    status, error, _ = await error_of(http, "/v1/audio/speech",
                                      {"input": "Hello.", "voice": "bogus"})
    assert (status, error["code"]) == (404, "unknown-voice")
    status, error, _ = await error_of(http, "/v1/audio/speech", {
        "input": "Hello.", "stream_format": "sse", "response_format": "flac"})
    assert (status, error["param"]) == (400, "stream_format")
    assert error["message"].endswith("use one of aac, mp3, opus, pcm, wav")
    status, error, _ = await error_of(http, "/v1/audio/speech",
                                      {"input": "Hello.", "response_format": "ogg"})
    assert status == 422 and "response_format" in error["message"]
    status, error, _ = await error_of(http, "/v1/audio/speech", {"voice": "alloy"})
    assert status == 422 and "input" in error["message"]
    status, error, _ = await error_of(http, "/v1/audio/speech",
                                      {"input": "Hello.", "speed": 0.1})
    assert status == 422 and "speed" in error["message"]


async def test_openai_listings(http: aiohttp.ClientSession) -> None:
    async with http.get("/v1/audio/voices") as response:
        voices = (await response.json())["voices"]
    ids = [v["id"] for v in voices]
    assert JOE in ids and "alloy" in ids and "shimmer" in ids
    assert all(set(v) >= {"id", "name"} for v in voices)
    async with http.get("/v1/models") as response:
        models = (await response.json())["data"]
    assert "tts-1" in [m["id"] for m in models]


# -- metrics ---------------------------------------------------------------------------


async def scrape(session: aiohttp.ClientSession,
                 headers: dict[str, str] | None = None) -> dict[str, float]:
    """Samples as ``name{label=value,...}`` -> value."""
    async with session.get("/metrics", headers=headers) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def test_metrics_include_the_process(http: aiohttp.ClientSession) -> None:
    samples = await scrape(http)
    assert samples["process_resident_memory_bytes{}"] > 50e6  # a loaded voice
    assert samples["process_open_fds{}"] > 3
    assert samples["process_cpu_seconds_total{}"] > 0


async def test_metrics_follow_both_front_doors(server: ServerProcess,
                                               http: aiohttp.ClientSession) -> None:
    before = await scrape(http)
    status, _, _ = await post(http, "/synthesize", {"text": SENTENCE, "format": "mp3"})
    assert status == 200
    await error_of(http, "/synthesize", {"text": "hi", "voice": "nobody"})
    async with server.client() as client:
        await client.write_event(Synthesize(SENTENCE).event())
        await read_until(client, "audio-stop")
    after = await scrape(http)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta(f"chorus_requests_total{{door=http,format=mp3,voice={JOE}}}") == 1
    assert delta(f"chorus_requests_total{{door=wyoming,format=pcm,voice={JOE}}}") == 1
    assert delta("chorus_request_errors_total{code=unknown-voice,door=http}") == 1
    for door in ("http", "wyoming"):
        assert delta(f"chorus_time_to_first_audio_seconds_count{{door={door}}}") == 1
        assert delta(f"chorus_synthesis_seconds_count{{door={door}}}") == 1
        assert delta(f"chorus_real_time_factor_count{{door={door}}}") == 1
    assert after["chorus_resident_voices{}"] >= 1
    assert after[f"chorus_voice_memory_bytes{{voice={JOE}}}"] > 1_000_000
    for gauge in ("chorus_queued_units", "chorus_busy_workers", "chorus_active_requests"):
        assert f"{gauge}{{}}" in after


# -- both doors at once ----------------------------------------------------------------


async def test_wyoming_stream_and_http_requests_in_parallel(
        server: ServerProcess, http: aiohttp.ClientSession) -> None:
    async def wyoming_stream() -> float:
        async with server.client() as client:
            await client.write_event(SynthesizeStart().event())
            for word in PARAGRAPH.split(" "):
                await client.write_event(SynthesizeChunk(word + " ").event())
            await client.write_event(SynthesizeStop().event())
            events = await read_until(client, "synthesize-stopped")
        assert "error" not in [e.type for e in events]
        return len(pcm_of(events)) / 2 / 22050

    async def http_request(fmt: str) -> float:
        status, _, body = await post(http, "/synthesize", {"text": SENTENCE, "format": fmt})
        assert status == 200, body
        return decode(body)[1]

    async def http_stream() -> float:
        status, _, body = await post(http, "/synthesize/stream",
                                     {"text": PARAGRAPH, "format": "opus"})
        assert status == 200, body
        return decode(body)[1]

    results = await asyncio.gather(wyoming_stream(), http_stream(), http_request("wav"),
                                   http_request("mp3"), http_request("flac"))
    assert results[0] > 20 and results[1] > 20
    assert all(2.0 < seconds < 6.0 for seconds in results[2:])


# -- settings: API key, CORS, OpenAI mapping, busy, --no-http --------------------------


async def test_cors_is_closed_by_default(http: aiohttp.ClientSession) -> None:
    async with http.get("/voices", headers={"Origin": ORIGIN}) as response:
        assert response.status == 200
        assert "Access-Control-Allow-Origin" not in response.headers
    async with http.options("/synthesize", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST"}) as response:
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_api_key_guards_everything_but_health(secured: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(secured.http_url) as session:
        for path in ("/voices", "/metrics", "/v1/models", "/v1/audio/voices"):
            async with session.get(path) as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"] == "Bearer"
                assert (await response.json())["error"]["code"] == "unauthorized"
            async with session.get(path, headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401, path
            async with session.get(path, headers=auth) as response:
                assert response.status == 200, path
        status, _, _ = await post(session, "/synthesize", {"text": "Hi."})
        assert status == 401
        status, _, body = await post(session, "/synthesize", {"text": "Hi."}, auth)
        assert status == 200 and decode(body)[1] > 0.2
        for path in ("/health/live", "/health/ready"):
            async with session.get(path) as response:
                assert response.status == 200, path


async def test_the_metrics_port_is_scraped_without_the_key(secured: ServerProcess) -> None:
    """The scrape, keyless, on its own port; the API's /metrics stays behind the key."""
    assert f"metrics on http://127.0.0.1:{METRICS_PORT}/metrics" in secured.output()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{METRICS_PORT}") as door:
        before = await scrape(door)
        async with aiohttp.ClientSession(secured.http_url) as api:
            async with api.get("/metrics") as response:
                assert response.status == 401
            status, _, _ = await post(api, "/synthesize", {"text": "Hi."},
                                      {"Authorization": f"Bearer {KEY}"})
            assert status == 200
        after = await scrape(door)
        for path in ("/voices", "/health/ready", "/synthesize"):
            async with door.get(path) as response:
                assert response.status == 404, path
    key = f"chorus_requests_total{{door=http,format=wav,voice={JOE}}}"
    assert after[key] - before.get(key, 0.0) == 1  # the same registry as the API's
    assert after["process_resident_memory_bytes{}"] > 50e6


def test_a_metrics_port_another_door_has_fails_at_start(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(RuntimeError, match=f"--metrics-port {port} is also --http-port"):
        ServerProcess(["--http-port", str(port), "--metrics-port", str(port)],
                      tmp_path / "log", ready_timeout=30)


async def test_an_api_key_that_is_not_utf8_is_refused_not_a_crash(
        secured: ServerProcess) -> None:
    answer = await exchange(secured.http_port, b"GET /voices HTTP/1.1\r\nHost: x\r\n"
                            b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401 "), answer
    assert b'"unauthorized"' in answer


async def test_cors_origins_from_the_environment(secured: ServerProcess) -> None:
    async with aiohttp.ClientSession(secured.http_url) as session:
        for origin in (ORIGIN, "http://localhost:3000"):
            async with session.options("/v1/audio/speech", headers={
                    "Origin": origin, "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type"}) as r:
                assert r.status == 204  # preflight needs no key
                assert r.headers["Access-Control-Allow-Origin"] == origin
                assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        async with session.get("/health/live", headers={"Origin": ORIGIN}) as response:
            assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert "X-Audio-Duration" in response.headers["Access-Control-Expose-Headers"]
        async with session.get("/health/live", headers={"Origin": "https://evil.example"},
                               ) as response:
            assert "Access-Control-Allow-Origin" not in response.headers


async def test_busy_answers_503_with_retry_after(secured: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(secured.http_url, headers=auth) as session:
        async with session.post("/synthesize/stream", json={"text": PARAGRAPH}) as long:
            assert long.status == 200
            await long.content.readany()  # the only slot is taken until this is read
            status, error, headers = await error_of(session, "/synthesize", {"text": "Hi."})
            assert (status, error["code"]) == (503, "busy")
            assert headers["Retry-After"] == "1"
            await long.read()
        # the OpenAI mapping: nova -> joe by configuration
        status, headers, _ = await post(session, "/v1/audio/speech",
                                        {"input": "Hi.", "voice": "nova"})
        assert status == 200 and headers["X-Voice"] == JOE


async def test_client_leaving_a_stream_frees_its_slot(secured: ServerProcess) -> None:
    """With --max-requests 1, a hung-up stream must give its slot back promptly."""
    auth = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(secured.http_url, headers=auth) as session:
        async with session.post("/synthesize/stream", json={"text": PARAGRAPH}) as response:
            assert response.status == 200
            await response.content.readany()
            response.close()  # hang up mid-stream
        deadline = time.monotonic() + 10
        while True:
            status, _, _ = await post(session, "/synthesize", {"text": "Hi."})
            if status == 200:
                break
            assert status == 503 and time.monotonic() < deadline
            await asyncio.sleep(0.1)
    assert "HTTP stream cut short" in secured.output()


async def _busy_workers(session: aiohttp.ClientSession) -> float:
    return (await scrape(session))["chorus_busy_workers{}"]


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_client_leaving_a_whole_request_cancels_its_synthesis(secured: ServerProcess,
                                                                    how: str) -> None:
    """A ``/synthesize`` client that hangs up mid-render takes its synthesis with it: the
    one slot (``--max-requests 1``) is free within seconds, not when the two paragraphs
    (some 15 s of work on one worker) would have been rendered; a reset ends as quietly
    as a close."""
    auth = {"Authorization": f"Bearer {KEY}"}
    logged = len(secured.output())
    body = json.dumps({"text": f"{PARAGRAPH} {PARAGRAPH}"}).encode()
    assert secured.http_port is not None
    _, writer = await asyncio.open_connection("127.0.0.1", secured.http_port)
    writer.write(b"POST /synthesize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
                 .encode() + body)
    async with aiohttp.ClientSession(secured.http_url, headers=auth) as session:
        deadline = time.monotonic() + 20
        while await _busy_workers(session) < 1:
            assert time.monotonic() < deadline, "the synthesis never started"
            await asyncio.sleep(0.05)
        if how == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        left = time.monotonic()
        while True:
            status, _, answer = await post(session, "/synthesize", {"text": "Hi."})
            if status == 200:
                break
            assert status == 503, answer
            assert time.monotonic() - left < 4, "the departed request kept its slot"
            await asyncio.sleep(0.1)
        assert await _busy_workers(session) == 0
    log = secured.output()[logged:]
    assert "Traceback" not in log and "ERROR" not in log, log


def test_no_http_leaves_the_port_closed(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ServerProcess(["--no-http", "--http-port", str(port)], tmp_path / "log")
    try:
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect(("127.0.0.1", port))

        async def still_speaks_wyoming() -> None:
            async with server.client() as client:
                info = await describe(client)
            assert info.tts[0].voices

        asyncio.run(still_speaks_wyoming())
        assert "HTTP on" not in server.output()
    finally:
        assert server.terminate() == 0, server.output()


async def test_shutdown_turns_ready_off_and_lets_streams_finish(tmp_path: Path) -> None:
    """SIGTERM: listeners close, a keep-alive connection sees 503s, the stream completes."""
    # A grace long enough for a loaded machine to render the whole text on one worker.
    server = ServerProcess(["--workers", "1", "--shutdown-grace", "120"], tmp_path / "log")
    try:
        async with aiohttp.ClientSession(server.http_url) as session:
            # ~90 s of wav: rendering takes seconds on one worker, and the unread body
            # fills the socket buffers, so the request is still running at SIGTERM.
            async with session.post("/synthesize/stream",
                                    json={"text": " ".join([PARAGRAPH] * 3)}) as long:
                assert long.status == 200
                first = await long.content.readany()
                async with session.get("/health/ready") as response:  # a second connection,
                    assert response.status == 200  # kept alive in the pool
                server.proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 10
                while "Shutting down" not in server.output():
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                async with session.get("/health/ready") as response:
                    assert response.status == 503
                    assert (await response.json())["reason"] == "shutting down"
                async with session.get("/health/live") as response:
                    assert response.status == 200
                status, error, headers = await error_of(session, "/synthesize",
                                                        {"text": "Hi."})
                assert (status, error["code"]) == (503, "shutting-down")
                assert "Retry-After" in headers
                body = first + await long.read()
            assert decode(body)[1] > 60  # the whole text, not cut at SIGTERM
        # A second SIGTERM while the process is already exiting would kill it.
        assert await asyncio.to_thread(server.proc.wait, 120) == 0, server.output()
    finally:
        assert server.terminate() == 0, server.output()


async def test_sentence_silence_per_request(http: aiohttp.ClientSession) -> None:
    body = {"text": "One sentence. And another one.", "format": "pcm", "noise_scale": 0,
            "noise_w_scale": 0, "use_cache": False}
    status, _, plain = await post(http, "/synthesize", body)
    assert status == 200
    status, _, padded = await post(http, "/synthesize", {**body, "sentence_silence": 0.25})
    assert status == 200
    gap = round(0.25 * 22050) * 2
    assert len(padded) - len(plain) == 2 * gap  # silence after each of the two sentences
    assert padded[-gap:] == bytes(gap)
    status, error, _ = await error_of(http, "/synthesize", {**body, "sentence_silence": 11})
    assert status == 422
    assert error["message"].startswith("sentence_silence")
