"""Kokoro voice blends (``af_bella+af_sky``, ``af_bella(2)+af_sky(1)``) in one real
server, with Kokoro's real model and voices (:mod:`tests.kokoro_files`), over Wyoming,
HTTP and the OpenAI SDK.

A blend speaks plausible, non-silent audio unlike either part's; spellings of one blend
speak the same samples and share one HTTP cache entry, a blend of a voice with itself is
that voice, and weights change the sound. A blend is nowhere listed and loads no model
of its own (the server's memory stays put while blends are made). Unknown parts are
``unknown-voice`` with close names; malformed blends, Piper parts and parts on another
model are ``invalid-voice-blend`` (HTTP 422), each naming what is wrong.

Skipped only when the ``kokoro`` extra is not installed.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from wyoming.error import Error
from wyoming.tts import Synthesize, SynthesizeVoice

from chorus.server.errors import UnknownVoice
from tests.conftest import JOE, ServerProcess, describe, pcm_of, read_until
from tests.integration.conftest import CACHE_ON
from tests.kokoro_files import KOKORO_MISSING, install_kokoro_voice, join_model, kokoro_installed

pytestmark = pytest.mark.skipif(not kokoro_installed(), reason=KOKORO_MISSING)

# Loaded by name, as in test_openai_clients (import-linter's graph builder and openai).
openai: Any = importlib.import_module("openai")

TEXT = "The kitchen lights are now turned off."
BELLA, SKY = "af_bella", "af_sky"
OTHER_MODEL = "af_other"
"""A Kokoro voice whose entry names another model file (the same bytes, hard-linked)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Two English Kokoro voices on one model, one on a second model file, and Piper's
    embedded joe; the HTTP cache in a fresh directory."""
    voices = tmp_path_factory.mktemp("blend-voices")
    model = join_model(tmp_path_factory.mktemp("kokoro-model"))
    for name in (BELLA, SKY):
        install_kokoro_voice(voices, name, model)
    other = tmp_path_factory.mktemp("other-model") / "kokoro-copy.onnx"
    os.link(model, other)
    install_kokoro_voice(voices, OTHER_MODEL, other, style="af_nicole")
    log = tmp_path_factory.mktemp("logs") / "blend-server.log"
    proc = ServerProcess(["--voices-dir", str(voices), "--default-voice", BELLA,
                          "--openai-voice", f"nova={BELLA}+{SKY}",
                          "--cache-dir", str(tmp_path_factory.mktemp("cache"))], log,
                         env=CACHE_ON)
    yield proc
    assert proc.terminate() == 0, proc.output()


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(server.http_url) as session:
        yield session


async def _speak(server: ServerProcess, voice: str, text: str = TEXT,
                 ) -> npt.NDArray[np.int16]:
    """Wyoming ``synthesize`` with ``voice``: the 24 kHz audio."""
    async with server.client() as client:
        await client.write_event(Synthesize(text, voice=SynthesizeVoice(name=voice)).event())
        events = await read_until(client, "audio-stop", limit=120)
    assert events[0].type == "audio-start", [(e.type, e.data) for e in events]
    assert events[0].data["rate"] == 24000
    return np.frombuffer(pcm_of(events), dtype=np.int16)


async def _wyoming_error(server: ServerProcess, voice: str) -> Error:
    async with server.client() as client:
        await client.write_event(Synthesize(TEXT, voice=SynthesizeVoice(name=voice)).event())
        events = await read_until(client, "audio-stop", limit=60)
    assert [e.type for e in events] == ["error"], [e.type for e in events]
    return Error.from_event(events[0])


def _plausible(pcm: npt.NDArray[np.int16]) -> None:
    seconds = len(pcm) / 24000
    assert 1.0 < seconds < 5.0, seconds
    loud = np.abs(pcm.astype(np.float32)) > 1000
    assert loud.mean() > 0.1, loud.mean()


def _same(a: npt.NDArray[np.int16], b: npt.NDArray[np.int16]) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


async def test_a_blend_speaks_unlike_either_part(server: ServerProcess) -> None:
    bella, again = await _speak(server, BELLA), await _speak(server, BELLA)
    assert _same(bella, again)  # rendering is deterministic: equality below means something
    sky = await _speak(server, SKY)
    blend = await _speak(server, f"{BELLA}+{SKY}")
    _plausible(blend)
    assert not _same(blend, bella) and not _same(blend, sky)


async def test_spellings_of_one_blend_speak_the_same_samples(server: ServerProcess) -> None:
    spoken = [await _speak(server, name) for name in (
        f"{BELLA}+{SKY}", f"{BELLA}(1)+{SKY}(1)", f" {BELLA} ( 3 ) + {SKY}(3) ",
        f"{BELLA}(0.5)+{SKY}(0.5)")]
    for other in spoken[1:]:
        assert _same(other, spoken[0])


async def test_a_blend_of_a_voice_with_itself_is_the_voice(server: ServerProcess) -> None:
    assert _same(await _speak(server, f"{SKY}+{SKY}"), await _speak(server, SKY))
    assert _same(await _speak(server, f"{SKY}(2)+{SKY}(5)"), await _speak(server, SKY))


async def test_weights_change_the_sound(server: ServerProcess) -> None:
    more_bella = await _speak(server, f"{BELLA}(3)+{SKY}(1)")
    more_sky = await _speak(server, f"{BELLA}(1)+{SKY}(3)")
    even = await _speak(server, f"{BELLA}+{SKY}")
    for pcm in (more_bella, more_sky):
        _plausible(pcm)
    assert not _same(more_bella, more_sky)
    assert not _same(more_bella, even) and not _same(more_sky, even)
    # The order changes neither the mix nor (both parts being American) the language.
    assert _same(await _speak(server, f"{SKY}(3)+{BELLA}(1)"), more_sky)


async def test_blends_are_not_listed(server: ServerProcess, http: aiohttp.ClientSession,
                                     ) -> None:
    await _speak(server, f"{BELLA}(2)+{SKY}(1)")
    async with server.client() as client:
        info = await describe(client)
    assert {v.name for v in info.tts[0].voices} == {JOE, BELLA, SKY, OTHER_MODEL}
    async with http.get("/voices") as response:
        listed = [v["name"] for v in (await response.json())["voices"]]
    assert sorted(listed) == sorted([JOE, BELLA, SKY, OTHER_MODEL])
    async with http.get(f"/voices/{SKY}(1)+{BELLA}(3)") as response:
        described = await response.json()
    assert response.status == 200, described
    assert {k: described[k] for k in ("name", "engine", "language", "installed",
                                      "resident", "sample_rate")} == {
        "name": "af_sky(0.25)+af_bella(0.75)", "engine": "kokoro", "language": "en_US",
        "installed": False, "resident": False, "sample_rate": 24000}


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_blends_load_no_model_of_their_own(server: ServerProcess) -> None:
    """A second session of the 92 MB model would add at least its weights; a blend adds
    half a megabyte of style rows."""
    await _speak(server, BELLA)
    await _speak(server, SKY)
    await _speak(server, f"{BELLA}+{SKY}")
    before = _rss(server.proc.pid)
    for weight in range(2, 12):
        await _speak(server, f"{BELLA}({weight})+{SKY}")
    grown = _rss(server.proc.pid) - before
    assert grown < 40 * 1024 * 1024, grown


async def test_unknown_and_malformed_blends_over_wyoming(server: ServerProcess) -> None:
    error = await _wyoming_error(server, f"af_bela+{SKY}")
    assert error.code == "unknown-voice"
    assert "'af_bela' is not installed; did you mean af_bella" in error.text
    for voice, says in (
            (f"{BELLA}(0)+{SKY}", "weight of af_bella (0) must be above zero"),
            (f"{BELLA}+", "part 2 is empty"),
            (f"{BELLA}(x)+{SKY}", "weight of af_bella ('x') is not a positive number"),
            ("+".join([BELLA, SKY] * 5), "has 10 parts; a blend may have at most 8"),
            (f"{BELLA}+{JOE}", f"{JOE} is a piper voice, and piper voices cannot be "
                               "blended"),
            (f"{BELLA}+{OTHER_MODEL}", "use different models (kokoro-v1.0.int8.onnx, "
                                       "kokoro-copy.onnx)")):
        error = await _wyoming_error(server, voice)
        assert (error.code, says in error.text) == ("invalid-voice-blend", True), error


async def test_blends_over_http_with_their_canonical_name_and_cache_entry(
        server: ServerProcess, http: aiohttp.ClientSession) -> None:
    wyoming = await _speak(server, f"{BELLA}(2)+{SKY}(1)")
    canonical = "af_bella(0.666667)+af_sky(0.333333)"
    for path, voice, cache in (("/synthesize", f"{BELLA}(2)+{SKY}(1)", "miss"),
                               ("/synthesize", f"{BELLA}(4) + {SKY}(2)", "hit"),
                               ("/synthesize/stream", f"{BELLA}(2)+{SKY}", None)):
        async with http.post(path, json={"text": TEXT, "voice": voice,
                                         "format": "pcm"}) as response:
            body = await response.read()
            assert response.status == 200, body[:300]
            assert response.headers["X-Voice"] == canonical
            assert response.headers.get("X-Cache") == cache
        assert _same(np.frombuffer(body, dtype=np.int16), wyoming), path
    async with http.post("/synthesize", json={"text": TEXT, "voice": f"{BELLA}+{SKY}",
                                              "format": "pcm"}) as response:
        assert response.headers["X-Voice"] == "af_bella(0.5)+af_sky(0.5)"
        assert response.headers["X-Cache"] == "miss"  # another blend, another entry


async def test_unknown_and_malformed_blends_over_http(
        http: aiohttp.ClientSession) -> None:
    for path, field in (("/synthesize", "text"), ("/v1/audio/speech", "input")):
        for voice, status, code, says in (
                (f"{BELLA}+af_skyy", 404, "unknown-voice", "did you mean af_sky"),
                (f"{BELLA}(-1)+{SKY}", 422, "invalid-voice-blend", "not a positive number"),
                (f"{BELLA}+{JOE}", 422, "invalid-voice-blend", "cannot be blended")):
            async with http.post(path, json={field: TEXT, "voice": voice}) as response:
                assert response.status == status, (path, voice)
                error = (await response.json())["error"]
            assert (error["code"], error["param"]) == (code, "voice"), error
            assert says in error["message"], error


async def test_openai_sdk_speaks_a_blend_and_raises_on_a_bad_one(
        server: ServerProcess) -> None:
    client = openai.AsyncOpenAI(base_url=server.http_url + "/v1", api_key="unused",
                                max_retries=0, timeout=60)
    response = await client.audio.speech.create(  # pcm: 24 kHz, Kokoro's own rate
        model="tts-1", voice=f"{BELLA}(2)+{SKY}(1)", input=TEXT, response_format="pcm")
    assert response.response.headers["X-Voice"] == "af_bella(0.666667)+af_sky(0.333333)"
    pcm = np.frombuffer(response.content, dtype=np.int16)
    assert _same(pcm, await _speak(server, f"{BELLA}(2)+{SKY}(1)"))
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await client.audio.speech.create(model="tts-1", voice=f"{BELLA}(0)+{SKY}",
                                         input=TEXT, response_format="wav")
    assert "weight of af_bella (0) must be above zero" in str(caught.value)
    with pytest.raises(openai.NotFoundError) as missing:
        await client.audio.speech.create(model="tts-1", voice=f"af_bela+{SKY}", input=TEXT)
    assert "did you mean af_bella" in str(missing.value)
    await client.close()


async def test_an_openai_voice_name_maps_to_a_blend(server: ServerProcess) -> None:
    """``--openai-voice nova=af_bella+af_sky``: the SDK's ``nova`` speaks the blend."""
    client = openai.AsyncOpenAI(base_url=server.http_url + "/v1", api_key="unused",
                                max_retries=0, timeout=60)
    response = await client.audio.speech.create(model="tts-1", voice="nova", input=TEXT,
                                                response_format="pcm")
    await client.close()
    assert response.response.headers["X-Voice"] == "af_bella(0.5)+af_sky(0.5)"
    pcm = np.frombuffer(response.content, dtype=np.int16)
    assert _same(pcm, await _speak(server, f"{BELLA}+{SKY}"))


