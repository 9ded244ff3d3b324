"""Kokoro beside Piper in one real server, over Wyoming, with Kokoro's real model and
voices (:mod:`tests.kokoro_files`): ``describe`` lists both engines' voices with their
languages, a Kokoro voice answers at 24 kHz, and whisper hears what two English Kokoro
voices say (word error rate at most 10 %; the same audio reversed must fail). A French
voice is checked for plausible, non-silent audio (whisper here knows English only). Over
HTTP, ``/voices`` and ``/v1/audio/voices`` list the Kokoro voices beside Piper's and
``/v1/audio/speech`` speaks one at 24 kHz, by its name or an OpenAI name mapped to it.

Skipped only when the ``kokoro`` extra is not installed.
"""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jiwer
import numpy as np
import numpy.typing as npt
import pytest
from faster_whisper import WhisperModel
from wyoming.audio import AudioStart
from wyoming.tts import Synthesize, SynthesizeVoice

from tests.conftest import JOE, ServerProcess, describe, pcm_of, read_until
from tests.integration.listening import load_whisper, normalise, transcribe
from tests.kokoro_files import (
    KOKORO_MISSING,
    install_kokoro_voice,
    join_model,
    kokoro_installed,
)

pytestmark = pytest.mark.skipif(not kokoro_installed(), reason=KOKORO_MISSING)

ENGLISH = {"af_heart": "en_US", "bm_george": "en_GB"}
"""Voices whose language comes from Kokoro's name prefix (the entries name none)."""
FRENCH = "ff_siwis"
SENTENCES = [
    "The kitchen lights are now turned off.",
    "Your package will arrive on Tuesday morning.",
    "I have set a timer for ten minutes.",
    "Please remember to water the plants in the garden.",
]
WER_LIMIT = 0.10


@pytest.fixture(scope="module")
def kokoro_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Piper's embedded joe voice plus three Kokoro voices sharing one model; the default
    voice is Kokoro's, so the server is ready only once a Kokoro voice has spoken. Its
    HTTP API maps OpenAI's ``nova`` to a Kokoro voice."""
    voices = tmp_path_factory.mktemp("kokoro-voices")
    model = join_model(tmp_path_factory.mktemp("kokoro-model"))
    for name in ENGLISH:
        install_kokoro_voice(voices, name, model)
    install_kokoro_voice(voices, FRENCH, model, language="fr_FR")
    log = tmp_path_factory.mktemp("logs") / "kokoro-server.log"
    proc = ServerProcess(["--voices-dir", str(voices), "--default-voice", "af_heart",
                          "--openai-voice", "nova=bm_george"], log)
    yield proc
    assert proc.terminate() == 0, proc.output()


async def _speak(server: ServerProcess, text: str, voice: str,
                 ) -> tuple[AudioStart, npt.NDArray[np.int16]]:
    async with server.client() as client:
        await client.write_event(Synthesize(text, voice=SynthesizeVoice(name=voice)).event())
        events = await read_until(client, "audio-stop", limit=120)
    assert events[0].type == "audio-start", [e.type for e in events]
    return AudioStart.from_event(events[0]), np.frombuffer(pcm_of(events), dtype=np.int16)


async def test_describe_lists_both_engines_voices_with_their_languages(
        kokoro_server: ServerProcess) -> None:
    async with kokoro_server.client() as client:
        info = await describe(client)
    [program] = info.tts
    languages = {v.name: v.languages for v in program.voices}
    assert languages == {JOE: ["en_US"], "af_heart": ["en_US"], "bm_george": ["en_GB"],
                         FRENCH: ["fr_FR"]}
    assert "Kokoro" in (next(v for v in program.voices if v.name == FRENCH).description
                        or "")


async def test_kokoro_voice_speaks_at_24_khz_and_piper_still_at_22(
        kokoro_server: ServerProcess) -> None:
    start, pcm = await _speak(kokoro_server, SENTENCES[0], "af_heart")
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    assert 1.0 < len(pcm) / 24000 < 5.0
    start, _ = await _speak(kokoro_server, SENTENCES[0], JOE)
    assert start.rate == 22050


