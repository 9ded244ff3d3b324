"""OpenAI-compatible clients against a real ``chorus serve`` with an API key.

Open WebUI's request sequence (its audio router, ``TTS_ENGINE=openai`` with a custom
base URL): ``GET {base}/audio/models`` and ``GET {base}/audio/voices`` with no
``Authorization`` header (python-requests defaults), reading ``models[].id`` and
``voices[].id/name``, then ``POST {base}/audio/speech`` with ``Authorization: Bearer``
and ``{"input", "voice", "model"}``. The official ``openai`` SDK covers
``audio.speech.create``, ``with_streaming_response`` and ``stream_format="sse"``, and
raises its own error classes from our error bodies.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import io
import json
import time
from collections.abc import Iterator
from typing import Any, Literal

import aiohttp
import av
import pytest
import requests

from tests.conftest import JOE, PARAGRAPH_SENTENCES, ServerProcess

# The SDK is loaded by name: import-linter's graph builder (grimp 3.20) panics ("cannot
# mark a module with children as squashed") on any import statement naming openai beside
# the chorus.operator namespace root, even under TYPE_CHECKING.
openai: Any = importlib.import_module("openai")

KEY = "open-sesame"
TRUSTED_PROXY = "127.0.0.2"
"""The one trusted proxy; tests connect from it, or from 127.0.0.1 (untrusted)."""
SENTENCE = "The quick brown fox jumps over the lazy dog."
PARAGRAPH = " ".join(PARAGRAPH_SENTENCES[:8])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("openai") / "server.log"
    proc = ServerProcess(
        ["--public-routes", "voices,models", "--trusted-proxies", TRUSTED_PROXY + "/32",
         "--max-requests-per-client", "1", "--workers", "2", "--no-cache",
         "--openai-voice", "nova=" + JOE],
        log, env={"CHORUS_API_KEY": KEY})
    yield proc
    assert proc.terminate() == 0, proc.output()


@pytest.fixture
def client(server: ServerProcess) -> Any:
    """``openai.OpenAI`` for this server, without retries (a 429 must show)."""
    return openai.OpenAI(base_url=server.http_url + "/v1", api_key=KEY, max_retries=0,
                         timeout=60)


def decode(data: bytes) -> tuple[int, float]:
    """(sample rate, seconds) of an encoded body, decoded by libav."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, samples / stream.rate


# -- Open WebUI ----------------------------------------------------------------------


def test_open_webui_request_sequence(server: ServerProcess) -> None:
    base = server.http_url + "/v1"
    response = requests.get(f"{base}/audio/models", timeout=10)  # no Authorization
    response.raise_for_status()
    models = response.json().get("models", [])
    assert "tts-1" in [m["id"] for m in models]
    response = requests.get(f"{base}/audio/voices", timeout=10)
    response.raise_for_status()
    voices = {voice["id"]: voice["name"] for voice in response.json().get("voices", [])}
    assert JOE in voices and {"marin", "cedar", "alloy"} <= set(voices)
    payload = {"input": SENTENCE, "voice": "marin", "model": models[0]["id"]}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    response = requests.post(f"{base}/audio/speech", json=payload, headers=headers,
                             timeout=60)
    response.raise_for_status()
    assert response.headers["Content-Type"] == "audio/mpeg"
    assert response.headers["X-Voice"] == JOE  # marin unmapped: the default voice
    assert decode(response.content)[1] > 1.0
    # a public listing does not make synthesis public
    response = requests.post(f"{base}/audio/speech", json=payload, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "unauthorized", "type": "authentication_error", "param": None,
        "message": "missing or wrong API key; send 'Authorization: Bearer <key>'"}


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/voices", 200), ("GET", f"/voices/{JOE}", 200), ("HEAD", "/v1/audio/voices", 200),
    ("GET", "/v1/models", 200), ("GET", "/v1/audio/models", 200),
    ("GET", "/voices/nobody", 404),
    ("GET", "/metrics", 401), ("GET", "/cache/stats", 401), ("DELETE", "/cache", 401),
    ("POST", "/synthesize", 401), ("POST", "/synthesize/stream", 401),
    ("POST", "/v1/audio/speech", 401), ("POST", "/v1/audio/voices", 401),
])
def test_only_the_named_listings_are_public(server: ServerProcess, method: str, path: str,
                                            status: int) -> None:
    response = requests.request(method, server.http_url + path, json={"text": "Hi."},
                                timeout=10)
    assert response.status_code == status, response.text


