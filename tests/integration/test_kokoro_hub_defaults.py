"""A Kokoro TTSVoice that names only its files' paths, installed from the hub's defaults.

The shortest Kokoro ``TTSVoice``, the one ``docs/voices.md`` shows for ``af_heart`` (read
from that page, with the manifest entry shown beside it), gives the model's and the
style's paths and nothing else: repo and revision default to
``onnx-community/Kokoro-82M-v1.0-ONNX`` at ``main``. Here it goes the whole way a cluster
takes it: the operator's model parses it into the manifest entry it renders (the same
entry as ``examples/voice-kokoro.yaml``'s, which spells the defaults out), ``chorus
voices sync --once`` (the init container's command) installs it with ``HF_ENDPOINT``
pointing at a loopback hub, and ``chorus serve`` speaks the installed voice at 24 kHz.

The hub serves the files only at the default repo's URLs and answers the way
huggingface.co does for LFS files (``VoiceServer.lfs_redirects``): a 302 to a CDN whose
``X-Linked-*`` headers carry the sha256 and size. Its bytes are Kokoro's real files
(:mod:`tests.kokoro_files`): ``af_heart.bin`` is the very style file the repo holds at
``voices/af_heart.bin`` (kokoro-js downloads from there), while the model at
``onnx/model_quantized.onnx`` is kokoro-onnx's int8 export of the same Kokoro-82M v1.0,
standing in for the repo's own quantized export.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from wyoming.audio import AudioStart
from wyoming.tts import Synthesize, SynthesizeVoice

from chorus.common.manifest import DEFAULT_KOKORO_REPO, Manifest, parse_manifest
from chorus.common.voice_status import STATUS_FILE
from chorus.operator.models import VoiceResource
from chorus.voice_manager.kokoro import model_name
from tests.conftest import CHORUS, REPO, ServerProcess, pcm_of, read_until
from tests.integration.voice_servers import COMMIT, ServedFile, VoiceServer
from tests.kokoro_files import KOKORO_MISSING, VOICES_DIR, join_model, kokoro_installed

pytestmark = pytest.mark.skipif(not kokoro_installed(), reason=KOKORO_MISSING)

MODEL_PATH = "onnx/model_quantized.onnx"
STYLE_PATH = "voices/af_heart.bin"
SECTION = "#### From Hugging Face with the defaults"


def _documented(language: str) -> str:
    """The first ``language`` code block of that section of docs/voices.md."""
    page = (REPO / "docs" / "voices.md").read_text()
    section = page[page.index(SECTION):]
    found = re.search(rf"^```{language}\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert found is not None, f"no {language} block under {SECTION!r} in docs/voices.md"
    return found.group(1)


def _resource(doc: dict[str, Any]) -> VoiceResource:
    return VoiceResource.model_validate({"name": doc["metadata"]["name"],
                                         "namespace": "default", "spec": doc["spec"]})


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_shortest_kokoro_voice_installs_from_the_default_hub_paths_and_speaks(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    shortest = _resource(yaml.safe_load(_documented("yaml"))).spec.manifest_entry(
        required=True)
    entry = json.loads(_documented("json"))
    assert parse_manifest({"version": 1, "voices": [entry]}).voices == (shortest,)
    urls = _documented("text").split()
    assert urls == [f"https://huggingface.co/{DEFAULT_KOKORO_REPO}/resolve/main/{path}"
                    for path in (MODEL_PATH, STYLE_PATH)]
    examples = [d for d in yaml.safe_load_all(
        (REPO / "examples" / "voice-kokoro.yaml").read_text()) if d]
    spelled_out = _resource(next(d for d in examples if d["spec"]["voice"] == "af_heart"))
    assert spelled_out.spec.manifest_entry(required=True) == shortest
    manifest = tmp_path / "manifest.json"
    manifest.write_text(Manifest((shortest,)).to_json())
    assert json.loads(manifest.read_text())["voices"][0]["source"] == {"kokoro": {
        part: {"huggingFace": {"path": path, "repo": DEFAULT_KOKORO_REPO, "revision": "main"}}
        for part, path in (("model", MODEL_PATH), ("style", STYLE_PATH))}}

    model = join_model(tmp_path).read_bytes()
    style = (VOICES_DIR / "af_heart.bin").read_bytes()
    voice_server.lfs_redirects = True
    voice_server.files[MODEL_PATH] = ServedFile(model)
    voice_server.files[STYLE_PATH] = ServedFile(style)
    dest = tmp_path / "voices"
    sync = subprocess.run(
        [*CHORUS, "voices", "sync", "--manifest", str(manifest), "--dest", str(dest), "--once",
         "--only-required"], capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "HF_ENDPOINT": voice_server.base})
    assert sync.returncode == 0, sync.stdout + sync.stderr

    resolve = f"/{DEFAULT_KOKORO_REPO}/resolve"
    assert voice_server.requests == [
        ("HEAD", f"{resolve}/main/{MODEL_PATH}"), ("GET", f"{resolve}/{COMMIT}/{MODEL_PATH}"),
        ("GET", f"/cdn/{MODEL_PATH}"),
        ("HEAD", f"{resolve}/main/{STYLE_PATH}"), ("GET", f"{resolve}/{COMMIT}/{STYLE_PATH}"),
        ("GET", f"/cdn/{STYLE_PATH}")]
    stored = model_name(_sha(model))
    assert json.loads((dest / "af_heart.kokoro.json").read_text()) == {
        "model": stored, "style": "af_heart.style.bin"}
    assert (dest / stored).read_bytes() == model
    assert (dest / "af_heart.style.bin").read_bytes() == style
    status = json.loads((dest / STATUS_FILE).read_text())["voices"]["af_heart"]
    assert status["state"] == "installed", status
    assert status["sha256"] == {"model": _sha(model), "config": _sha(style)}

    server = ServerProcess(["--voices-dir", str(dest), "--no-http", "--no-embedded-voice"],
                           tmp_path / "server.log")
    try:
        start, pcm = asyncio.run(_speak(server, "Good morning, the coffee is ready."))
    finally:
        assert server.terminate() == 0, server.output()
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    assert 1.0 < len(pcm) / start.rate < 8.0, len(pcm)
    assert (np.abs(pcm.astype(np.float32)) > 1000).mean() > 0.1


async def _speak(server: ServerProcess, text: str) -> tuple[AudioStart, np.ndarray[Any, Any]]:
    async with server.client() as client:
        await client.write_event(Synthesize(text, voice=SynthesizeVoice("af_heart")).event())
        events = await read_until(client, "audio-stop", limit=120)
    assert events[0].type == "audio-start", [e.type for e in events]
    return AudioStart.from_event(events[0]), np.frombuffer(pcm_of(events), dtype=np.int16)
