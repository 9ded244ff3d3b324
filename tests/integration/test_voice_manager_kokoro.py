"""The voice manager installing Kokoro voices from a loopback hub and URLs.

A Kokoro voice is a shared model plus its own style vectors: the files must land
verified and atomic like a Piper voice's, the entry the server reads last, and two
voices naming the same model must share one file that outlives either's removal while
the other needs it. The bytes are small stand-ins: the voice manager never reads them
as a model (the server does, in ``test_kokoro.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from chorus.common.kokoro import STYLE_BYTES, V1_VOICES, voice_gender, voice_language
from chorus.common.layout import TEMP_PREFIX, VoiceEntry, find_voice_entries
from chorus.common.manifest import Manifest, parse_manifest
from chorus.common.voice_status import STATUS_FILE
from chorus.voice_manager.kokoro import model_name
from chorus.voice_manager.sources import FetchSettings
from chorus.voice_manager.sync import SyncSettings, VolumeSyncer
from tests.conftest import CHORUS
from tests.integration.voice_servers import ServedFile, VoiceServer
from tests.kokoro_files import VOICES_DIR

MODEL = b"kokoro model " * 1000
MODEL_2 = b"another kokoro model " * 1000
STYLES = {name: (np.arange(4 * 256, dtype="<f4").reshape(4, 256) * (i + 1)).tobytes()
          for i, name in enumerate(("af_heart", "bm_george", "ff_siwis"))}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _serve(server: VoiceServer) -> None:
    """Kokoro files at hub paths (``onnx/...``, ``voices/...``) and plain URLs."""
    server.files["onnx/model_quantized.onnx"] = ServedFile(MODEL)
    server.files["files/model.onnx"] = ServedFile(MODEL)
    server.files["files/model2.onnx"] = ServedFile(MODEL_2)
    for name, data in STYLES.items():
        server.files[f"voices/{name}.bin"] = ServedFile(data)
        server.files[f"files/{name}.bin"] = ServedFile(data)


def _syncer(dest: Path, server: VoiceServer, **settings: Any) -> VolumeSyncer:
    _serve(server)
    fetch = FetchSettings(timeout_s=5.0, hf_endpoint=server.base)
    return VolumeSyncer(dest, SyncSettings(fetch=fetch, backoff_s=0.0, **settings),
                        sleep=lambda _: None)


def _hub_voice(name: str, model: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "engine": "kokoro", "source": {"kokoro": {
        "model": model or {"huggingFace": {"path": "onnx/model_quantized.onnx"}},
        "style": {"huggingFace": {"path": f"voices/{name}.bin"}}}}}


def _url_model(server: VoiceServer, path: str = "model.onnx",
               data: bytes = MODEL) -> dict[str, Any]:
    return {"url": {"url": server.url(path), "sha256": _sha(data)}}


def _manifest(*voices: dict[str, Any]) -> Manifest:
    return parse_manifest({"version": 1, "voices": list(voices)})


def _entry(dest: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((dest / f"{name}.kokoro.json").read_text())
    return data


def _models(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.glob("kokoro-*.onnx"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHORUS, "voices", *args], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ), check=False)


def _gets(server: VoiceServer, suffix: str) -> int:
    return sum(1 for method, path in server.requests if method == "GET" and path.endswith(suffix))


def test_hub_voices_share_one_model_and_the_server_finds_them(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    syncer = _syncer(tmp_path, voice_server)
    report = syncer.converge(_manifest(_hub_voice("af_heart"), _hub_voice("bm_george")))
    assert report.failed == []
    assert _models(tmp_path) == [model_name(_sha(MODEL))]
    assert (tmp_path / model_name(_sha(MODEL))).read_bytes() == MODEL
    for name in ("af_heart", "bm_george"):
        assert _entry(tmp_path, name) == {"model": model_name(_sha(MODEL)),
                                          "style": f"{name}.style.bin"}
        assert (tmp_path / f"{name}.style.bin").read_bytes() == STYLES[name]
    assert find_voice_entries(tmp_path) == [
        VoiceEntry(n, "kokoro", tmp_path / f"{n}.kokoro.json") for n in ("af_heart", "bm_george")]
    status = json.loads((tmp_path / STATUS_FILE).read_text())["voices"]["af_heart"]
    assert status["state"] == "installed"
    assert status["sha256"] == {"model": _sha(MODEL), "config": _sha(STYLES["af_heart"])}
    assert status["bytes"] == len(MODEL) + len(STYLES["af_heart"])
    assert [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)] == []
    requests = len(voice_server.requests)
    assert syncer.converge(_manifest(_hub_voice("af_heart"), _hub_voice("bm_george"))
                           ).failed == []
    assert len(voice_server.requests) == requests  # installed: nothing fetched again
    syncer.close()


def test_a_pinned_model_already_there_is_not_fetched_again(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    syncer = _syncer(tmp_path, voice_server, parallel=1)
    model = _url_model(voice_server)
    report = syncer.converge(_manifest(*(_hub_voice(n, model) for n in STYLES)))
    assert report.failed == []
    assert _gets(voice_server, "/files/model.onnx") == 1
    assert _models(tmp_path) == [model_name(_sha(MODEL))]
    syncer.close()


def test_a_wrong_file_installs_nothing_and_keeps_the_old_voice(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    syncer = _syncer(tmp_path, voice_server)
    assert syncer.converge(_manifest(_hub_voice("af_heart"))).failed == []
    before = _entry(tmp_path, "af_heart")
    voice_server.fault("files/af_heart.bin", "wrong")
    changed = _hub_voice("af_heart")
    changed["source"]["kokoro"]["style"] = {"url": {"url": voice_server.url("af_heart.bin"),
                                                    "sha256": _sha(STYLES["af_heart"])}}
    report = syncer.converge(_manifest(changed))
    assert report.failed == ["af_heart"]
    assert "sha256 mismatch" in (report.voices["af_heart"].error or "")
    assert _entry(tmp_path, "af_heart") == before
    assert (tmp_path / "af_heart.style.bin").read_bytes() == STYLES["af_heart"]
    assert [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)] == []
    syncer.close()


def test_a_model_is_removed_only_when_no_voice_names_it(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    syncer = _syncer(tmp_path, voice_server, remove_after_s=0.0)
    shared = _manifest(_hub_voice("af_heart"), _hub_voice("bm_george"))
    assert syncer.converge(shared).failed == []
    syncer.converge(_manifest(_hub_voice("bm_george")))
    assert not (tmp_path / "af_heart.kokoro.json").exists()
    assert not (tmp_path / "af_heart.style.bin").exists()
    assert _models(tmp_path) == [model_name(_sha(MODEL))]  # bm_george still needs it
    # bm_george moves to another model: the first one has no voice left
    moved = _hub_voice("bm_george", _url_model(voice_server, "model2.onnx", MODEL_2))
    assert syncer.converge(_manifest(moved)).failed == []
    assert _models(tmp_path) == [model_name(_sha(MODEL_2))]
    assert _entry(tmp_path, "bm_george")["model"] == model_name(_sha(MODEL_2))
    syncer.converge(_manifest())
    assert _models(tmp_path) == []
    assert find_voice_entries(tmp_path) == []
    syncer.close()


def test_local_files_keep_the_style_format(tmp_path: Path, voice_server: VoiceServer) -> None:
    source = tmp_path / "baked"
    source.mkdir()
    (source / "model.onnx").write_bytes(MODEL)
    style = np.frombuffer(STYLES["ff_siwis"], dtype="<f4").reshape(-1, 1, 256)
    np.save(source / "ff_siwis.npy", style)
    dest = tmp_path / "voices"
    syncer = _syncer(dest, voice_server)
    voice: dict[str, Any] = {"name": "ff_siwis", "engine": "kokoro", "source": {"kokoro": {
        "model": {"local": {"path": str(source / "model.onnx"), "sha256": _sha(MODEL)}},
        "style": {"local": {"path": str(source / "ff_siwis.npy")}}}}}
    assert syncer.converge(_manifest(voice)).failed == []
    assert _entry(dest, "ff_siwis") == {"model": model_name(_sha(MODEL)),
                                        "style": "ff_siwis.style.npy"}
    assert np.array_equal(np.load(dest / "ff_siwis.style.npy"), style)
    wrong = {**voice, "source": {"kokoro": {
        "model": {"local": {"path": str(source / "model.onnx"), "sha256": "0" * 64}},
        "style": voice["source"]["kokoro"]["style"]}}}
    (dest / model_name(_sha(MODEL))).unlink()
    report = syncer.converge(_manifest(wrong))
    assert "sha256 mismatch" in (report.voices["ff_siwis"].error or "")
    syncer.close()


def test_voices_list_engine_kokoro(tmp_path: Path, voice_server: VoiceServer) -> None:
    syncer = _syncer(tmp_path, voice_server)
    assert syncer.converge(_manifest(_hub_voice("bm_george"))).failed == []
    syncer.close()
    (tmp_path / "my_voice.kokoro.json").write_text(json.dumps(
        {"model": model_name(_sha(MODEL)), "style": "bm_george.style.bin"}))

    table = _run("list", "--engine", "kokoro", "--dest", str(tmp_path))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "LANGUAGE", "GENDER", "INSTALLED"]
    assert len(lines) == 1 + len(V1_VOICES) == 55
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["bm_george"] == ["en_GB", "male", "installed"]
    assert rows["af_heart"] == ["en_US", "female"]
    assert rows["zm_yunxi"] == ["zh_CN", "male"]
    assert rows["jf_alpha"] == ["ja_JP", "female"]

    spanish = _run("list", "--engine", "kokoro", "--language", "es", "--json")
    assert [r["name"] for r in json.loads(spanish.stdout)] == ["ef_dora", "em_alex", "em_santa"]

    installed = _run("list", "--engine", "kokoro", "--installed", "--json",
                     "--dest", str(tmp_path))
    by_name = {r["name"]: r for r in json.loads(installed.stdout)}
    assert set(by_name) == {"bm_george", "my_voice"}
    assert by_name["bm_george"]["state"] == "installed"
    assert by_name["bm_george"]["bytes"] == len(MODEL) + len(STYLES["bm_george"])
    assert by_name["bm_george"]["sha256"] == _sha(STYLES["bm_george"])
    assert (by_name["my_voice"]["state"], by_name["my_voice"]["inCatalog"]) == (
        "unmanaged", False)

    piper = _run("list", "--dest", str(tmp_path), "--installed", "--json")
    assert piper.returncode == 0, piper.stderr
    assert json.loads(piper.stdout) == []  # Kokoro voices are no Piper voices
    assert "en_US-joe-medium" in _run("list").stdout  # the hub catalog as before


def test_the_v1_voices_are_kokoro_js_voices_and_their_names_parse() -> None:
    assert len(V1_VOICES) == len(set(V1_VOICES)) == 54
    assert all(voice_language(n) and voice_gender(n) for n in V1_VOICES)
    if VOICES_DIR.is_dir():
        assert sorted(p.stem for p in VOICES_DIR.glob("*.bin")) == sorted(V1_VOICES)
        assert {p.stat().st_size for p in VOICES_DIR.glob("*.bin")} == {STYLE_BYTES}
    assert (voice_language("my_voice"), voice_gender("af")) == (None, None)
