"""``chorus serve --download-voices``: catalog voices offered, installed on first request.

A real ``chorus serve`` process against the loopback hub (``HF_ENDPOINT``), which serves
the real joe files at their place in rhasspy/piper-voices, so the bundled catalog's
entry for ``en_US-joe-medium`` (size and md5) describes them exactly. The server speaks
with a copy of joe under another name and does not embed joe, so joe is a catalog voice
that is not installed. Real Wyoming clients and real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from wyoming.event import Event
from wyoming.info import TtsVoice
from wyoming.tts import Synthesize, SynthesizeVoice

from tests.conftest import JOE, ServerProcess, copy_joe, describe, pcm_of, read_until
from tests.integration.voice_servers import JOE_FOLDER, VoiceServer

COPY = "en_US-copy-medium"


def _start(tmp_path: Path, hub: VoiceServer, *args: str) -> ServerProcess:
    return ServerProcess(
        ["--no-embedded-voice", "--download-voices", "--rescan-interval", "30", *args],
        tmp_path / "server.log",
        # HF_HOME and XDG_CACHE_HOME: no token or refreshed catalog of the user's
        env={"HF_ENDPOINT": hub.base, "HF_HOME": str(tmp_path / "hf"),
             "XDG_CACHE_HOME": str(tmp_path / "cache")})


@pytest.fixture
def voices(tmp_path: Path) -> Path:
    directory = tmp_path / "voices"
    copy_joe(directory, COPY)
    return directory


@pytest.fixture
def running(tmp_path: Path, voice_server: VoiceServer, voices: Path,
            ) -> Iterator[ServerProcess]:
    # no noise: each text renders the same samples every time, so tests compare audio
    proc = _start(tmp_path, voice_server, "--voices-dir", str(voices),
                  "--default-voice", COPY, "--noise-scale", "0", "--noise-w-scale", "0")
    yield proc
    assert proc.terminate() == 0, proc.output()


async def _voice(server: ServerProcess, name: str) -> TtsVoice | None:
    """``name`` as a fresh connection's describe lists it (what Home Assistant reads)."""
    async with server.client() as client:
        info = await describe(client)
    return next((v for v in info.tts[0].voices if v.name == name), None)


async def _names(server: ServerProcess) -> list[str]:
    async with server.client() as client:
        info = await describe(client)
    return [voice.name for voice in info.tts[0].voices]


async def _speak(server: ServerProcess, name: str) -> list[Event]:
    async with server.client() as client:
        await client.write_event(Synthesize("Downloaded on demand.", voice=SynthesizeVoice(
            name=name)).event())
        return list(await read_until(client, "audio-stop", limit=120))


async def _listed(server: ServerProcess, name: str) -> dict[str, object]:
    async with aiohttp.ClientSession(server.http_url) as http:
        async with http.get("/voices") as response:
            assert response.status == 200
            voices = (await response.json())["voices"]
        async with http.get(f"/voices/{name}") as response:
            assert response.status == 200
            one = await response.json()
        async with http.get("/v1/audio/voices") as response:
            assert response.status == 200
            openai = (await response.json())["voices"]
    [entry] = [v for v in voices if v["name"] == name]
    assert entry == one
    assert {"id": name, "name": name} in openai  # Open WebUI's list offers it too
    return dict(entry)


def _leftovers(directory: Path) -> list[str]:
    """Everything in the voices directory but the voices and the manager's bookkeeping."""
    return sorted(p.name for p in directory.iterdir()
                  if p.name not in {".chorus-status.json", ".chorus-lock"}
                  and not p.name.startswith(COPY))


async def test_a_catalog_voice_is_offered_then_installed_by_its_first_request(
        running: ServerProcess, voice_server: VoiceServer, voices: Path) -> None:
    offered = await _voice(running, JOE)
    # installed=True as wyoming-piper lists its downloadable voices: Home Assistant
    # skips a voice whose installed is false. The description tells them apart.
    assert offered is not None and offered.installed
    assert offered.description == ("English (United States): joe, medium "
                                   "(downloaded on first use, 63.2 MB)")
    assert offered.languages == ["en_US"]
    assert len(await _names(running)) > 100  # the whole catalog is offered
    entry = await _listed(running, JOE)
    assert (entry["installed"], entry["sample_rate"], entry["resident"]) == (False, None, False)
    assert (await _listed(running, COPY))["installed"] is True
    assert _leftovers(voices) == []

    # two clients ask at once: one download, both hear the voice
    first, second = await asyncio.gather(_speak(running, JOE), _speak(running, JOE))
    assert pcm_of(first) and pcm_of(second)
    model_requests = [request for request in voice_server.requests
                      if request[1].endswith(f"/{JOE_FOLDER}/{JOE}.onnx")]
    assert [method for method, _ in model_requests] == ["HEAD", "GET"]

    installed = await _voice(running, JOE)
    assert installed is not None and installed.installed
    assert installed.description == "English (United States): joe, medium"
    entry = await _listed(running, JOE)
    assert (entry["installed"], entry["sample_rate"], entry["resident"]) == (True, 22050, True)
    assert _leftovers(voices) == [f"{JOE}.onnx", f"{JOE}.onnx.json"]
    assert (voices / f"{JOE}.onnx").read_bytes() == voice_server.files[
        f"{JOE_FOLDER}/{JOE}.onnx"].data
    log = running.output()
    assert f"Installing voice {JOE} on its first request (63.2 MB to download)" in log
    assert f"downloading {JOE}.onnx (63.2 MB)" in log  # the voice manager's progress lines
    assert f"Voice {JOE} installed in" in log

    # a name neither installed nor in the catalog is still a clear error
    [error] = await _speak(running, "en_US-nobody-medium")
    assert error.type == "error" and error.data["code"] == "unknown-voice"
    assert "'en_US-nobody-medium' is not installed" in error.data["text"]


