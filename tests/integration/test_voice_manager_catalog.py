"""The voice catalog end to end: ``catalog refresh``, ``list`` and ``pull`` as real
processes against the loopback hub, and the catalog's md5 check in a real sync."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from chorus.common.layout import TEMP_PREFIX, find_voice_files
from chorus.common.manifest import parse_manifest
from chorus.common.voice_status import STATUS_FILE
from chorus.voice_manager.catalog import load_bundled
from chorus.voice_manager.sources import FetchSettings
from chorus.voice_manager.sync import SyncSettings, VolumeSyncer
from tests.conftest import CHORUS
from tests.integration.voice_servers import (
    COMMIT,
    CONFIG_SHA,
    JOE,
    JOE_FOLDER,
    MODEL_BYTES,
    ServedFile,
    VoiceServer,
)

NEWCOMER = "en_US-newcomer-medium"
INDEX_KEYS = sorted([JOE, "de_DE-thorsten-low", "en_GB-semaine-medium", NEWCOMER])


@pytest.fixture
def voice_server(voice_server: VoiceServer) -> VoiceServer:
    """The loopback hub, also serving the hub's voice index."""
    voice_server.files["voices.json"] = ServedFile(_hub_index(), lfs=False)
    return voice_server


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def _hub_index() -> bytes:
    """A few entries of the real hub index, plus a voice 'new on the hub' (joe's files)."""
    real = json.loads((resources.files("wyoming_piper") / "voices.json").read_bytes())
    index = {key: real[key] for key in INDEX_KEYS if key in real}
    newcomer = json.loads(json.dumps(real[JOE]).replace("joe", "newcomer"))
    index[NEWCOMER] = newcomer
    return json.dumps(index, indent=4).encode()


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHORUS, "voices", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, check=False)