def test_openapi_marks_the_public_listings(server: ServerProcess) -> None:
    paths = requests.get(server.http_url + "/openapi.json", timeout=10).json()["paths"]
    assert paths["/v1/audio/voices"]["get"]["security"] == []
    assert "security" not in paths["/v1/audio/speech"]["post"]  # the document's default


# -- the openai SDK ------------------------------------------------------------------


@pytest.mark.parametrize("voice", ["marin", "cedar", "nova", JOE])
def test_sdk_speech_create(client: Any, voice: str) -> None:
    response = client.audio.speech.create(model="tts-1", voice=voice, input=SENTENCE,
                                          response_format="wav")
    assert response.response.headers["X-Voice"] == JOE
    rate, seconds = decode(response.content)
    assert rate == 22050 and 1.5 < seconds < 6


def test_sdk_streaming_response_with_a_sample_rate(client: Any) -> None:
    chunks: list[bytes] = []
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=PARAGRAPH, response_format="pcm",
            extra_body={"sample_rate": 16000}) as response:
        assert response.headers["Content-Type"] == "audio/pcm;rate=16000"
        assert response.headers["X-Sample-Rate"] == "16000"
        chunks.extend(response.iter_bytes())
    assert len(chunks) > 1  # streamed, not one body at the end
    body = b"".join(chunks)
    assert len(body) % 2 == 0 and 10 < len(body) / 2 / 16000 < 60
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=SENTENCE, response_format="pcm") as response:
        assert response.headers["Content-Type"] == "audio/pcm;rate=24000"  # OpenAI's rate
        body = response.read()
    assert 1.5 < len(body) / 2 / 24000 < 6


def sse_events(response: Any) -> list[dict[str, Any]]:
    """The ``data:`` events of an SSE body, decoded; any other line fails the test."""
    events = []
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), line
        events.append(json.loads(line.removeprefix("data: ")))
    return events


