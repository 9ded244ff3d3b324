"""The describe snapshot holds only while everything the answer rests on is as recorded.

A real voice store with the real Piper engine scans real voice files (joe, copied);
nothing is loaded. Every change a scan would see must turn the snapshot down.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chorus.server import describe_snapshot
from chorus.server.engines.piper import PiperEngine
from chorus.server.settings import ServerSettings
from chorus.server.voices import VoiceStore
from chorus.server.wyoming_handler import build_info
from tests.conftest import copy_joe


def _settings(tmp_path: Path, **changes: object) -> ServerSettings:
    values: dict[str, object] = {"voices_dirs": (tmp_path / "voices",),
                                 "embedded_voice": False,
                                 "graph_cache_dir": tmp_path / "graphs"}
    values.update(changes)
    return ServerSettings(**values)  # type: ignore[arg-type]


async def _save(settings: ServerSettings) -> dict[str, object]:
    """Scan as the runtime does and keep what describe answers; returns that answer."""
    store = VoiceStore(PiperEngine(1, 150), settings.voice_directories())
    await store.refresh()
    info = build_info(store.installed()).event().data
    describe_snapshot.save(settings, info, store.scanned)
    return info


@pytest.fixture
def voices(tmp_path: Path) -> Path:
    directory = tmp_path / "voices"
    copy_joe(directory, "en_US-first-medium")
    copy_joe(directory, "en_US-second-medium")
    return directory


async def test_the_answer_comes_back_while_nothing_changed(tmp_path: Path,
                                                          voices: Path) -> None:
    settings = _settings(tmp_path)
    assert describe_snapshot.load(settings) is None  # never saved
    info = await _save(settings)
    names = [voice["name"] for voice in info["tts"][0]["voices"]]  # type: ignore[index]
    assert names == ["en_US-first-medium", "en_US-second-medium"]
    assert describe_snapshot.load(settings) == info
    # The same settings object rebuilt from the same values finds it as well.
    assert describe_snapshot.load(_settings(tmp_path)) == info


async def test_any_change_to_the_voices_turns_it_down(tmp_path: Path,
                                                      voices: Path) -> None:
    settings = _settings(tmp_path)
    await _save(settings)
    config = voices / "en_US-first-medium.onnx.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert describe_snapshot.load(settings) is None  # a file touched
    await _save(settings)
    assert describe_snapshot.load(settings) is not None
    copy_joe(voices, "en_US-third-medium")
    assert describe_snapshot.load(settings) is None  # a voice added
    await _save(settings)
    (voices / "en_US-third-medium.onnx").unlink()
    assert describe_snapshot.load(settings) is None  # a voice gone
    await _save(settings)
    assert describe_snapshot.load(settings) is not None
    os.rename(voices, tmp_path / "elsewhere")
    assert describe_snapshot.load(settings) is None  # the directory gone


async def test_a_refused_voice_is_watched_too(tmp_path: Path, voices: Path) -> None:
    """A voice left out for a bad config must come back the moment its file is mended:
    the snapshot rests on the refused voice's file as well."""
    broken = voices / "en_US-broken-medium.onnx.json"
    (voices / "en_US-broken-medium.onnx").write_bytes(b"not a model")
    broken.write_text("{not json", encoding="utf-8")
    settings = _settings(tmp_path)
    info = await _save(settings)
    assert "en_US-broken-medium" not in json.dumps(info)
    assert describe_snapshot.load(settings) == info
    broken.write_text((voices / "en_US-first-medium.onnx.json").read_text("utf-8"),
                      encoding="utf-8")
    assert describe_snapshot.load(settings) is None


async def test_other_settings_or_packages_or_a_damaged_file_mean_no_snapshot(
        tmp_path: Path, voices: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, api_key="secret-key-1234")
    await _save(settings)
    path = describe_snapshot.snapshot_path(settings)
    assert "secret-key-1234" not in path.read_text("utf-8")
    assert describe_snapshot.load(_settings(tmp_path, api_key="other")) is None
    assert describe_snapshot.load(_settings(tmp_path, api_key="secret-key-1234",
                                            default_voice="en_US-second-medium")) is None
    assert describe_snapshot.load(settings) is not None
    environment = describe_snapshot._environment()
    monkeypatch.setattr(describe_snapshot, "_environment",
                        lambda: [[entry, None] for entry, _ in environment])
    assert describe_snapshot.load(settings) is None  # a package installed or removed
    monkeypatch.undo()
    record = json.loads(path.read_text("utf-8"))
    for damage in ({**record, "format": 0}, {**record, "directories": "x"},
                   {**record, "info": []}, {"format": 1}):
        path.write_text(json.dumps(damage), encoding="utf-8")
        assert describe_snapshot.load(settings) is None
    path.write_text("{", encoding="utf-8")
    assert describe_snapshot.load(settings) is None


async def test_old_snapshots_are_pruned_and_an_unwritable_cache_is_no_error(
        tmp_path: Path, voices: Path) -> None:
    every = [_settings(tmp_path, wyoming_uri=f"tcp://127.0.0.1:{10300 + n}")
             for n in range(describe_snapshot.KEEP + 1)]
    for n, settings in enumerate(every[:-1]):
        await _save(settings)
        # Timestamps as far apart as uses usually are (file systems may keep ms only).
        path = describe_snapshot.snapshot_path(settings)
        os.utime(path, ns=(path.stat().st_atime_ns, (n + 1) * 1_000_000_000))
    first = describe_snapshot.snapshot_path(every[0])
    written = first.stat().st_ino
    await _save(every[0])  # unchanged: not written again, but marked as the newest
    assert first.stat().st_ino == written
    await _save(every[-1])  # one too many: the least recently used one goes
    kept = {p.name for p in (tmp_path / "graphs" / "describe").glob("*.json")}
    assert kept == {describe_snapshot.snapshot_path(s).name
                    for s in every if s is not every[1]}
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory should be", encoding="utf-8")
    await _save(_settings(tmp_path, graph_cache_dir=blocked))  # no exception
    assert describe_snapshot.load(_settings(tmp_path, graph_cache_dir=blocked)) is None