async def test_a_download_that_fails_verification_is_an_error_and_leaves_nothing(
        running: ServerProcess, voice_server: VoiceServer, voices: Path) -> None:
    voice_server.fault(f"{JOE_FOLDER}/{JOE}.onnx", "wrong")  # bytes that are not joe's
    async with running.client() as client:
        await client.write_event(Synthesize("Never spoken.", voice=SynthesizeVoice(
            name=JOE)).event())
        [error] = await read_until(client, "audio-stop", limit=120)
        assert error.type == "error" and error.data["code"] == "voice-download-failed"
        assert f"voice '{JOE}' could not be downloaded" in error.data["text"]
        assert "sha256 mismatch" in error.data["text"]
        assert await asyncio.wait_for(client.read_event(), 10) is None  # closed, as after
        # any failed plain synthesize (Home Assistant up to 2025.6 waits for the end)
    assert _leftovers(voices) == []
    offered = await _voice(running, JOE)
    assert offered is not None and "downloaded on first use" in str(offered.description)
    async with aiohttp.ClientSession(running.http_url) as http, http.post(
            "/synthesize", json={"text": "Hi.", "voice": JOE}) as response:
        assert response.status == 503
        body = await response.json()
    assert body["error"]["code"] == "voice-download-failed"
    assert _leftovers(voices) == []

    voice_server.fault(f"{JOE_FOLDER}/{JOE}.onnx", None)  # the hub is right again
    assert pcm_of(await _speak(running, JOE))
    assert _leftovers(voices) == [f"{JOE}.onnx", f"{JOE}.onnx.json"]


async def test_an_ssml_voice_switch_installs_an_offered_voice(
        running: ServerProcess, voices: Path) -> None:
    """SSML may switch to a catalog voice: it is installed when the speech reaches it."""
    document = (f'<speak><s>Before the switch.</s><voice name="{JOE}"><s>Spoken by the '
                "downloaded voice.</s></voice></speak>")
    async with running.client() as client:
        await client.write_event(Synthesize(document, text_format="ssml").event())
        events = await read_until(client, "audio-stop", limit=120)
    assert events[-1].type == "audio-stop", events[-1]
    assert _leftovers(voices) == [f"{JOE}.onnx", f"{JOE}.onnx.json"]
    switched = pcm_of(events)
    async with running.client() as client:
        await client.write_event(Synthesize("Spoken by the downloaded voice.",
                                            voice=SynthesizeVoice(name=JOE)).event())
        direct = pcm_of(await read_until(client, "audio-stop", limit=120))
    # the copy's sentence, then joe's: without noise, joe's part is sample for sample the
    # direct rendering, and the copy's sentence comes before it
    assert switched.endswith(direct)
    assert len(switched) - len(direct) > len(direct) * 0.3

    # an unknown name in SSML is refused before any audio, as before
    async with running.client() as client:
        await client.write_event(Synthesize(
            '<speak>Hi. <voice name="en_US-nobody-medium">No.</voice></speak>',
            text_format="ssml").event())
        [error] = await read_until(client, "audio-stop", limit=30)
    assert error.type == "error" and error.data["code"] == "unknown-voice"


def test_a_default_voice_in_the_catalog_is_installed_before_the_server_is_ready(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    voices = tmp_path / "empty"
    proc = _start(tmp_path, voice_server, "--voices-dir", str(voices),
                  "--default-voice", JOE)
    try:
        assert (voices / f"{JOE}.onnx").is_file()
        assert "Chorus ready: 1 voice(s) (+" in proc.output()
        assert f"default {JOE}" in proc.output()
    finally:
        assert proc.terminate() == 0, proc.output()


def test_download_voices_needs_a_voices_dir(tmp_path: Path, voice_server: VoiceServer) -> None:
    with pytest.raises(RuntimeError, match="--download-voices needs a --voices-dir"):
        _start(tmp_path, voice_server)

