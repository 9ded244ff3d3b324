"""``operator/render_files.py`` and ``chorus render``: the operator's rendering offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from chorus.cli.main import main
from chorus.common.manifest import load_manifest
from chorus.operator.render import (
    RenderSettings,
)
from chorus.operator.render_files import render_files
from tests.unit.operator_specs import (
    BASE_SPEC,
    EXAMPLES,
    JOE,
    THORSTEN,
)

# --- chorus render ------------------------------------------------------------------------------


def _render_cli(capsys: pytest.CaptureFixture[str], *files: str) -> tuple[int, list[Any], str]:
    argv = ["render", "--namespace", "voices"]
    for name in files:
        argv += ["-f", str(EXAMPLES / name)]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, [d for d in yaml.safe_load_all(out) if d is not None], err


@pytest.mark.usefixtures("clean_env")
def test_chorus_render_multilingual(capsys: pytest.CaptureFixture[str]) -> None:
    code, docs, err = _render_cli(capsys, "service-multilingual.yaml")
    assert (code, err) == (0, "")
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service",
                                         "HorizontalPodAutoscaler", "PodDisruptionBudget",
                                         "PodMonitor"]
    assert {d["metadata"]["namespace"] for d in docs} == {"voices"}
    manifest = load_manifest(docs[0]["data"]["manifest.json"])
    assert {v.name: v.required for v in manifest.voices} == {
        THORSTEN: False, "en_US-joe-medium": True, "fr_FR-siwis-medium": False}
    assert json.loads(docs[0]["data"]["server.json"])["openai-voice"] == [
        f"alloy={JOE}", f"nova={THORSTEN}"]
    assert docs[3]["spec"]["minReplicas"] == 2 and docs[3]["spec"]["maxReplicas"] == 5


@pytest.mark.usefixtures("clean_env")
def test_chorus_render_needs_the_voices(capsys: pytest.CaptureFixture[str]) -> None:
    code, docs, err = _render_cli(capsys, "service-simple.yaml")
    assert code == 1
    assert docs == []
    assert "no TTSVoice named en-us-amy-medium" in err
    assert "defaultVoice 'en_US-amy-medium' is not among the selected voices" in err


@pytest.mark.usefixtures("clean_env")
def test_chorus_render_simple_with_its_voice(capsys: pytest.CaptureFixture[str]) -> None:
    code, docs, err = _render_cli(capsys, "service-simple.yaml", "voice-amy.yaml")
    assert (code, err) == (0, "")
    assert [d["kind"] for d in docs] == ["ConfigMap", "PersistentVolumeClaim", "Deployment",
                                         "Service"]


def test_render_files_reports_bad_objects(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all([
        {"apiVersion": "tts.chorus.dev/v1alpha1", "kind": "TTSService",
         "metadata": {"name": "Bad_Name"}, "spec": BASE_SPEC},
        {"apiVersion": "tts.chorus.dev/v1alpha1", "kind": "TTSVoice",
         "metadata": {"name": "broken"}, "spec": {"voice": "../x", "source": {"local": {
             "path": "/v"}}}},
    ]))
    out, problems = render_files([path], "default", RenderSettings())
    assert out == ""
    assert any("TTSService default/Bad_Name" in p and "DNS label" in p for p in problems)
    assert any("TTSVoice default/broken" in p and "unsafe voice key" in p for p in problems)
    out, problems = render_files([EXAMPLES / "voice-amy.yaml"], "default", RenderSettings())
    assert problems == ["no TTSService in the given files"]
