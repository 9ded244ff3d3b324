"""Cloned voices below the HTTP door: clip checks (:mod:`chorus.common.clips`) on files
made in the test, the files a clone writes and a delete removes
(:mod:`chorus.common.clones`), and the server's clone service on a real voice store."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import wave
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chorus.common.clips import SILENCE_DBFS, ClipError, check_clip, read_clip_file
from chorus.common.clones import (
    LOCK_NAME,
    MAX_DESCRIPTION,
    CloneError,
    CloneRequest,
    check_request,
    delete_clone,
    write_clone,
)
from chorus.common.layout import find_voice_entries
from chorus.common.xtts import (
    CHECKPOINT_FILES,
    CLIP_MAX_BYTES,
    CLIP_SAMPLE_RATE,
    DEFAULT_CHECKPOINT,
    LANGUAGES,
    MAX_CLIPS,
    XttsEntry,
    entry_path,
    latents_path,
)
from chorus.server.engines.piper import PiperEngine
from chorus.server.errors import (
    BadRequest,
    CheckpointMissing,
    CloningDisabled,
    CloningUnavailable,
    InvalidClip,
    UnknownVoice,
    UnsupportedClip,
    VoiceExists,
    VoiceNotDeletable,
)
from chorus.server.http_api import HttpApi
from chorus.server.metrics import Metrics
from chorus.server.openapi import build_openapi
from chorus.server.synthesis import Synthesizer
from chorus.server.voice_cloning import CloneForm, CloneTarget, VoiceCloning
from chorus.server.voices import VoiceStore
from tests.clip_files import CONTAINERS, clip, png, random_bytes, video_only
from tests.conftest import copy_joe

# -- clip checks ---------------------------------------------------------------------


def wav_facts(data: bytes) -> tuple[int, int, int, float]:
    """(channels, bytes per sample, rate, seconds) of a WAV file."""
    with wave.open(io.BytesIO(data)) as reader:
        return (reader.getnchannels(), reader.getsampwidth(), reader.getframerate(),
                reader.getnframes() / reader.getframerate())


@pytest.mark.parametrize("fmt", list(CONTAINERS))
def test_every_accepted_container_becomes_mono_16_bit_wav_at_22050(fmt: str) -> None:
    result = check_clip(clip(fmt, seconds=4.0, rate=48_000, channels=2), "c")
    assert result.source_format == fmt
    channels, width, rate, seconds = wav_facts(result.wav)
    assert (channels, width, rate) == (1, 2, CLIP_SAMPLE_RATE)
    # mp3 and vorbis add encoder priming and padding
    assert seconds == pytest.approx(4.0, abs=0.1)
    assert result.seconds == pytest.approx(seconds, abs=0.01)
    assert result.rms_dbfs > SILENCE_DBFS


def test_the_format_is_read_from_the_content_not_the_name(tmp_path: Path) -> None:
    path = tmp_path / "speaker.wav"  # an mp3 named .wav
    path.write_bytes(clip("mp3"))
    assert check_clip(read_clip_file(path), path.name).source_format == "mp3"


def test_noise_is_audio_and_is_accepted() -> None:
    assert check_clip(clip("flac", kind="noise"), "noise").seconds == pytest.approx(5.0)


@pytest.mark.parametrize(("data", "kind", "words"), [
    (clip("wav", seconds=1.5), "invalid", ["1.5 s", "3 to 30 s"]),
    (clip("flac", seconds=31.5, rate=16_000, channels=1), "invalid", ["longer than 30 s"]),
    (clip("wav", kind="silence"), "invalid", ["silent", "digital silence"]),
    (clip("ogg", level=0.0005), "invalid", ["silent", "dBFS"]),
    (random_bytes(), "unsupported", ["not audio"]),
    (png(), "unsupported", ["png", "accepted: wav, flac, mp3, ogg"]),
    (video_only(), "unsupported", ["mp4", "accepted"]),
    (b"", "unsupported", ["empty"]),
    (b"RIFF\x00\x00\x00\x00WAVE", "unsupported", ["not audio"]),
], ids=["too-short", "too-long", "digital-silence", "quiet", "random-bytes", "png",
        "video-without-audio", "empty", "bare-riff-header"])
def test_bad_clips_are_refused_with_the_reason(data: bytes, kind: str,
                                               words: list[str]) -> None:
    with pytest.raises(ClipError) as caught:
        check_clip(data, "clip 1 (x)")
    assert caught.value.kind == kind
    assert caught.value.message.startswith("clip 1 (x)")
    for word in words:
        assert word in caught.value.message


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_a_truncated_clip_is_refused(fmt: str) -> None:
    whole = clip(fmt, seconds=10.0, rate=16_000, channels=1)
    with pytest.raises(ClipError, match=r"truncated|cannot be decoded") as caught:
        check_clip(whole[:len(whole) // 2], "cut")
    assert caught.value.kind == "invalid"


def test_a_clip_cut_to_its_header_is_refused() -> None:
    with pytest.raises(ClipError):
        check_clip(clip("wav")[:100], "header")


def test_a_file_over_the_limit_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.wav"
    with path.open("wb") as out:
        out.truncate(CLIP_MAX_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(ClipError, match="larger than") as caught:
        read_clip_file(path)
    assert caught.value.kind == "too-large"


# -- request fields ------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "param", "words"), [
    ({"name": None}, "name", "required"),
    ({"name": "../evil"}, "name", "not a voice name"),
    ({"name": "a..b"}, "name", "not a voice name"),
    ({"name": "af_bella+af_sky"}, "name", "blend"),
    ({"name": "clone"}, "name", "reserved"),
    ({"language": None}, "language", "required"),
    ({"language": "tlh"}, "language", "en, es"),
    ({"languages": ["de,xx"]}, "languages", "'xx'"),
    ({"description": "x" * 501}, "description", "500"),
    ({"description": "a\0b"}, "description", "control"),
])
def test_bad_fields_name_the_field(fields: dict[str, object], param: str,
                                   words: str) -> None:
    given: dict[str, object] = {"name": "kim", "language": "en", "languages": [],
                                "description": "", **fields}
    with pytest.raises(CloneError) as caught:
        check_request(given["name"], given["language"], given["languages"],  # type: ignore[arg-type]
                      given["description"])  # type: ignore[arg-type]
    assert caught.value.kind == "invalid"
    assert caught.value.param == param
    assert words in caught.value.message


def test_languages_start_with_the_default_and_repeat_once() -> None:
    request = check_request("kim", "de", ["en, fr", "de", "en"], "Kim")
    assert request.languages == ("de", "en", "fr")


# -- files on disk -------------------------------------------------------------------


def test_a_clone_is_its_clips_then_its_entry(tmp_path: Path) -> None:
    wavs = [check_clip(clip("mp3"), "a").wav, check_clip(clip("ogg", seconds=6), "b").wav]
    latents_path(tmp_path, "kim").write_bytes(b"stale conditioning of an older kim")
    entry = write_clone(tmp_path, check_request("kim", "de", ["en"], "Kim, calm"), wavs)
    assert entry == XttsEntry(("kim.clip1.wav", "kim.clip2.wav"), "de", ("de", "en"),
                              DEFAULT_CHECKPOINT, "clone", "Kim, calm")
    data = json.loads(entry_path(tmp_path, "kim").read_bytes())
    assert data == {"clips": ["kim.clip1.wav", "kim.clip2.wav"], "language": "de",
                    "languages": ["de", "en"], "checkpoint": "XTTS-v2", "origin": "clone",
                    "description": "Kim, calm"}
    for name, wav in zip(entry.clips, wavs, strict=True):
        assert (tmp_path / name).read_bytes() == wav
        assert wav_facts(wav)[:3] == (1, 2, CLIP_SAMPLE_RATE)
    assert not latents_path(tmp_path, "kim").exists()
    assert [(e.name, e.engine) for e in find_voice_entries(tmp_path)] == [("kim", "xtts")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        LOCK_NAME, "kim.clip1.wav", "kim.clip2.wav", "kim.xtts.json"]


def test_a_name_taken_in_any_directory_by_any_engine_is_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    copy_joe(second, "joe")
    (first / "af_heart.kokoro.json").parent.mkdir()
    (first / "af_heart.kokoro.json").write_text("{}")  # listed whether readable or not
    wav = check_clip(clip(), "a").wav
    for name, engine in (("joe", "piper"), ("af_heart", "kokoro")):
        with pytest.raises(CloneError, match=f"a {engine} voice called '{name}'") as caught:
            write_clone(first, CloneRequest(name, "en"), [wav], [first, second])
        assert caught.value.kind == "exists"
    write_clone(first, CloneRequest("kim", "en"), [wav], [first, second])
    with pytest.raises(CloneError, match="xtts voice called 'kim'"):
        write_clone(first, CloneRequest("kim", "fr"), [wav], [first, second])
    assert XttsEntry.read(entry_path(first, "kim")).language == "en"


def test_two_clones_of_one_name_at_once_one_wins_whole(tmp_path: Path) -> None:
    wavs = {lang: check_clip(clip(seconds=s), lang).wav
            for lang, s in (("en", 4.0), ("fr", 7.0))}
    barrier = threading.Barrier(2)
    outcome: dict[str, str] = {}

    def clone(language: str) -> None:
        barrier.wait()
        try:
            write_clone(tmp_path, CloneRequest("kim", language), [wavs[language]])
            outcome[language] = "won"
        except CloneError as err:
            outcome[language] = err.kind

    threads = [threading.Thread(target=clone, args=(lang,)) for lang in wavs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcome.values()) == ["exists", "won"]
    winner = next(lang for lang, result in outcome.items() if result == "won")
    entry = XttsEntry.read(entry_path(tmp_path, "kim"))
    assert entry.language == winner
    assert (tmp_path / "kim.clip1.wav").read_bytes() == wavs[winner]  # not the loser's


def test_delete_removes_the_entry_clips_and_cache_only(tmp_path: Path) -> None:
    wav = check_clip(clip(), "a").wav
    write_clone(tmp_path, CloneRequest("kim", "en"), [wav, wav])
    write_clone(tmp_path, CloneRequest("kimberly", "en"), [wav])
    latents_path(tmp_path, "kim").write_bytes(b"conditioning")
    entry = delete_clone([tmp_path], "kim")
    assert entry.clips == ("kim.clip1.wav", "kim.clip2.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        LOCK_NAME, "kimberly.clip1.wav", "kimberly.xtts.json"]
    with pytest.raises(CloneError) as caught:
        delete_clone([tmp_path], "kim")
    assert caught.value.kind == "not-found"


def test_only_cloned_voices_can_be_deleted(tmp_path: Path) -> None:
    copy_joe(tmp_path, "joe")
    entry_path(tmp_path, "managed").write_bytes(
        XttsEntry(("managed.clip1.wav",), "en", origin="manifest").to_json())
    entry_path(tmp_path, "broken").write_text("{", encoding="utf-8")
    for name, words in (("joe", "piper voice"), ("managed", "voice manager"),
                        ("broken", "cannot be read")):
        with pytest.raises(CloneError, match=words) as caught:
            delete_clone([tmp_path], name)
        assert caught.value.kind == "not-clone"
    assert entry_path(tmp_path, "managed").exists()
    assert (tmp_path / "joe.onnx").exists()


def test_a_clip_named_by_the_entry_but_not_its_own_is_kept(tmp_path: Path) -> None:
    (tmp_path / "shared.wav").write_bytes(b"another voice's clip")
    entry_path(tmp_path, "kim").write_bytes(XttsEntry(("shared.wav",), "en").to_json())
    delete_clone([tmp_path], "kim")
    assert (tmp_path / "shared.wav").exists()


# -- the server's clone service on a real store --------------------------------------


def install_checkpoint(root: Path) -> None:
    """The checkpoint's files, present (the engine, not the clone, reads them)."""
    (root / DEFAULT_CHECKPOINT).mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        (root / DEFAULT_CHECKPOINT / name).write_bytes(b"{}")