async def test_ssml_switches_to_a_blend_and_back(server: ServerProcess) -> None:
    first, second = "The first part is Bella's.", "The second part is a blend."
    alone_first = await _speak(server, BELLA, first)
    alone_second = await _speak(server, f"{BELLA}+{SKY}", second)
    async with server.client() as client:
        await client.write_event(Synthesize(
            f'<speak>{first} <voice name="{BELLA} + {SKY}">{second}</voice></speak>',
            voice=SynthesizeVoice(name=BELLA)).event())
        events = await read_until(client, "audio-stop", limit=120)
    assert [e.data["rate"] for e in events if e.type == "audio-start"] == [24000]
    mixed = np.frombuffer(pcm_of(events), dtype=np.int16)
    assert _same(mixed[:len(alone_first)], alone_first)
    assert _same(mixed[len(mixed) - len(alone_second):], alone_second)
    async with server.client() as client:
        await client.write_event(Synthesize(
            f'<speak>Hi. <voice name="{BELLA}+af_bela">Bye.</voice></speak>').event())
        error = (await read_until(client, "error", limit=40))[-1]
    assert error.data["code"] == "unknown-voice", error.data
    assert "did you mean af_bella" in error.data["text"]


# -- the store, in process: what a blend holds ------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return join_model(tmp_path_factory.mktemp("store-model"))


