"""Shared building blocks for the operator's unit tests: specs, voices, rendering, and
getters that reach into the rendered children, plus status observations.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chorus.common.voice_status import VoiceStatus, VolumeStatus
from chorus.operator.models import (
    ServiceSpec,
    VoiceResource,
    parse_service,
    parse_voice,
)
from chorus.operator.render import (
    CHECKSUM_ANNOTATION,
    RenderSettings,
    build_children,
    select_voices,
)
from chorus.operator.status import (
    PodReport,
    ServiceObservation,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
NS = "tts"
NAME = "speech"
AMY = "en_US-amy-medium"
JOE = "en_US-joe-medium"
THORSTEN = "de_DE-thorsten-medium"
SHA_A = "a" * 64
SHA_B = "b" * 64
OLD = "2020-01-01T00:00:00Z"

Children = dict[str, dict[str, Any] | None]
Getter = Callable[[Children], object]


# --- building blocks ---------------------------------------------------------------


def voice_body(name: str, key: str, labels: dict[str, str] | None = None,
               **spec: Any) -> dict[str, Any]:
    """A TTSVoice object as the API returns it; ``spec`` keys replace the defaults."""
    return {"apiVersion": "tts.chorus.dev/v1alpha1", "kind": "TTSVoice",
            "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
            "spec": {"voice": key, "source": {"huggingFace": {}}, **spec}}


def voice(name: str, key: str, labels: dict[str, str] | None = None,
          **spec: Any) -> VoiceResource:
    return parse_voice(voice_body(name, key, labels, **spec))


def voices(**amy_spec: Any) -> list[VoiceResource]:
    """amy (en, home), joe (en), thorsten (de, home); ``amy_spec`` changes amy's spec."""
    return [voice("amy", AMY, {"lang": "en", "tier": "home"}, **amy_spec),
            voice("joe", JOE, {"lang": "en"}),
            voice("thorsten", THORSTEN, {"lang": "de", "tier": "home"})]


BASE_SPEC: dict[str, Any] = {"defaultVoice": AMY, "voices": {"names": ["amy", "joe"]}}
EMPTY = {"storage": {"type": "EmptyDir"}}
URL = {"model": "https://example.org/v.onnx", "config": "https://example.org/v.onnx.json"}
SHA: dict[str, str] = {"model": SHA_A, "config": SHA_B}
KOKORO_SOURCE: dict[str, Any] = {
    "model": {"huggingFace": {"path": "onnx/model_quantized.onnx"}},
    "style": {"local": {"path": "/opt/styles/af_heart.bin"}}}
"""A Kokoro voice's source: the model from the default repo, the style from a file."""
KOKORO_FILES: dict[str, dict[str, str]] = {
    "huggingFace": {"path": "onnx/model.onnx", "repo": "me/kokoro", "revision": "v1.0",
                    "sha256": SHA_A},
    "url": {"url": "https://example.org/kokoro.onnx", "sha256": SHA_B},
    "local": {"path": "/opt/kokoro/model.onnx", "sha256": SHA_A}}
"""One file's source of each kind, every key set to a value other than its default."""
XTTS_SOURCE: dict[str, Any] = {
    "clips": [{"url": {"url": "https://example.org/narrator.wav", "sha256": SHA_A}}],
    "language": "en", "checkpoint": {"huggingFace": {}}, "acceptLicense": "CPML"}
"""An XTTS voice's source: one clip at a URL, the checkpoint from the default repo."""
XTTS_CLIP_FILES: dict[str, dict[str, str]] = {
    "huggingFace": {"path": "clips/narrator.wav", "repo": "me/clips", "revision": "v1.0",
                    "sha256": SHA_A},
    "url": {"url": "https://example.org/narrator.flac", "sha256": SHA_B},
    "local": {"path": "/opt/clips/narrator.wav", "sha256": SHA_A}}
"""One clip's source of each kind, every key set (a hub clip names its repo)."""
XTTS_URL_CHECKPOINT: dict[str, dict[str, str]] = {
    key: {"url": f"https://example.org/xtts/{name}", "sha256": sha}
    for key, name, sha in (("config", "config.json", SHA_A), ("model", "model.pth", SHA_B),
                           ("vocab", "vocab.json", SHA_A),
                           ("speakers", "speakers_xtts.pth", SHA_B))}