def cloning(root: Path, *, engine: bool = True, enabled: bool = True,
            directory: Path | None = None) -> VoiceCloning:
    """The clone service as the server builds it; ``engine``: whether the XTTS engine
    counts as installed (it is not, in this suite's environment)."""
    store = VoiceStore(PiperEngine(1, 150), [root], rescan_interval=3600)
    return VoiceCloning(store, CloneTarget(directory or root, (root,)), enabled=enabled,
                        engine_missing=None if engine else "pip install 'chorus-tts[xtts]'")


def form(name: str = "kim", *clips: bytes, language: str = "en") -> CloneForm:
    return CloneForm(clips=[(f"clip {i}", data) for i, data in
                            enumerate(clips or (clip(),), start=1)],
                     name=name, language=language)


async def test_clone_service_writes_the_voice(tmp_path: Path) -> None:
    install_checkpoint(tmp_path)
    entry = await cloning(tmp_path).clone(form("kim", clip("flac"), clip("mp3")))
    assert entry.clips == ("kim.clip1.wav", "kim.clip2.wav")
    assert XttsEntry.read(entry_path(tmp_path, "kim")) == entry


async def test_clone_service_refusals_in_order(tmp_path: Path) -> None:
    copy_joe(tmp_path, "joe")
    service = cloning(tmp_path)
    with pytest.raises(BadRequest, match="name: field required"):
        await service.clone(CloneForm(clips=[("c", clip())], language="en"))
    with pytest.raises(BadRequest, match="clip: field required"):
        await service.clone(CloneForm(name="kim", language="en"))
    with pytest.raises(VoiceExists, match="piper voice called 'joe'"):
        await service.clone(form("joe", png()))  # the name, before the clip
    with pytest.raises(UnsupportedClip, match="clip 2"):
        await service.clone(form("kim", clip(), png()))
    with pytest.raises(InvalidClip, match="silent"):
        await service.clone(form("kim", clip(kind="silence")))
    with pytest.raises(CheckpointMissing, match=r"XTTS-v2 lacks config\.json, model\.pth"):
        await service.clone(form("kim"))
    with pytest.raises(CloningUnavailable, match=r"pip install 'chorus-tts\[xtts\]'"):
        await cloning(tmp_path, engine=False).clone(form("kim"))
    with pytest.raises(CloningDisabled, match="--no-voice-cloning"):
        await cloning(tmp_path, enabled=False).clone(form("kim"))
    assert not entry_path(tmp_path, "kim").exists()