async def test_http_lists_kokoro_voices_and_speaks_them_at_24_khz(
        kokoro_server: ServerProcess) -> None:
    async with aiohttp.ClientSession(kokoro_server.http_url) as http:
        async with http.get("/voices") as response:
            listed = {v["name"]: v for v in (await response.json())["voices"]}
        assert set(listed) == {JOE, *ENGLISH, FRENCH}
        assert {n: (v["engine"], v["language"], v["sample_rate"]) for n, v in listed.items()
                } == {JOE: ("piper", "en_US", 22050), "af_heart": ("kokoro", "en_US", 24000),
                      "bm_george": ("kokoro", "en_GB", 24000),
                      FRENCH: ("kokoro", "fr_FR", 24000)}
        assert listed["af_heart"]["default"]
        async with http.get("/v1/audio/voices") as response:
            openai = {v["id"]: v for v in (await response.json())["voices"]}
        assert {JOE, *ENGLISH, FRENCH} <= set(openai)
        assert openai["nova"]["voice"] == "bm_george"
        assert openai["alloy"]["voice"] == "af_heart"  # unmapped names: the default voice

        for voice, expected in (("bm_george", "bm_george"), ("nova", "bm_george"),
                                (JOE, JOE)):
            async with http.post("/v1/audio/speech", json={
                    "model": "tts-1", "input": SENTENCES[1], "voice": voice,
                    "response_format": "wav"}) as response:
                body = await response.read()
                assert response.status == 200, body[:200]
                assert response.headers["X-Voice"] == expected
            rate, seconds = _wav(body)
            assert rate == (22050 if expected == JOE else 24000)
            assert 1.0 < seconds < 6.0, seconds

        async with http.post("/v1/audio/speech", json={
                "model": "tts-1", "input": "Hello.", "voice": "bm_georg"}) as response:
            assert response.status == 404
            error = (await response.json())["error"]
        assert error["code"] == "unknown-voice"
        assert "bm_george" in error["message"]  # the close name is offered


def _wav(body: bytes) -> tuple[int, float]:
    """(sample rate, seconds) of a 16-bit mono WAV body; streamed, its header gives no
    length, so the length is the bytes after the 44-byte header."""
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    with wave.open(io.BytesIO(body)) as wav:
        assert (wav.getsampwidth(), wav.getnchannels()) == (2, 1)
        rate = wav.getframerate()
    return rate, (len(body) - 44) / (2 * rate)


async def test_french_kokoro_voice_makes_plausible_sound(
        kokoro_server: ServerProcess) -> None:
    text = "Bonjour, il fait beau aujourd'hui et nous allons au marché."
    start, pcm = await _speak(kokoro_server, text, FRENCH)
    seconds = len(pcm) / start.rate
    assert 2.0 < seconds < 8.0, seconds
    loud = np.abs(pcm.astype(np.float32)) > 1000
    assert loud.mean() > 0.1, loud.mean()


@pytest.fixture(scope="module")
def whisper() -> WhisperModel:
    return load_whisper()


@pytest.fixture(scope="module")
def english(kokoro_server: ServerProcess) -> dict[str, list[npt.NDArray[np.int16]]]:
    async def speak_all() -> dict[str, list[npt.NDArray[np.int16]]]:
        return {voice: [(await _speak(kokoro_server, s, voice))[1] for s in SENTENCES]
                for voice in ENGLISH}
    return asyncio.run(speak_all())


@pytest.mark.slow
@pytest.mark.parametrize("voice", sorted(ENGLISH))
def test_whisper_understands_kokoro(voice: str, whisper: WhisperModel,
                                    english: dict[str, list[npt.NDArray[np.int16]]],
                                    ) -> None:
    heard = [normalise(transcribe(whisper, pcm, 24000)) for pcm in english[voice]]
    expected = [normalise(s) for s in SENTENCES]
    wer = jiwer.wer(expected, heard)
    assert wer <= WER_LIMIT, list(zip(expected, heard, strict=True))
    # The negative control: the same audio reversed must not pass.
    backwards = [normalise(transcribe(whisper, pcm[::-1].copy(), 24000))
                 for pcm in english[voice]]
    assert jiwer.wer(expected, backwards) > 0.5, backwards


def test_model_is_the_published_file(tmp_path: Path) -> None:
    """The four PyPI parts join into kokoro-onnx's published int8 model (checked inside
    join_model against its sha256), and the join is atomic: no temp file is left."""
    model = join_model(tmp_path)
    assert model.stat().st_size == 92_361_271
    assert [p.name for p in tmp_path.iterdir()] == [model.name]