"""A checkpoint's files at URLs, the optional speakers file included."""


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: dicts merge, anything else (lists included) replaces."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def service(patch: dict[str, Any] | None = None) -> ServiceSpec:
    return parse_service({"spec": merge(BASE_SPEC, patch or {})})


def render(patch: dict[str, Any] | None = None, voice_list: list[VoiceResource] | None = None,
           settings: RenderSettings | None = None) -> Children:
    spec = service(patch)
    selection = select_voices(spec, voices() if voice_list is None else voice_list)
    return build_children(NAME, NS, spec, selection, settings or RenderSettings())


def obj(children: Children, role: str) -> dict[str, Any]:
    found = children[role]
    assert found is not None, f"no {role} rendered"
    return found


def deployment_spec(children: Children) -> dict[str, Any]:
    spec: dict[str, Any] = obj(children, "deployment")["spec"]
    return spec


def template(children: Children) -> dict[str, Any]:
    tpl: dict[str, Any] = deployment_spec(children)["template"]
    return tpl


def pod(children: Children) -> dict[str, Any]:
    spec: dict[str, Any] = template(children)["spec"]
    return spec


def container(children: Children, name: str) -> dict[str, Any]:
    spec = pod(children)
    return next(c for c in [*spec["initContainers"], *spec["containers"]] if c["name"] == name)


def server(children: Children) -> dict[str, Any]:
    return container(children, "server")


def manager(children: Children) -> dict[str, Any]:
    return container(children, "voice-manager")


def init(children: Children) -> dict[str, Any]:
    return container(children, "voice-manager-init")


def arg(cont: dict[str, Any], flag: str) -> str | None:
    args: list[str] = cont["args"]
    return args[args.index(flag) + 1] if flag in args else None


def env(cont: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((e for e in cont.get("env", []) if e["name"] == name), None)


def cport(cont: dict[str, Any], name: str) -> int | None:
    return next((p["containerPort"] for p in cont.get("ports", []) if p["name"] == name), None)


def sport(children: Children, name: str) -> int | None:
    ports = obj(children, "service")["spec"]["ports"]
    return next((p["port"] for p in ports if p["name"] == name), None)


def volume(children: Children, name: str) -> dict[str, Any]:
    return next(v for v in pod(children)["volumes"] if v["name"] == name)


def settings_json(children: Children) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(obj(children, "configmap")["data"]["server.json"])
    return data


def manifest_voices(children: Children) -> dict[str, dict[str, Any]]:
    data = json.loads(obj(children, "configmap")["data"]["manifest.json"])
    return {v["name"]: v for v in data["voices"]}


def checksum(children: Children) -> str:
    value: str = template(children)["metadata"]["annotations"][CHECKSUM_ANNOTATION]
    return value


MISSING = object()


def attempt(get: Getter, children: Children) -> object:
    """``get(children)``, or MISSING where the baseline has no such thing."""
    try:
        return get(children)
    except (KeyError, StopIteration, AssertionError, IndexError, TypeError):
        return MISSING


def case(path: str, patch: dict[str, Any], get: Getter, expected: object) -> Any:
    return pytest.param(patch, get, expected, id=path)


# --- status -------------------------------------------------------------------------------------


def report(pod_name: str, **states: VoiceStatus) -> PodReport:
    return PodReport(pod_name, VolumeStatus(dict(states)))


def installed(size: int = 63_200_000) -> VoiceStatus:
    return VoiceStatus("installed", bytes=size, sha256_model=SHA_A, sha256_config=SHA_B)


def observe(**changes: Any) -> ServiceObservation:
    spec = service()
    fields: dict[str, Any] = {
        "name": NAME, "namespace": NS, "generation": 4, "default_voice": AMY,
        "http_port": 5000, "selection": select_voices(spec, voices()),
        "deployment": {"metadata": {"generation": 2}, "spec": {"replicas": 2},
                       "status": {"observedGeneration": 2, "readyReplicas": 2,
                                  "updatedReplicas": 2}}}
    fields.update(changes)
    return ServiceObservation(**fields)


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def brief(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {t: (c["status"], c["reason"]) for t, c in conds(status).items()}
