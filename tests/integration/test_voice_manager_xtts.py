"""The voice manager installing XTTS voices from a loopback hub, URLs and local files.

An XTTS voice is reference clips plus a checkpoint shared by every voice naming it: the
files must land verified and atomic, the entry the server reads last, the checkpoint
only once and only after its licence was accepted, and it must outlive a voice's
removal while another voice speaks with it. The bytes are small stand-ins: the voice
manager never reads them as audio or weights (the server does).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from chorus.common.layout import TEMP_PREFIX, VoiceEntry, find_voice_entries
from chorus.common.manifest import Manifest, parse_manifest
from chorus.common.voice_status import STATUS_FILE
from chorus.common.xtts import CHECKPOINT_FILES, CLIP_MAX_BYTES, LICENSE_URL, XttsEntry
from chorus.voice_manager.sources import FetchSettings
from chorus.voice_manager.sync import LOCK_FILE, SyncSettings, VolumeSyncer
from chorus.voice_manager.xtts import CHECKPOINT_MARKER
from tests.conftest import CHORUS
from tests.integration.voice_servers import ServedFile, VoiceServer

CHECKPOINT = {"config.json": b'{"model": "xtts"}\n', "model.pth": b"xtts weights " * 5000,
              "vocab.json": b'{"vocab": []}\n'}
CLIPS = {"narrator": b"RIFF narrator clip " * 300, "guide": b"fLaC guide clip " * 300}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _serve(server: VoiceServer) -> None:
    """The checkpoint at the hub repo's root (model.pth in LFS, the JSON files in git) and
    at plain URLs; the clips at plain URLs."""
    for name, data in CHECKPOINT.items():
        server.files[name] = ServedFile(data, lfs=name == "model.pth")
        server.files[f"files/xtts/{name}"] = ServedFile(data)
    server.files["files/narrator.wav"] = ServedFile(CLIPS["narrator"])
    server.files["files/guide.flac"] = ServedFile(CLIPS["guide"])


def _syncer(dest: Path, server: VoiceServer, **settings: Any) -> VolumeSyncer:
    _serve(server)
    fetch = FetchSettings(timeout_s=5.0, hf_endpoint=server.base)
    return VolumeSyncer(dest, SyncSettings(fetch=fetch, backoff_s=0.0, **settings),
                        sleep=lambda _: None)


def _clip(server: VoiceServer, name: str, data: bytes | None = None) -> dict[str, Any]:
    file = "guide.flac" if name == "guide" else "narrator.wav"
    return {"url": {"url": server.url(file), "sha256": _sha(data or CLIPS[name])}}


def _voice(server: VoiceServer, name: str, checkpoint: dict[str, Any] | None = None,
           accept: bool = True, **changes: Any) -> dict[str, Any]:
    xtts: dict[str, Any] = {"clips": [_clip(server, name)], "language": "en",
                            "checkpoint": checkpoint or {"huggingFace": {}}, **changes}
    if accept:
        xtts["acceptLicense"] = "CPML"
    return {"name": name, "engine": "xtts", "source": {"xtts": xtts}}


def _url_checkpoint(server: VoiceServer, **wrong: str) -> dict[str, Any]:
    return {"url": {key: {"url": server.url(f"xtts/{name}"),
                          "sha256": wrong.get(key, _sha(CHECKPOINT[name]))}
                    for key, name in (("config", "config.json"), ("model", "model.pth"),
                                      ("vocab", "vocab.json"))}}


def _manifest(*voices: dict[str, Any]) -> Manifest:
    return parse_manifest({"version": 1, "voices": list(voices)})


def _gets(server: VoiceServer, suffix: str) -> int:
    return sum(1 for method, path in server.requests if method == "GET" and path.endswith(suffix))


def _leftovers(dest: Path) -> list[str]:
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*")
                  if p.name.startswith(TEMP_PREFIX))


def _status(dest: Path, name: str) -> dict[str, Any]:
    status: dict[str, Any] = json.loads((dest / STATUS_FILE).read_text())["voices"][name]
    return status


def test_hub_checkpoint_is_installed_once_and_shared(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    syncer = _syncer(tmp_path, voice_server)
    both = _manifest(_voice(voice_server, "narrator", languages=["fr"]),
                     _voice(voice_server, "guide"))
    report = syncer.converge(both)
    assert report.failed == []
    assert _gets(voice_server, "/model.pth") == 1  # one checkpoint for both voices
    folder = tmp_path / "XTTS-v2"
    for name, data in CHECKPOINT.items():
        assert (folder / name).read_bytes() == data
    marker = json.loads((folder / CHECKPOINT_MARKER).read_text())
    assert marker["source"] == {"huggingFace": {"repo": "coqui/XTTS-v2", "revision": "main"}}
    assert marker["files"]["model.pth"] == {"sha256": _sha(CHECKPOINT["model.pth"]),
                                            "bytes": len(CHECKPOINT["model.pth"])}
    entry = XttsEntry.read(tmp_path / "narrator.xtts.json")
    assert entry == XttsEntry(("narrator.clip1.wav",), "en", ("en", "fr"), "XTTS-v2",
                              "manifest")
    assert (tmp_path / "narrator.clip1.wav").read_bytes() == CLIPS["narrator"]
    assert XttsEntry.read(tmp_path / "guide.xtts.json").clips == ("guide.clip1.flac",)
    assert find_voice_entries(tmp_path) == [
        VoiceEntry(n, "xtts", tmp_path / f"{n}.xtts.json") for n in ("guide", "narrator")]
    status = _status(tmp_path, "narrator")
    assert status["state"] == "installed"
    assert status["sha256"] == {"model": _sha(CHECKPOINT["model.pth"]),
                                "config": _sha(CLIPS["narrator"])}
    assert status["bytes"] == len(CLIPS["narrator"]) + sum(map(len, CHECKPOINT.values()))
    assert _leftovers(tmp_path) == []
    requests = len(voice_server.requests)
    assert syncer.converge(both).failed == []
    assert len(voice_server.requests) == requests  # installed: nothing fetched again
    syncer.close()


def test_url_and_local_checkpoints_and_clips(tmp_path: Path, voice_server: VoiceServer) -> None:
    baked = tmp_path / "baked"
    baked.mkdir()
    for name, data in {**CHECKPOINT, "speakers_xtts.pth": b"speakers"}.items():
        (baked / name).write_bytes(data)
    (baked / "me.wav").write_bytes(CLIPS["narrator"])
    dest = tmp_path / "voices"
    syncer = _syncer(dest, voice_server)
    local = {"name": "mine", "engine": "xtts", "source": {"xtts": {
        "clips": [{"local": {"path": str(baked / "me.wav")}}], "language": "de",
        "checkpoint": {"name": "baked", "local": {"path": str(baked)}}}}}  # no licence needed
    from_urls = _voice(voice_server, "guide", {"name": "XTTS-url", **_url_checkpoint(
        voice_server)})
    assert syncer.converge(_manifest(local, from_urls)).failed == []
    assert sorted(p.name for p in (dest / "baked").iterdir()) == sorted(
        [*CHECKPOINT, "speakers_xtts.pth", CHECKPOINT_MARKER])
    assert (dest / "mine.clip1.wav").read_bytes() == CLIPS["narrator"]
    assert XttsEntry.read(dest / "mine.xtts.json").checkpoint == "baked"
    assert (dest / "XTTS-url" / "model.pth").read_bytes() == CHECKPOINT["model.pth"]
    assert _gets(voice_server, "/files/xtts/model.pth") == 1
    syncer.close()


def test_a_wrong_sha256_leaves_nothing_behind(tmp_path: Path, voice_server: VoiceServer) -> None:
    syncer = _syncer(tmp_path, voice_server)
    wrong_model = _voice(voice_server, "narrator", _url_checkpoint(voice_server, model="0" * 64))
    report = syncer.converge(_manifest(wrong_model))
    assert report.failed == ["narrator"]
    assert "model.pth: sha256 mismatch" in (report.voices["narrator"].error or "")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATUS_FILE, LOCK_FILE])
    wrong_clip = _voice(voice_server, "narrator", _url_checkpoint(voice_server),
                        clips=[_clip(voice_server, "narrator", b"other bytes")])
    report = syncer.converge(_manifest(wrong_clip))
    assert "narrator-clip1: sha256 mismatch" in (report.voices["narrator"].error or "")
    assert not (tmp_path / "narrator.xtts.json").exists()
    assert list(tmp_path.glob("narrator.clip*")) == []
    assert _leftovers(tmp_path) == []
    # the verified checkpoint stays for the voice's next try, and is not fetched again
    assert syncer.converge(_manifest(_voice(voice_server, "narrator", _url_checkpoint(
        voice_server)))).failed == []
    assert _gets(voice_server, "/files/xtts/model.pth") == 2  # the wrong one, the right one
    syncer.close()


def test_without_the_licence_accepted_nothing_is_fetched(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    syncer = _syncer(tmp_path, voice_server)
    checkpoints: list[dict[str, Any]] = [{"huggingFace": {}}, _url_checkpoint(voice_server)]
    for checkpoint in checkpoints:
        report = syncer.converge(_manifest(_voice(voice_server, "narrator", checkpoint,
                                                  accept=False)))
        error = report.voices["narrator"].error or ""
        assert report.failed == ["narrator"]
        assert "CPML" in error and LICENSE_URL in error and "acceptLicense: CPML" in error
        assert _status(tmp_path, "narrator")["state"] == "failed"
        assert report.voices["narrator"].attempts == 1  # not a fault that retrying mends
    assert voice_server.requests == []  # not the checkpoint, not even the clip
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATUS_FILE, LOCK_FILE])
    assert syncer.converge(_manifest(_voice(voice_server, "narrator"))).failed == []
    syncer.close()


def test_a_clip_too_large_is_refused(tmp_path: Path, voice_server: VoiceServer) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * (CLIP_MAX_BYTES + 1))
    dest = tmp_path / "voices"
    syncer = _syncer(dest, voice_server)
    voice = _voice(voice_server, "narrator", clips=[{"local": {"path": str(big)}}])
    report = syncer.converge(_manifest(voice))
    assert f"a clip may have at most {CLIP_MAX_BYTES}" in (report.voices["narrator"].error or "")
    assert list(dest.glob("narrator*")) == [] and _leftovers(dest) == []
    syncer.close()


def test_a_checkpoint_goes_only_with_its_last_voice(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    syncer = _syncer(tmp_path, voice_server, remove_after_s=0.0)
    narrator, guide = _voice(voice_server, "narrator"), _voice(voice_server, "guide")
    assert syncer.converge(_manifest(narrator, guide)).failed == []
    (tmp_path / "narrator.xtts-latents.npz").write_bytes(b"cache")  # as the engine writes
    syncer.converge(_manifest(guide))
    assert [p.name for p in tmp_path.glob("narrator*")] == []
    assert (tmp_path / "XTTS-v2" / "model.pth").is_file()  # guide still speaks with it
    # another source under the same name is refused while guide uses that checkpoint
    other = _voice(voice_server, "narrator", {"name": "XTTS-v2", **_url_checkpoint(
        voice_server)})
    report = syncer.converge(_manifest(guide, other))
    assert "and is used by guide;" in (report.voices["narrator"].error or "")
    syncer.converge(_manifest())
    assert find_voice_entries(tmp_path) == []
    assert not (tmp_path / "XTTS-v2").exists()
    # a checkpoint someone else put there is used, and never deleted
    hand = tmp_path / "hand"
    hand.mkdir()
    for name in CHECKPOINT_FILES:
        (hand / name).write_bytes(CHECKPOINT[name])
    voice_server.requests.clear()
    placed = _voice(voice_server, "narrator", {"name": "hand", "huggingFace": {}})
    assert syncer.converge(_manifest(placed)).failed == []
    assert _gets(voice_server, "/model.pth") == 0
    syncer.converge(_manifest())
    assert sorted(p.name for p in hand.iterdir()) == sorted(CHECKPOINT_FILES)
    syncer.close()


def test_voices_list_engine_xtts(tmp_path: Path, voice_server: VoiceServer) -> None:
    syncer = _syncer(tmp_path, voice_server)
    assert syncer.converge(_manifest(_voice(voice_server, "narrator", languages=["fr"]))
                           ).failed == []
    syncer.close()
    env = dict(os.environ)
    table = subprocess.run([*CHORUS, "voices", "list", "--engine", "xtts", "--dest",
                            str(tmp_path)], capture_output=True, text=True, timeout=120,
                           env=env, check=False)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "LANGUAGES", "CHECKPOINT", "CLIPS", "SIZE", "STATE"]
    assert lines[1].split()[:4] == ["narrator", "en,fr", "XTTS-v2", "1"]
    assert lines[1].split()[-1] == "installed"
    assert "CPML" in table.stderr and LICENSE_URL in table.stderr
    listed = subprocess.run([*CHORUS, "voices", "list", "--engine", "xtts", "--json",
                             "--language", "fr", "--dest", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, env=env, check=False)
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["checkpoint"], row["origin"], row["state"]) == (
        "narrator", "XTTS-v2", "manifest", "installed")
    assert row["sha256"] == _sha(CLIPS["narrator"])


def test_voices_sync_refuses_an_unaccepted_licence_and_a_piper_shaped_source(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    """``chorus voices sync --manifest``, which no API server validates, holds the same
    rules: the licence refusal is a failed required voice, a wrong shape a bad manifest."""
    _serve(voice_server)
    manifest, dest = tmp_path / "manifest.json", tmp_path / "voices"
    voice = _voice(voice_server, "narrator", accept=False)
    manifest.write_text(json.dumps({"version": 1, "voices": [voice]}))
    run = [*CHORUS, "voices", "sync", "--manifest", str(manifest), "--dest", str(dest),
           "--once", "--hf-endpoint", voice_server.base]
    refused = subprocess.run(run, capture_output=True, text=True, timeout=120,
                             env=dict(os.environ), check=False)
    assert refused.returncode == 1
    assert "required voice narrator failed" in refused.stderr
    assert "acceptLicense: CPML" in refused.stderr and LICENSE_URL in refused.stderr
    assert voice_server.requests == []
    voice["source"]["xtts"]["acceptLicense"] = "CPML"
    manifest.write_text(json.dumps({"version": 1, "voices": [voice]}))
    accepted = subprocess.run(run, capture_output=True, text=True, timeout=120,
                              env=dict(os.environ), check=False)
    assert accepted.returncode == 0, accepted.stderr
    assert XttsEntry.read(dest / "narrator.xtts.json").origin == "manifest"
    manifest.write_text(json.dumps({"version": 1, "voices": [
        {**voice, "source": {"huggingFace": {}}}]}))
    wrong = subprocess.run(run, capture_output=True, text=True, timeout=120,
                           env=dict(os.environ), check=False)
    assert wrong.returncode != 0
    assert "engine 'xtts' needs source.xtts" in wrong.stderr