def _listed(*args: str) -> list[str]:
    result = _run("list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [row["name"] for row in json.loads(result.stdout)]


def _temps(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_refresh_from_the_hub_then_list_and_pull_read_it(tmp_path: Path, voice_server: VoiceServer,
                                                         cache_home: Path) -> None:
    assert NEWCOMER not in _listed()  # the bundled snapshot
    result = _run("catalog", "refresh", "--hf-endpoint", voice_server.base,
                  env={"HF_TOKEN": "hf_catalog_token"})
    assert result.returncode == 0, result.stderr
    assert f"4 voices from rhasspy/piper-voices@{COMMIT} voices.json" in result.stderr

    cached = cache_home / "chorus" / "catalog.json"
    data = json.loads(cached.read_text())
    assert data["source"]["revision"] == COMMIT
    assert data["source"]["origin"] == (f"{voice_server.base}/rhasspy/piper-voices/resolve/"
                                        f"{COMMIT}/voices.json")
    assert data["count"] == 4
    # a branch resolved once, the bytes fetched at that commit, with the hub token
    assert ("HEAD", "/rhasspy/piper-voices/resolve/main/voices.json") in voice_server.requests
    get = f"/rhasspy/piper-voices/resolve/{COMMIT}/voices.json"
    assert ("GET", get) in voice_server.requests
    assert (get, "Bearer hf_catalog_token") in voice_server.authorization
    assert _temps(cached.parent) == []

    assert _listed() == INDEX_KEYS
    assert _listed("--language", "en") == ["en_GB-semaine-medium", JOE, NEWCOMER]
    table = _run("list")
    assert f"@{COMMIT}" in table.stderr and str(cached) in table.stderr

    # a voice only the refreshed catalog knows is pulled, and checked against it
    voice_server.add_joe(name=NEWCOMER, folder="en/en_US/newcomer/medium")
    dest = tmp_path / "voices"
    pulled = _run("pull", NEWCOMER, "--dest", str(dest), "--hf-endpoint", voice_server.base)
    assert pulled.returncode == 0, pulled.stderr
    assert [v.name for v in find_voice_files(dest)] == [NEWCOMER]
    assert _listed("--installed", "--dest", str(dest)) == [NEWCOMER]


@pytest.mark.parametrize(("served", "message"), [
    (None, "HTTP 500 from the hub"),
    (b"<html>not json", "not a readable JSON document"),
    (b"[1, 2]", "expected an object of voices, got list"),
    (b'{"en_US-x-low": {"key": "en_US-x-low"}}', "no usable voice"),
])
def test_a_failed_refresh_keeps_the_previous_catalog(voice_server: VoiceServer, cache_home: Path,
                                                     served: bytes | None,
                                                     message: str) -> None:
    refresh = ["catalog", "refresh", "--hf-endpoint", voice_server.base, "--backoff", "0.1"]
    assert _run(*refresh).returncode == 0
    cached = cache_home / "chorus" / "catalog.json"
    before = cached.read_bytes()

    if served is None:
        voice_server.fault("voices.json", "500")
    else:
        voice_server.files["voices.json"] = ServedFile(served, lfs=False)
    result = _run(*refresh, "--retries", "1")
    assert result.returncode == 1
    assert message in result.stderr
    assert f"{cached} is unchanged" in result.stderr
    if served is None:  # a fault of the moment is tried again, then given up
        assert "attempt 1 failed" in result.stderr
    assert cached.read_bytes() == before
    assert _temps(cached.parent) == []
    assert _listed() == INDEX_KEYS


def test_a_first_refresh_that_fails_leaves_the_bundled_catalog(tmp_path: Path,
                                                               voice_server: VoiceServer) -> None:
    voice_server.files["voices.json"] = ServedFile(b"garbage", lfs=False)
    target = tmp_path / "mine" / "catalog.json"
    result = _run("catalog", "refresh", "--hf-endpoint", voice_server.base,
                  "--catalog", str(target))
    assert result.returncode == 1
    assert "not a readable JSON document" in result.stderr
    assert not target.exists()
    assert len(_listed()) == len(load_bundled())


def test_pull_refuses_an_unknown_key_before_any_download(tmp_path: Path,
                                                         voice_server: VoiceServer) -> None:
    result = _run("pull", JOE, "en_US-jo-medium", "--dest", str(tmp_path / "voices"),
                  "--hf-endpoint", voice_server.base)
    assert result.returncode == 2
    assert ("en_US-jo-medium is not a voice of rhasspy/piper-voices; did you mean "
            f"{JOE}") in result.stderr
    assert "chorus voices catalog refresh" in result.stderr
    assert voice_server.requests == []  # nothing fetched, not even the known voice

    mine = tmp_path / "mine.json"  # --catalog: exactly that catalog
    assert _run("catalog", "refresh", "--hf-endpoint", voice_server.base,
                "--catalog", str(mine)).returncode == 0
    voice_server.requests.clear()
    result = _run("pull", "en_US-amy-low", "--catalog", str(mine), "--dest", str(tmp_path),
                  "--hf-endpoint", voice_server.base)
    assert result.returncode == 2
    assert "en_US-amy-low is not a voice" in result.stderr
    assert voice_server.requests == []


def _old_voice(dest: Path) -> None:
    dest.mkdir()
    (dest / f"{JOE}.onnx").write_bytes(b"old model")
    (dest / f"{JOE}.onnx.json").write_bytes(b"{}")


def _tampered() -> bytes:
    """joe's model with one bit flipped: same size, and the hub's LFS sha256 matches it."""
    return MODEL_BYTES[:-1] + bytes([MODEL_BYTES[-1] ^ 1])


@pytest.mark.parametrize(("model", "message"), [
    (_tampered(), "md5 mismatch with the voice catalog: expected 74fd6a4dc39e0aa9dce145d7f5acd4f6"),
    (MODEL_BYTES + b"!", "the hub's file is 63201295 bytes, the voice catalog says 63201294"),
])
def test_pull_refuses_hub_files_that_differ_from_a_catalog_of_the_same_commit(
        tmp_path: Path, voice_server: VoiceServer, model: bytes, message: str) -> None:
    assert _run("catalog", "refresh", "--hf-endpoint", voice_server.base).returncode == 0
    voice_server.requests.clear()
    voice_server.files[f"{JOE_FOLDER}/{JOE}.onnx"] = ServedFile(model)
    dest = tmp_path / "voices"
    _old_voice(dest)
    result = _run("pull", JOE, "--dest", str(dest), "--hf-endpoint", voice_server.base,
                  "--retries", "0")
    assert result.returncode == 1
    assert message in result.stderr
    assert f"(catalog: 4 voices from rhasspy/piper-voices@{COMMIT}" in result.stderr
    assert (dest / f"{JOE}.onnx").read_bytes() == b"old model"  # the old voice is kept
    assert (dest / f"{JOE}.onnx.json").read_bytes() == b"{}"
    assert _temps(dest) == []
    status = json.loads((dest / STATUS_FILE).read_text())["voices"][JOE]
    assert status["state"] == "failed"
    if len(model) != len(MODEL_BYTES):  # refused from the size alone: no body fetched
        assert not any(method == "GET" for method, _ in voice_server.requests)


def test_a_catalog_of_another_commit_only_warns(tmp_path: Path, voice_server: VoiceServer) -> None:
    """The bundled snapshot's commit is unknown: the hub may have replaced the files since,
    so a difference is logged and the hub's own sha256 decides."""
    tampered = _tampered()
    voice_server.files[f"{JOE_FOLDER}/{JOE}.onnx"] = ServedFile(tampered)
    dest = tmp_path / "voices"
    result = _run("pull", JOE, "--dest", str(dest), "--hf-endpoint", voice_server.base,
                  "--retries", "0")
    assert result.returncode == 0, result.stderr
    assert "md5 mismatch with the voice catalog" in result.stderr
    assert "the hub's own hash decides" in result.stderr
    assert (dest / f"{JOE}.onnx").read_bytes() == tampered


def _sync(dest: Path, voice_server: VoiceServer, voice: dict[str, Any]) -> str | None:
    bundled = load_bundled()
    # the catalog as a refresh at the served commit would have made it
    catalog = replace(bundled, source=replace(bundled.source, revision=COMMIT))
    syncer = VolumeSyncer(dest, SyncSettings(retries=0, fetch=FetchSettings(
        timeout_s=10, hf_endpoint=voice_server.base, catalog=catalog)))
    try:
        report = syncer.converge(parse_manifest({"version": 1, "voices": [voice]}))
    finally:
        syncer.close()
    return report.voices[JOE].error


def test_sync_checks_the_catalog_unless_the_manifest_pins_sha256(tmp_path: Path,
                                                                 voice_server: VoiceServer) -> None:
    voice: dict[str, Any] = {"name": JOE, "source": {"huggingFace": {}}}
    assert _sync(tmp_path / "a", voice_server, voice) is None  # the real joe matches the catalog

    tampered = _tampered()
    voice_server.files[f"{JOE_FOLDER}/{JOE}.onnx"] = ServedFile(tampered)
    error = _sync(tmp_path / "b", voice_server, voice)
    assert error is not None and "md5 mismatch with the voice catalog" in error
    assert find_voice_files(tmp_path / "b") == []

    # a manifest sha256 names exact files (another revision, say): it alone decides
    voice["sha256"] = {"model": hashlib.sha256(tampered).hexdigest(), "config": CONFIG_SHA}
    assert _sync(tmp_path / "c", voice_server, voice) is None
    assert (tmp_path / "c" / f"{JOE}.onnx").read_bytes() == tampered