@pytest.mark.parametrize(("fmt", "rate"), [("mp3", 22050), ("opus", 48000), ("wav", 22050)])
def test_sdk_sse_stream(client: Any, fmt: Literal["mp3", "opus", "wav"],
                       rate: int) -> None:
    with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="cedar", input=PARAGRAPH, response_format=fmt,
            stream_format="sse") as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        events = sse_events(response)
    *deltas, done = events
    assert len(deltas) > 1 and {e["type"] for e in deltas} == {"speech.audio.delta"}
    assert done == {"type": "speech.audio.done",
                    "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}
    audio = b"".join(base64.b64decode(e["audio"], validate=True) for e in deltas)
    decoded_rate, seconds = decode(audio)
    assert decoded_rate == rate and seconds > 10


def test_sdk_errors_are_the_sdks_classes_with_our_message(client: Any,
                                                          server: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.audio.speech.create(model="tts-1", voice="en_US-joe-mediun", input="Hi.")
    assert missing.value.code == "unknown-voice" and missing.value.param == "voice"
    assert missing.value.type == "not_found_error"
    assert JOE in str(missing.value)  # the message names the close voice
    with pytest.raises(openai.UnprocessableEntityError) as slow:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", speed=9)
    assert slow.value.param == "speed" and "speed: must be a number" in str(slow.value)
    with pytest.raises(openai.BadRequestError) as whole:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.",
                                   response_format="flac", stream_format="sse")
    assert whole.value.param == "stream_format"
    assert "aac, mp3, opus, pcm, wav" in str(whole.value)
    with pytest.raises(openai.UnprocessableEntityError) as empty:
        client.audio.speech.create(model="tts-1", voice="alloy", input="   ")
    assert (empty.value.code, empty.value.param) == ("empty-text", "input")
    with pytest.raises(openai.APIStatusError) as long:
        client.audio.speech.create(model="tts-1", voice="alloy", input="x " * 10_001)
    assert (long.value.status_code, long.value.param) == (413, "input")
    wrong = openai.OpenAI(base_url=server.http_url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
    assert refused.value.code == "unauthorized"


# -- raw HTTP: bad input -------------------------------------------------------------


@pytest.mark.parametrize(("body", "status", "param", "says"), [
    ({"input": "Hi.", "stream_format": "sse", "response_format": "flac"}, 400,
     "stream_format", "use one of aac, mp3, opus, pcm, wav"),
    ({"input": "Hi.", "stream_format": "events"}, 422, "stream_format", "audio, sse"),
    ({"input": "Hi.", "response_format": "opus", "sample_rate": 22050}, 422, "sample_rate",
     "8000, 12000, 16000, 24000, 48000"),
    ({"input": "Hi.", "sample_rate": "fast"}, 422, "sample_rate", "integer"),
    ({"input": "Hi.", "sample_rate": 96000}, 422, "sample_rate", "between"),
    ({"input": "Hi.", "voice": ["marin"]}, 422, "voice", "string"),
    ({"voice": "cedar"}, 422, "input", "field required"),
])
def test_openai_bad_input(server: ServerProcess, body: dict[str, Any], status: int,
                          param: str, says: str) -> None:
    response = requests.post(server.http_url + "/v1/audio/speech", json=body,
                             headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"]
    assert set(error) == {"code", "message", "type", "param"}
    assert error["type"] == "invalid_request_error"


def test_our_routes_carry_the_same_error_shape(server: ServerProcess) -> None:
    response = requests.post(server.http_url + "/synthesize", timeout=10,
                             json={"text": "   "}, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 422
    assert response.json()["error"] == {"code": "empty-text", "message": "text is empty",
                                        "type": "invalid_request_error", "param": "text"}


# -- clients behind a trusted proxy --------------------------------------------------


async def _post(session: aiohttp.ClientSession, forwarded: str, text: str) -> int:
    async with session.post("/synthesize", json={"text": text},
                            headers={"X-Forwarded-For": forwarded}) as response:
        await response.read()
        return response.status


async def test_forwarded_for_counts_real_clients_only_from_trusted_proxies(
        server: ServerProcess) -> None:
    """--max-requests-per-client 1: a held stream blocks its own client and no other."""
    auth = {"Authorization": f"Bearer {KEY}"}
    proxy = aiohttp.TCPConnector(local_addr=(TRUSTED_PROXY, 0))
    async with (aiohttp.ClientSession(server.http_url, headers=auth, connector=proxy)
                as via_proxy,
                aiohttp.ClientSession(server.http_url, headers=auth) as direct):
        for session in (via_proxy, direct):  # as held from behind the proxy, then not
            held = await session.post("/synthesize/stream", json={"text": PARAGRAPH},
                                      headers={"X-Forwarded-For": "198.51.100.1"})
            try:
                assert held.status == 200
                await held.content.readany()
                other, same = await asyncio.gather(
                    _post(session, "198.51.100.2", "Another household."),
                    _post(session, "203.0.113.5, 198.51.100.1", "The same client."))
            finally:
                held.close()
            if session is via_proxy:
                assert (other, same) == (200, 429)
            else:  # untrusted: the header is ignored, both are 127.0.0.1 like the stream
                assert (other, same) == (429, 429)
        deadline = time.monotonic() + 10
        while await _post(direct, "198.51.100.1", "Free again.") != 200:  # hung up: freed
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