async def test_clone_service_two_at_once(tmp_path: Path) -> None:
    install_checkpoint(tmp_path)
    service = cloning(tmp_path)
    results = await asyncio.gather(service.clone(form("kim", language="en")),
                                   service.clone(form("kim", language="fr")),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["VoiceExists", "XttsEntry"]
    entry = next(r for r in results if isinstance(r, XttsEntry))
    assert XttsEntry.read(entry_path(tmp_path, "kim")) == entry


async def test_clone_service_delete(tmp_path: Path) -> None:
    install_checkpoint(tmp_path)
    copy_joe(tmp_path, "joe")
    service = cloning(tmp_path)
    await service.clone(form("kim"))
    with pytest.raises(VoiceNotDeletable, match="piper voice"):
        await service.delete("joe")
    with pytest.raises(UnknownVoice):
        await service.delete("nobody")
    await service.delete("kim")
    assert not entry_path(tmp_path, "kim").exists()
    assert not (tmp_path / "kim.clip1.wav").exists()


async def test_public_voice_listings_never_open_delete_or_clone(tmp_path: Path) -> None:
    """``--public-routes voices`` opens GET /voices/{name}; DELETE on the same path and
    the clone upload keep needing the key."""
    synthesizer = cast(Synthesizer, SimpleNamespace(max_chars=100))
    app = HttpApi(synthesizer, Metrics(), ready=lambda: None, api_key="k",
                  public_routes=("voices",), cloning=cloning(tmp_path)).app
    async with TestClient(TestServer(app)) as client:
        for method, path in (("DELETE", "/voices/kim"), ("POST", "/voices/clone")):
            async with client.request(method, path) as response:
                assert response.status == 401, (method, path)


def test_the_documented_form_agrees_with_the_checks() -> None:
    operation = build_openapi(100)["paths"]["/voices/clone"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    props = schema["properties"]
    assert props["clip"]["maxItems"] == MAX_CLIPS
    assert props["language"]["enum"] == list(LANGUAGES)
    assert props["languages"]["items"]["enum"] == list(LANGUAGES)
    assert props["description"]["maxLength"] == MAX_DESCRIPTION
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"clip", "name", "language"}
