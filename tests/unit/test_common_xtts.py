"""The XTTS voice entry and layout shared by the engine, clone API, CLI and voice manager."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chorus.common.layout import find_voice_entries
from chorus.common.xtts import (
    LANGUAGES,
    XttsEntry,
    clip_name,
    entry_path,
    latents_key,
    memory_estimate,
)


def test_entry_round_trips_and_keeps_unknown_keys(tmp_path: Path) -> None:
    entry = XttsEntry(("v.clip1.wav",), "en", ("en", "de"), description="Kim",
                      extra={"future": 1})
    path = entry_path(tmp_path, "v")
    path.write_bytes(entry.to_json())
    read = XttsEntry.read(path)
    assert read == entry
    assert read.extra == {"future": 1}
    assert read.all_languages == ("en", "de")


def test_default_language_joins_the_offered_languages() -> None:
    entry = XttsEntry.parse({"clips": ["a.clip1.wav"], "language": "fr",
                             "languages": ["de"]})
    assert entry.all_languages == ("fr", "de")


@pytest.mark.parametrize(("data", "message"), [
    ([], "JSON object"),
    ({"clips": [], "language": "en"}, "'clips'"),
    ({"clips": ["../x.wav"], "language": "en"}, "'clips'"),
    ({"clips": ["a.wav"] * 6, "language": "en"}, "'clips'"),
    ({"clips": ["a.wav"], "language": "xx"}, "'language'"),
    ({"clips": ["a.wav"], "language": "en", "languages": ["en", "tlh"]}, "'languages'"),
    ({"clips": ["a.wav"], "language": "en", "checkpoint": "a/b"}, "'checkpoint'"),
    ({"clips": ["a.wav"], "language": "en", "origin": "elsewhere"}, "'origin'"),
])
def test_bad_entries_are_refused_with_the_key(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        XttsEntry.parse(data)


def test_entry_that_is_not_json_names_the_file(tmp_path: Path) -> None:
    path = entry_path(tmp_path, "v")
    path.write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"v\.xtts\.json is not JSON"):
        XttsEntry.read(path)


def test_xtts_entries_are_listed_beside_other_engines(tmp_path: Path) -> None:
    entry_path(tmp_path, "kim").write_bytes(
        XttsEntry((clip_name("kim", 1),), "en").to_json())
    (tmp_path / "kim.clip1.wav").write_bytes(b"")
    (tmp_path / "af_heart.kokoro.json").write_text(json.dumps({}), encoding="utf-8")
    listed = [(e.name, e.engine) for e in find_voice_entries(tmp_path)]
    assert listed == [("af_heart", "kokoro"), ("kim", "xtts")]


def test_unsafe_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid voice name"):
        entry_path(tmp_path, "../evil")


def test_latents_key_changes_with_clips_order_and_checkpoint() -> None:
    base = latents_key(["a", "b"], "m1")
    assert base != latents_key(["b", "a"], "m1")
    assert base != latents_key(["a", "b"], "m2")
    assert base != latents_key(["ab"], "m1")
    assert base == latents_key(["a", "b"], "m1")


def test_memory_estimate_counts_each_checkpoint_once() -> None:
    assert memory_estimate([1000]) == 1500
    assert memory_estimate([]) == 0
    assert "zh-cn" in LANGUAGES
