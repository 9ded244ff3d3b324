"""The engine seam: engines found from what is installed, every engine's voices found in
one voices directory, and a voice whose engine is missing offered nowhere, said once."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chorus.common.layout import VoiceEntry, find_voice_entries
from chorus.server.engines.base import SynthesisParams
from chorus.server.engines.piper import PiperEngine
from chorus.server.engines.registry import OPTIONAL_ENGINES, EngineOptions, discover
from chorus.server.voices import VoiceStore
from tests.conftest import copy_joe
from tests.kokoro_files import KOKORO_MISSING, kokoro_installed
from tests.xtts_files import write_cloned_voice, xtts_installed

needs_kokoro = pytest.mark.skipif(not kokoro_installed(), reason=KOKORO_MISSING)


def _kokoro_entry(directory: Path, name: str, **entry: Any) -> Path:
    config = directory / f"{name}.kokoro.json"
    config.write_text(json.dumps({"model": "model.onnx", "style": f"{name}.bin", **entry}))
    return config


def test_entries_of_every_engine_side_by_side(tmp_path: Path) -> None:
    copy_joe(tmp_path, "joe")
    copy_joe(tmp_path, "same")
    _kokoro_entry(tmp_path, "af_heart")
    _kokoro_entry(tmp_path, "same")
    for junk in (".chorus-tmp-x.kokoro.json", "model.onnx", "af_heart.bin", "x.kokoro"):
        (tmp_path / junk).write_text("x")
    assert find_voice_entries(tmp_path) == [
        VoiceEntry("af_heart", "kokoro", tmp_path / "af_heart.kokoro.json"),
        VoiceEntry("joe", "piper", tmp_path / "joe.onnx.json"),
        VoiceEntry("same", "piper", tmp_path / "same.onnx.json"),
        VoiceEntry("same", "kokoro", tmp_path / "same.kokoro.json"),
    ]
    assert find_voice_entries(tmp_path / "missing") == []


def test_an_engine_that_does_not_import_is_missing_with_its_pip_install() -> None:
    def importer(module: str) -> Any:
        raise ModuleNotFoundError(f"No module named {module!r}")

    piper = PiperEngine(1, 150)
    engines = discover(EngineOptions(), piper, importer=importer)
    assert engines.available == {"piper": piper}
    assert engines.missing == {"kokoro": "pip install 'chorus-tts[kokoro]'",
                               "xtts": "pip install 'chorus-tts[xtts]'"}
    assert [e.name for e in OPTIONAL_ENGINES] == ["kokoro", "xtts"]


@pytest.mark.skipif(xtts_installed(), reason="the xtts extra is installed here")
async def test_without_torch_xtts_voices_are_listed_nowhere_with_the_pip_install(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The real engine module, imported where torch or coqui-tts is absent: the engine
    is missing, not broken, and its voices are named once with the extra that adds it."""
    copy_joe(tmp_path, "joe")
    write_cloned_voice(tmp_path, "cloned")
    piper = PiperEngine(1, 150)
    engines = discover(EngineOptions(), piper)
    assert engines.missing["xtts"] == "pip install 'chorus-tts[xtts]'"
    assert "xtts" not in engines.available
    store = VoiceStore(list(engines.available.values()), [tmp_path],
                       missing_engines=engines.missing)
    with caplog.at_level(logging.WARNING, logger="chorus.server.voices"):
        await store.refresh()
        await store.refresh()
    assert [s.name for s in store.installed()] == ["joe"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "cloned" in lines[0] and "engine xtts is not installed" in lines[0]
    assert "pip install 'chorus-tts[xtts]' adds it" in lines[0]


async def test_voice_of_a_missing_engine_is_listed_nowhere_and_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    copy_joe(tmp_path, "joe")
    _kokoro_entry(tmp_path, "af_heart")
    store = VoiceStore(PiperEngine(1, 150), [tmp_path],
                       missing_engines={"kokoro": "pip install 'chorus-tts[kokoro]'"})
    with caplog.at_level(logging.WARNING, logger="chorus.server.voices"):
        await store.refresh()
        await store.refresh()
        _kokoro_entry(tmp_path, "bf_emma")
        await store.refresh()
    assert [s.name for s in store.installed()] == ["joe"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "af_heart" in lines[0] and "engine kokoro is not installed" in lines[0]
    assert "pip install 'chorus-tts[kokoro]' adds it" in lines[0]
    assert "bf_emma" in lines[1]


@needs_kokoro
async def test_kokoro_voice_waits_for_its_files_and_says_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from chorus.server.engines.kokoro import KokoroEngine

    (tmp_path / "model.onnx").write_bytes(b"not read until the voice loads")
    _kokoro_entry(tmp_path, "af_heart")
    _kokoro_entry(tmp_path, "xx_nobody")  # no language in the entry, none from the name
    _kokoro_entry(tmp_path, "bad_rows", language="en_US")
    (tmp_path / "bad_rows.bin").write_bytes(b"\0" * (256 * 4 + 4))
    _kokoro_entry(tmp_path, "klingon", language="tlh")
    (tmp_path / "klingon.bin").write_bytes(np.zeros((2, 256), "<f4").tobytes())
    store = VoiceStore([PiperEngine(1, 150), KokoroEngine(EngineOptions())], [tmp_path])
    with caplog.at_level(logging.ERROR, logger="chorus.server.voices"):
        await store.refresh()
        assert store.installed() == []
        (tmp_path / "af_heart.bin").write_bytes(np.zeros((510, 256), "<f4").tobytes())
        await store.refresh()
        await store.refresh()
    (spec,) = store.installed()
    assert (spec.name, spec.engine, spec.language, spec.sample_rate) == (
        "af_heart", "kokoro", "en_US", 24000)
    assert spec.model_path == tmp_path / "model.onnx"
    errors = "\n".join(r.getMessage() for r in caplog.records)
    assert errors.count("voice af_heart:") == 1, errors  # missing style, once; then offered
    assert "xx_nobody" in errors and "no 'language'" in errors
    assert "bad_rows" in errors and "not rows of 256" in errors
    assert "klingon" in errors and "espeak-ng cannot speak 'tlh'" in errors
    assert len(caplog.records) == 4, errors


@needs_kokoro
async def test_an_unusable_espeak_refuses_kokoro_voices_and_piper_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """espeak-ng's library failing to map (a noexec /tmp) refuses the Kokoro voices with
    the reason; the scan, and the Piper voices beside them, are unaffected."""
    from chorus.server.engines import kokoro

    class Unmappable:
        def __init__(self) -> None:
            raise OSError("libespeak-ng.so: failed to map segment from shared object")

    monkeypatch.setattr("kokoro_onnx.tokenizer.Tokenizer", Unmappable)
    copy_joe(tmp_path, "en_US-joe-medium")
    (tmp_path / "model.onnx").write_bytes(b"not read")
    _kokoro_entry(tmp_path, "af_heart")
    (tmp_path / "af_heart.bin").write_bytes(np.zeros((510, 256), "<f4").tobytes())
    store = VoiceStore([PiperEngine(1, 150), kokoro.KokoroEngine(EngineOptions())],
                       [tmp_path])
    with caplog.at_level(logging.ERROR, logger="chorus.server.voices"):
        await store.refresh()
    assert [spec.name for spec in store.installed()] == ["en_US-joe-medium"]
    errors = "\n".join(r.getMessage() for r in caplog.records)
    assert "af_heart" in errors and "failed to map segment" in errors, errors


@needs_kokoro
def test_kokoro_speed_and_languages() -> None:
    from chorus.server.engines.kokoro import espeak_language, speed

    assert speed(SynthesisParams()) == 1.0
    assert speed(SynthesisParams(length_scale=0.8)) == pytest.approx(1.25)
    assert speed(SynthesisParams(length_scale=2.0, rate=1.5)) == pytest.approx(0.75)
    assert speed(SynthesisParams(rate=4.0)) == 2.0
    assert speed(SynthesisParams(length_scale=5.0)) == 0.5
    assert [espeak_language(c) for c in ("en_US", "en_GB", "fr_FR", "pt_BR", "zh_CN",
                                         "de-DE")] == [
        "en-us", "en-gb", "fr-fr", "pt-br", "cmn", "de"]
