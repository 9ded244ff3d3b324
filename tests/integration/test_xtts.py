"""XTTS v2 voices beside Piper in one real server, over Wyoming and HTTP.

The checkpoint is a tiny randomly initialised XTTS v2 (:mod:`tests.xtts_files`): it speaks
noise, not words, but loading, cloning (speaker conditioning from the clips), its cache
and coqui-tts's streaming inference all run for real. Checked here: ``describe`` and
``/voices`` list cloned voices with their languages; Wyoming and HTTP answer in the
format they announce (24 kHz, 16-bit, mono) with audio that is not silence; a request's
``language`` picks one of a voice's languages (one it does not speak: 404); a unit's
audio leaves in several chunks, the first before the unit is done; the conditioning is
computed once and read back after a restart; a missing clip, a missing checkpoint and a
broken one make those voices ``voice-unavailable`` with the file named, while Piper
goes on speaking. With ``CHORUS_XTTS_CHECKPOINT`` naming the published checkpoint's
directory, a last test clones a voice on it and whisper hears it.

Marked ``xtts``: run by ``scripts/dev test``'s xtts stage (``pytest -m xtts`` in
``.venv-xtts``); skipped without the ``xtts`` extra.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from wyoming.audio import AudioStart
from wyoming.event import Event
from wyoming.tts import Synthesize, SynthesizeVoice

from chorus.common.xtts import DEFAULT_CHECKPOINT, clip_name, latents_path
from tests.conftest import JOE, ServerProcess, describe, pcm_of, read_until
from tests.xtts_files import (
    XTTS_MISSING,
    build_tiny_checkpoint,
    link_checkpoint,
    write_cloned_voice,
    xtts_installed,
)

pytestmark = [pytest.mark.xtts, pytest.mark.skipif(not xtts_installed(), reason=XTTS_MISSING)]

DEADLINE = 180.0
SENTENCE = "The kitchen lights are now turned off."
LONG_SENTENCE = ("Chorus reads long answers one sentence at a time, and this sentence is "
                 "long enough to be streamed in several pieces before it is finished.")
GOOD = {"clone_en": ("en", ()), "clone_multi": ("en", ("en", "de"))}
REFUSED = {"no_clip": "no_clip.clip1.wav", "no_checkpoint": "missing-checkpoint",
           "broken_checkpoint": "broken-checkpoint"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("xtts-checkpoint"))


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Path:
    """Two good cloned voices and three that cannot be used, beside the default Piper
    voice (embedded)."""
    root = tmp_path_factory.mktemp("xtts-voices")
    link_checkpoint(checkpoint, root)
    for name, (language, languages) in GOOD.items():
        write_cloned_voice(root, name, language=language, languages=languages)
    write_cloned_voice(root, "no_clip")
    (root / REFUSED["no_clip"]).unlink()
    write_cloned_voice(root, "no_checkpoint", checkpoint=REFUSED["no_checkpoint"])
    broken = root / REFUSED["broken_checkpoint"]
    broken.mkdir()
    for path in checkpoint.iterdir():
        shutil.copyfile(path, broken / path.name)
    (broken / "model.pth").write_bytes(b"not a torch checkpoint")
    write_cloned_voice(root, "broken_checkpoint", checkpoint=REFUSED["broken_checkpoint"])
    return root


def _serve(voices: Path, log: Path) -> ServerProcess:
    return ServerProcess(["--voices-dir", str(voices), "--default-voice", JOE], log,
                         ready_timeout=DEADLINE)


@pytest.fixture(scope="module")
def xtts_server(voices: Path, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[ServerProcess]:
    proc = _serve(voices, tmp_path_factory.mktemp("logs") / "xtts-server.log")
    yield proc
    assert proc.terminate() == 0, proc.output()


async def _wyoming(server: ServerProcess, text: str, voice: str,
                   language: str | None = None) -> list[Event]:
    async with server.client() as client:
        await client.write_event(Synthesize(text, voice=SynthesizeVoice(
            name=voice, language=language)).event())
        return await read_until(client, "audio-stop", limit=DEADLINE)


def _speech(events: list[Event]) -> tuple[AudioStart, npt.NDArray[np.int16]]:
    assert events[0].type == "audio-start", [e.type for e in events]
    assert events[-1].type == "audio-stop", [e.type for e in events]
    return AudioStart.from_event(events[0]), np.frombuffer(pcm_of(events), dtype=np.int16)


def _assert_heard(pcm: npt.NDArray[np.int16], seconds: float = 1.0) -> None:
    """Audio of at least ``seconds`` at 24 kHz that is not silence."""
    assert len(pcm) > seconds * 24000, len(pcm)
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    assert rms > 30.0, rms


async def _post(server: ServerProcess, path: str, body: dict[str, Any],
                ) -> tuple[int, bytes, dict[str, str]]:
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with aiohttp.ClientSession(server.http_url, timeout=timeout) as http, \
            http.post(path, json=body) as response:
        return response.status, await response.read(), dict(response.headers)


async def test_describe_and_voices_list_cloned_voices_with_their_languages(
        xtts_server: ServerProcess) -> None:
    async with xtts_server.client() as client:
        info = await describe(client)
    [program] = info.tts
    languages = {v.name: v.languages for v in program.voices}
    assert languages == {JOE: ["en_US"], "clone_en": ["en"], "clone_multi": ["en", "de"]}
    async with aiohttp.ClientSession(xtts_server.http_url) as http, \
            http.get("/voices") as response:
        listed = {v["name"]: v for v in (await response.json())["voices"]}
    assert {n: (v["engine"], v["language"], v["languages"], v["sample_rate"])
            for n, v in listed.items()} == {
        JOE: ("piper", "en_US", ["en_US"], 22050),
        "clone_en": ("xtts", "en", ["en"], 24000),
        "clone_multi": ("xtts", "en", ["en", "de"], 24000)}


async def test_wyoming_speaks_a_cloned_voice_in_the_announced_format(
        xtts_server: ServerProcess) -> None:
    start, pcm = _speech(await _wyoming(xtts_server, SENTENCE, "clone_en"))
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    _assert_heard(pcm)
    start, _ = _speech(await _wyoming(xtts_server, SENTENCE, JOE))
    assert start.rate == 22050


async def test_http_speaks_a_cloned_voice_in_a_language_it_offers(
        xtts_server: ServerProcess) -> None:
    for language in ("de", "de_DE", None):
        body = {"text": "Guten Morgen.", "voice": "clone_multi", "format": "wav",
                "use_cache": False}
        if language:
            body["language"] = language
        status, data, headers = await _post(xtts_server, "/synthesize", body)
        assert status == 200, data[:300]
        with wave.open(io.BytesIO(data)) as wav:
            assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (
                24000, 2, 1)
            _assert_heard(np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16))
        assert headers["X-Sample-Rate"] == "24000"
    status, data, _ = await _post(xtts_server, "/synthesize", {
        "text": "Bonjour.", "voice": "clone_multi", "language": "fr"})
    assert status == 404, data[:300]
    assert b"does not speak 'fr'" in data and b"en, de" in data
    # A voice of one language ignores the request's, as Piper voices always have.
    status, data, _ = await _post(xtts_server, "/synthesize", {
        "text": "Hello.", "voice": "clone_en", "language": "fr", "format": "wav"})
    assert status == 200, data[:300]


async def test_a_long_sentence_streams_its_first_audio_before_it_is_done(
        xtts_server: ServerProcess) -> None:
    """Wyoming ``synthesize``: the first audio chunk comes well before the sentence's
    last; the audio arrives in many events, not in one piece at the end."""
    _speech(await _wyoming(xtts_server, SENTENCE, "clone_en"))  # loaded and warm
    async with xtts_server.client() as client:
        began = time.monotonic()
        await client.write_event(Synthesize(LONG_SENTENCE, voice=SynthesizeVoice(
            name="clone_en")).event())
        first = last = None
        chunks = 0
        while True:
            event = await asyncio.wait_for(client.read_event(), DEADLINE)
            assert event is not None and event.type != "error", event
            if event.type == "audio-chunk":
                chunks += 1
                first = first or time.monotonic() - began
                last = time.monotonic() - began
            if event.type == "audio-stop":
                break
    assert first is not None and last is not None and chunks > 1
    assert first < 0.7 * last, (first, last)


async def test_cloned_voices_without_files_are_unavailable_and_piper_goes_on(
        xtts_server: ServerProcess) -> None:
    for voice, cause in REFUSED.items():
        [error] = await _wyoming(xtts_server, SENTENCE, voice)
        assert error.type == "error", error
        assert error.data["code"] == "voice-unavailable", error.data
        assert voice in error.data["text"] and cause in error.data["text"], error.data
        status, data, _ = await _post(xtts_server, "/synthesize", {
            "text": SENTENCE, "voice": voice})
        assert status == 503 and b"voice-unavailable" in data and cause.encode() in data
    _, pcm = _speech(await _wyoming(xtts_server, "Piper is still here.", JOE))
    assert len(pcm) > 22050 * 0.3


async def test_conditioning_is_computed_once_and_read_back_after_a_restart(
        voices: Path, xtts_server: ServerProcess,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    _speech(await _wyoming(xtts_server, SENTENCE, "clone_multi"))
    cache = latents_path(voices, "clone_multi")
    assert cache.is_file()
    computed = [line for line in xtts_server.output().splitlines()
                if "clone_multi: speaker conditioning computed" in line]
    assert len(computed) == 1, computed
    written = cache.stat().st_mtime_ns

    second = _serve(voices, tmp_path_factory.mktemp("logs") / "restarted.log")
    try:
        start, pcm = _speech(await _wyoming(second, SENTENCE, "clone_multi"))
        assert start.rate == 24000
        _assert_heard(pcm)
        log = second.output()
        assert "clone_multi: speaker conditioning read from" in log, log
        assert "clone_multi: speaker conditioning computed" not in log, log
        assert cache.stat().st_mtime_ns == written
    finally:
        assert second.terminate() == 0, second.output()


@pytest.mark.skipif(not os.environ.get("CHORUS_XTTS_CHECKPOINT"),
                    reason="CHORUS_XTTS_CHECKPOINT does not name a directory with the real "
                           "XTTS v2 checkpoint (config.json, model.pth, vocab.json)")
async def test_the_real_checkpoint_clones_a_voice_that_whisper_hears(
        tmp_path: Path) -> None:
    """Clone joe's voice (a Piper recording of one sentence) on the published checkpoint
    and have whisper transcribe a sentence in it: word error rate at most 25 %."""
    from tests.integration.listening import load_whisper, normalise, transcribe

    real = Path(os.environ["CHORUS_XTTS_CHECKPOINT"])
    root = tmp_path / "voices"
    root.mkdir()
    link_checkpoint(real, root, DEFAULT_CHECKPOINT)
    piper = _serve(root, tmp_path / "piper.log")
    try:
        _, joe = _speech(await _wyoming(piper, " ".join([SENTENCE, LONG_SENTENCE]), JOE))
    finally:
        piper.terminate()
    with wave.open(str(root / clip_name("joe_clone", 1)), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(22050)
        out.writeframes(joe.tobytes())
    write_cloned_voice(root, "joe_clone")  # keeps the clip written here
    server = _serve(root, tmp_path / "real.log")
    try:
        _, pcm = _speech(await _wyoming(server, SENTENCE, "joe_clone"))
    finally:
        assert server.terminate() == 0, server.output()
    import jiwer

    heard = transcribe(load_whisper(), pcm, 24000)
    assert jiwer.wer(normalise(SENTENCE), normalise(heard)) <= 0.25, heard