def _store(directory: Path, model: Path, budget: int = 1 << 30) -> Any:
    from chorus.server.engines.kokoro import KokoroEngine
    from chorus.server.engines.registry import EngineOptions
    from chorus.server.voices import VoiceStore

    for name in (BELLA, SKY):
        install_kokoro_voice(directory, name, model)
    return VoiceStore([KokoroEngine(EngineOptions())], [directory], memory_budget=budget)


async def test_a_blend_borrows_its_parts_model_and_is_kept_while_they_are_resident(
        tmp_path: Path, model: Path) -> None:
    from chorus.server.engines.kokoro import KokoroLoadedVoice, load_style

    store = _store(tmp_path, model)
    await store.refresh()
    spec = store.resolve(f"{BELLA}(3)+{SKY}(1)")
    blend = await store.acquire(spec)
    assert isinstance(blend, KokoroLoadedVoice)
    assert (spec.name, spec.engine, spec.language) == ("af_bella(0.75)+af_sky(0.25)",
                                                       "kokoro", "en_US")
    bella, sky = [await store.acquire(store.resolve(n)) for n in (BELLA, SKY)]
    assert isinstance(bella, KokoroLoadedVoice) and isinstance(sky, KokoroLoadedVoice)
    assert blend.model is bella.model is sky.model
    assert set(bella.model.users) == {bella, sky}  # the blend takes no share of it
    assert blend.memory_bytes == blend.style.nbytes < 1 << 20
    expected = (np.float32(0.75) * load_style(tmp_path / f"{BELLA}.bin")
                + np.float32(0.25) * load_style(tmp_path / f"{SKY}.bin"))
    assert np.array_equal(blend.style, expected)
    assert {v.spec.name for v in store.resident()} == {BELLA, SKY}
    assert await store.acquire(store.resolve(f"{BELLA}(6)+{SKY}(2)")) is blend

    (tmp_path / f"{SKY}.kokoro.json").unlink()  # a part goes: so does the kept blend
    await store.refresh()
    with pytest.raises(UnknownVoice, match="'af_sky' is not installed"):
        store.resolve(f"{BELLA}+{SKY}")
    install_kokoro_voice(tmp_path, SKY, model)
    await store.refresh()
    again = await store.acquire(store.resolve(f"{BELLA}(3)+{SKY}(1)"))
    assert isinstance(again, KokoroLoadedVoice)
    assert again is not blend and np.array_equal(again.style, expected)
    await store.close()


async def test_a_blend_whose_parts_do_not_fit_the_budget_is_not_kept(
        tmp_path: Path, model: Path) -> None:
    store = _store(tmp_path, model, budget=1)  # one resident voice at a time
    await store.refresh()
    spec = store.resolve(f"{BELLA}+{SKY}")
    first = await store.acquire(spec)
    assert [v.spec.name for v in store.resident()] == [SKY]
    assert await store.acquire(spec) is not first
    await store.close()
