"""Cloning end to end, with the XTTS engine: a voice cloned over HTTP is listed by
Wyoming ``describe`` and ``/voices`` and speaks as soon as its 201 has arrived; one
cloned with ``chorus voices clone`` into the served directory is picked up by the
rescan; two clones of one name at once leave one voice; a directory without the
checkpoint answers 503; ``DELETE`` makes a voice disappear; a cloned voice survives a
restart.

The checkpoint is the tiny random XTTS v2 of :mod:`tests.xtts_files` (it speaks noise,
through the real code). The clips are made in the test (:mod:`tests.clip_files`) in the
containers a user uploads. Marked ``xtts``: run by ``scripts/dev test``'s xtts stage;
skipped without the ``xtts`` extra.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from wyoming.tts import Synthesize, SynthesizeVoice

from chorus.common.xtts import XttsEntry, entry_path
from tests.clip_files import clip
from tests.conftest import CHORUS, JOE, ServerProcess, describe, pcm_of, read_until
from tests.xtts_files import XTTS_MISSING, build_tiny_checkpoint, link_checkpoint, xtts_installed

pytestmark = [pytest.mark.xtts, pytest.mark.skipif(not xtts_installed(), reason=XTTS_MISSING)]

DEADLINE = 180.0
SENTENCE = "The kitchen lights are now turned off."


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clone-voices")
    link_checkpoint(build_tiny_checkpoint(tmp_path_factory.mktemp("checkpoint")), root)
    return root


def _serve(voices: Path, log: Path) -> ServerProcess:
    return ServerProcess(["--voices-dir", str(voices), "--default-voice", JOE,
                          "--rescan-interval", "0.5"], log, ready_timeout=DEADLINE)


@pytest.fixture(scope="module")
def server(voices: Path, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[ServerProcess]:
    proc = _serve(voices, tmp_path_factory.mktemp("logs") / "server.log")
    yield proc
    assert proc.terminate() == 0, proc.output()


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with aiohttp.ClientSession(server.http_url, timeout=timeout) as session:
        yield session


def clone_form(name: str, language: str = "en", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("clip", clip("mp3", seconds=4.0), filename="take1.mp3",
                   content_type="audio/mpeg")
    form.add_field("clip", clip("ogg", seconds=5.0), filename="take2.ogg",
                   content_type="audio/ogg")
    form.add_field("name", name)
    form.add_field("language", language)
    for key, value in fields.items():
        form.add_field(key, value)
    return form


async def post_clone(http: aiohttp.ClientSession, form: aiohttp.FormData,
                     ) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post("/voices/clone", data=form) as response:
        return response.status, await response.json(), dict(response.headers)


async def described(server: ServerProcess) -> dict[str, list[str]]:
    async with server.client() as client:
        info = await describe(client)
    return {voice.name: voice.languages for voice in info.tts[0].voices}


async def listed(http: aiohttp.ClientSession) -> set[str]:
    async with http.get("/voices") as response:
        return {voice["name"] for voice in (await response.json())["voices"]}


async def speak(server: ServerProcess, voice: str) -> np.ndarray[Any, Any]:
    async with server.client() as client:
        await client.write_event(Synthesize(SENTENCE, voice=SynthesizeVoice(
            name=voice)).event())
        events = await read_until(client, "audio-stop", limit=DEADLINE)
    assert events[-1].type == "audio-stop", events[-1]
    pcm = np.frombuffer(pcm_of(events), dtype=np.int16)
    assert len(pcm) > 24000 * 0.5
    assert float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 30.0
    return pcm


async def test_a_voice_cloned_over_http_is_described_and_speaks_at_once(
        server: ServerProcess, http: aiohttp.ClientSession, voices: Path) -> None:
    status, body, headers = await post_clone(
        http, clone_form("kim", "de", languages="en", description="Kim"))
    assert status == 201, body
    assert headers["Location"] == "/voices/kim"
    assert (body["engine"], body["name"], body["language"], body["languages"],
            body["sample_rate"], body["description"], body["installed"]) == (
        "xtts", "kim", "de", ["de", "en"], 24000, "Kim", True)
    # no waiting for a rescan: the store was asked to read the directory before the 201
    assert (await described(server))["kim"] == ["de", "en"]
    await speak(server, "kim")
    async with http.post("/synthesize", json={"text": SENTENCE, "voice": "kim",
                                              "format": "wav"}) as response:
        assert response.status == 200, await response.text()
        assert response.headers["X-Sample-Rate"] == "24000"
    entry = XttsEntry.read(entry_path(voices, "kim"))
    assert (entry.origin, entry.clips) == ("clone", ("kim.clip1.wav", "kim.clip2.wav"))


async def test_a_name_cloned_twice_at_once_is_one_voice(
        server: ServerProcess, http: aiohttp.ClientSession) -> None:
    results = await asyncio.gather(post_clone(http, clone_form("twin", "en")),
                                   post_clone(http, clone_form("twin", "fr")))
    assert sorted(status for status, _, _ in results) == [201, 409], results
    loser = next(body for status, body, _ in results if status == 409)
    assert loser["error"]["code"] == "voice-exists"
    winner = next(body for status, body, _ in results if status == 201)
    assert (await described(server))["twin"] == [winner["language"]]
    status, body, _ = await post_clone(http, clone_form(JOE))
    assert (status, body["error"]["code"]) == (409, "voice-exists")


async def test_a_voice_cloned_with_the_cli_is_listed_and_deleted_over_http(
        server: ServerProcess, http: aiohttp.ClientSession, voices: Path,
        tmp_path: Path) -> None:
    take = tmp_path / "sam.flac"
    take.write_bytes(clip("flac", seconds=6.0))
    done = await asyncio.to_thread(
        subprocess.run, [*CHORUS, "voices", "clone", "sam", "--clip", str(take),
                         "--language", "en", "--dest", str(voices)],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr  # the checkpoint is there
    deadline = time.monotonic() + 10
    while "sam" not in await listed(http):
        assert time.monotonic() < deadline, "the rescan did not pick up the CLI's voice"
        await asyncio.sleep(0.2)
    assert "sam" in await described(server)
    await speak(server, "sam")
    async with http.delete("/voices/sam") as response:
        assert response.status == 204, await response.text()
    assert "sam" not in await listed(http)  # gone with the 204, not a rescan later
    assert "sam" not in await described(server)
    assert not list(voices.glob("sam.*"))
    async with http.post("/synthesize", json={"text": SENTENCE, "voice": "sam"}) as response:
        assert response.status == 404


async def test_a_directory_without_the_checkpoint_answers_503(tmp_path: Path) -> None:
    empty = tmp_path / "voices"
    empty.mkdir()
    proc = _serve(empty, tmp_path / "server.log")
    try:
        async with aiohttp.ClientSession(proc.http_url) as session:
            status, body, _ = await post_clone(session, clone_form("kim"))
        assert status == 503, body
        assert body["error"]["code"] == "xtts-checkpoint-missing"
        assert "XTTS-v2" in body["error"]["message"]
        assert not entry_path(empty, "kim").exists()
    finally:
        assert proc.terminate() == 0, proc.output()


async def test_a_cloned_voice_outlives_a_restart(
        server: ServerProcess, http: aiohttp.ClientSession, voices: Path,
        tmp_path: Path) -> None:
    status, body, _ = await post_clone(http, clone_form("lasting", "en"))
    assert status == 201, body
    second = _serve(voices, tmp_path / "restarted.log")
    try:
        assert (await described(second))["lasting"] == ["en"]
        await speak(second, "lasting")
    finally:
        assert second.terminate() == 0, second.output()
