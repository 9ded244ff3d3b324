"""Schemas against each other: rendered objects vs Kubernetes, examples vs CRDs, CRDs vs models.

* Every rendered object validates strictly (unknown fields refused) against the
  Kubernetes 1.30 schemas and the newest ones ``kubernetes-validate`` ships.
* The CRDs are valid CustomResourceDefinitions and structural schemas.
* Example CRs validate against the CRD schemas (``jsonschema``) and their CEL rules
  (``celpy``, after applying the CRD defaults as the API server does); crafted invalid
  specs fail with the rule's message, and the operator's models refuse them too.
* CRD property names, required fields, enums, types, bounds and defaults equal the
  pydantic models', and for a voice's ``source`` and ``sha256`` the manifest's records
  (``chorus.common.manifest``, the one definition of a voice source), so none can drift.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema  # type: ignore[import-untyped, unused-ignore]
import kubernetes_validate  # type: ignore[import-untyped, unused-ignore]
import pytest
import yaml
from annotated_types import Ge, Gt, Le
from celpy.adapter import json_to_cel
from celpy.celtypes import BoolType
from celpy.evaluation import CELEvalError
from kubernetes_validate import utils as kv_utils  # type: ignore[import-untyped, unused-ignore]
from pydantic import BaseModel

from chorus.common.manifest import (
    SOURCE_KINDS,
    SOURCE_RECORDS,
    XTTS_CHECKPOINT_KINDS,
    XTTS_URL_FILES,
    Source,
    json_keys,
    license_refusal,
    parse_source,
)
from chorus.common.xtts import DEFAULT_CHECKPOINT, LANGUAGES, LICENSE_NAME, MAX_CLIPS
from chorus.operator.models import ServiceSpec, SpecError, Voice, parse_service, parse_voice
from chorus.operator.render import RenderSettings
from chorus.operator.render_files import render_files
from chorus.operator.status import PodReport, service_status, voice_status
from tests.unit.operator_specs import (
    AMY,
    BASE_SPEC,
    JOE,
    KOKORO_FILES,
    KOKORO_SOURCE,
    SHA_A,
    SHA_B,
    URL,
    XTTS_CLIP_FILES,
    XTTS_SOURCE,
    XTTS_URL_CHECKPOINT,
    installed,
    observe,
    render,
    report,
    voices,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
NEWEST = kv_utils.major_minor(kv_utils.latest_version())
K8S_VERSIONS = ["1.30", NEWEST]


def _load_crd(name: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load((REPO / "crds" / name).read_text())
    return crd


CRDS = {"TTSVoice": _load_crd("ttsvoices.yaml"), "TTSService": _load_crd("ttsservices.yaml")}


def root_schema(kind: str) -> dict[str, Any]:
    (version,) = CRDS[kind]["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def spec_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = root_schema(kind)["properties"]["spec"]
    return schema


def example_objects() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in EXAMPLES:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def _example_id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --- representative specs and what they render to --------------------------------------------

MAXIMAL: dict[str, Any] = {
    "defaultVoice": AMY,
    "voices": {"names": ["amy"], "selector": {
        "matchLabels": {"lang": "en"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["home"]},
                             {"key": "lang", "operator": "NotIn", "values": ["fr"]},
                             {"key": "lang", "operator": "Exists"},
                             {"key": "beta", "operator": "DoesNotExist"}]}},
    "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 65},
    "storage": {"type": "PersistentVolumeClaim", "size": "4Gi", "storageClassName": "nfs",
                "accessModes": ["ReadWriteMany"]},
    "server": {
        "image": "registry.example/chorus:1.2", "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"},
                      "limits": {"cpu": 2, "memory": "3Gi"}},
        "workers": 2, "threadsPerWorker": 1, "maxRequests": 32, "voiceMemoryMB": 2048,
        "maxTextChars": 5000, "lengthScale": 1.1, "noiseScale": 0.6, "noiseWScale": 0.8,
        "sentenceSilence": 0.2, "logLevel": "INFO", "wyoming": {"port": 10300},
        "device": "cuda",
        "gpu": {"count": 1, "resourceName": "nvidia.com/gpu",
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                 "effect": "NoSchedule"},
                                {"key": "maintenance", "operator": "Equal", "value": "soon",
                                 "effect": "NoExecute", "tolerationSeconds": 300}]},
        "http": {"enabled": True, "port": 8080,
                 "apiKeySecretRef": {"name": "tts-api", "key": "token"},
                 "openaiVoices": {"alloy": AMY, "echo": JOE}},
        "cache": {"enabled": True, "maxMB": 512}},
    "voiceManager": {"image": "registry.example/chorus-vm:1.2", "imagePullPolicy": "Always",
                     "resources": {"requests": {"cpu": "20m", "memory": "96Mi"},
                                   "limits": {"memory": "256Mi"}},
                     "parallel": 3, "removeAfterSeconds": 120,
                     "hfTokenSecretRef": {"name": "hf", "key": "token"}},
    "service": {"type": "LoadBalancer", "annotations": {"lb.example/internal": "true"}},
    "pod": {
        "annotations": {"prometheus.io/scrape": "true"}, "labels": {"team": "speech"},
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "tts",
                         "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"tts.chorus.dev/service": "speech"}}}}]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway"}],
        "priorityClassName": "speech", "imagePullSecrets": [{"name": "regcred"}]},
    "monitoring": {"port": 9100, "scrapeAnnotations": True, "podMonitor": True,
                   "interval": "1m", "labels": {"release": "kube-prometheus-stack"}},
}

# Patches of the minimal spec (BASE_SPEC: a default voice, two voice names).
RENDER_CASES: dict[str, dict[str, Any] | None] = {
    "minimal": None,
    "http-disabled": {"server": {"http": {"enabled": False}}},
    "cache-disabled": {"server": {"cache": {"enabled": False}}},
    "autoscaling-emptydir": {"autoscaling": {"maxReplicas": 3}, "storage": {"type": "EmptyDir"}},
    "replicas-rwx": {"replicas": 3, "storage": {"accessModes": ["ReadWriteMany"]}},
    "zero-replicas": {"replicas": 0},
    "gpu": {"server": {"gpu": {"count": 2, "resourceName": "nvidia.com/mig-1g.10gb",
                               "tolerations": [{"operator": "Exists"}]}}},
}


def _rendered() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, patch in RENDER_CASES.items():
        for child in render(patch).values():
            if child is not None:
                yield name, child
    maximal = {k: v for k, v in MAXIMAL.items() if k not in BASE_SPEC}
    for child in render({**maximal, "defaultVoice": AMY, "voices": MAXIMAL["voices"]}).values():
        if child is not None:
            yield "maximal", child
    for files in (["service-multilingual.yaml"], ["service-simple.yaml", "voice-amy.yaml"],
                  ["service-gpu.yaml", "voice-amy.yaml"]):
        out, problems = render_files([REPO / "examples" / f for f in files], "default",
                                     RenderSettings())
        assert problems == []
        for doc in yaml.safe_load_all(out):
            if doc is not None:
                yield files[0].removesuffix(".yaml"), doc


RENDERED = list(_rendered())
BUILT_IN = [(case, obj) for case, obj in RENDERED if obj["kind"] != "PodMonitor"]
"""What Kubernetes itself defines a schema for (a PodMonitor is the Prometheus Operator's)."""


def test_the_representative_specs_render_every_kind() -> None:
    kinds = {obj["kind"] for _, obj in RENDERED}
    assert kinds == {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
                     "HorizontalPodAutoscaler", "PodDisruptionBudget", "PodMonitor"}
    assert {name for name, _ in RENDERED} >= {*RENDER_CASES, "maximal", "service-multilingual",
                                              "service-simple", "service-gpu"}


def test_newest_kubernetes_is_newer_than_1_30() -> None:
    assert tuple(int(p) for p in NEWEST.split(".")) > (1, 30)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("case", "obj"), [
    pytest.param(case, obj, id=f"{case}-{obj['kind']}") for case, obj in BUILT_IN])
def test_rendered_objects_validate_strictly(case: str, obj: dict[str, Any], version: str) -> None:
    assert kubernetes_validate.validate(obj, version, strict=True) == version


def test_the_pod_monitor_scrapes_a_port_the_pods_have() -> None:
    """A PodMonitor naming a port its pods lack scrapes nothing, silently: its selector
    must match the pod template and its port name the server's metrics port."""
    (monitor,) = [obj for case, obj in RENDERED
                  if case == "maximal" and obj["kind"] == "PodMonitor"]
    (deployment,) = [obj for case, obj in RENDERED
                     if case == "maximal" and obj["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    assert monitor["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert template["metadata"]["labels"].items() >= monitor["spec"]["selector"][
        "matchLabels"].items()
    server, manager = template["spec"]["containers"]
    ports = {p["name"]: (c["name"], p["containerPort"])
             for c in (server, manager) for p in c["ports"]}
    assert [ports[e["port"]] for e in monitor["spec"]["podMetricsEndpoints"]] == [
        ("server", 9100), ("voice-manager", 9090)]
    assert server["args"][server["args"].index("--metrics-port") + 1] == "9100"
    assert manager["args"][manager["args"].index("--status-port") + 1] == "9090"
    assert all((e["path"], e["interval"]) == ("/metrics", "1m")
               for e in monitor["spec"]["podMetricsEndpoints"])
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) == {"selector", "podMetricsEndpoints"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_strict_validation_refuses_unknown_fields(version: str) -> None:
    deployment = copy.deepcopy(next(o for _, o in RENDERED if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnly"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kind", sorted(CRDS))
def test_crds_are_valid_custom_resource_definitions(kind: str, version: str) -> None:
    assert kubernetes_validate.validate(CRDS[kind], version, strict=True) == version
    crd = CRDS[kind]
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{names['plural']}.{crd['spec']['group']}"
    assert names["kind"] == kind
    assert [v["name"] for v in crd["spec"]["versions"]] == ["v1alpha1"]


# --- CRD schemas as JSON Schema -------------------------------------------------------------


def to_json_schema(node: Any, closed: bool = False) -> Any:
    """An OpenAPI v3 CRD schema as JSON Schema.

    ``x-kubernetes-*`` extensions are dropped (an int-or-string node becomes
    ``integer | string`` where it has no ``anyOf`` of its own). OpenAPI v3.0's boolean
    ``exclusiveMinimum`` (``minimum`` itself refused) becomes JSON Schema's number form.
    ``closed`` refuses unknown properties, as kubectl's strict field validation does
    (instead of pruning).
    """
    if isinstance(node, list):
        return [to_json_schema(item, closed) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub, closed) for name, sub in value.items()}
        else:
            out[key] = to_json_schema(value, closed)
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        out["type"] = ["integer", "string"]
    if node.get("exclusiveMinimum") is True:
        out["exclusiveMinimum"] = out.pop("minimum")
    if (closed and "properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def validator(kind: str, closed: bool = True) -> Any:
    schema = to_json_schema(root_schema(kind), closed)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(obj: dict[str, Any]) -> list[Any]:
    return list(validator(obj["kind"]).iter_errors(obj))


@pytest.mark.parametrize("doc", [pytest.param(d, id=_example_id(d)) for d in example_objects()])
def test_examples_validate_against_the_crd_schemas(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "tts.chorus.dev/v1alpha1"
    assert [e.message for e in schema_errors(doc)] == []
    assert cel_failures(doc) == []
    parse(doc)


def parse(cr: dict[str, Any]) -> object:
    """The operator's own parsing of a TTSVoice or TTSService object."""
    return parse_voice(cr) if cr["kind"] == "TTSVoice" else parse_service(cr)


def _service_cr(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "tts.chorus.dev/v1alpha1", "kind": "TTSService",
            "metadata": {"name": "speech"}, "spec": spec}


def _voice_cr(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "tts.chorus.dev/v1alpha1", "kind": "TTSVoice",
            "metadata": {"name": "amy"}, "spec": spec}


HF_VOICE: dict[str, Any] = {"voice": AMY, "source": {"huggingFace": {}}}
KOKORO_VOICE: dict[str, Any] = {"voice": "af_heart", "engine": "kokoro",
                                "source": {"kokoro": KOKORO_SOURCE}}
XTTS_VOICE: dict[str, Any] = {"voice": "narrator", "engine": "xtts",
                              "source": {"xtts": XTTS_SOURCE}}


def _xtts(**changes: Any) -> dict[str, Any]:
    """An XTTS voice's spec whose ``source.xtts`` has ``changes``."""
    return {**XTTS_VOICE, "source": {"xtts": {**XTTS_SOURCE, **changes}}}

MAXIMAL_VOICES = [
    *({"voice": "af_heart", "engine": "kokoro",
       "source": {"kokoro": {"model": {kind: body}, "style": {kind: body}}}}
      for kind, body in KOKORO_FILES.items()),
    {"voice": AMY, "engine": "piper",
     "source": {"huggingFace": {"repo": "rhasspy/piper-voices", "revision": "v1.0.0",
                                "path": "en/en_US/amy/medium"}},
     "sha256": {"model": SHA_A, "config": SHA_B}},
    {"voice": AMY, "source": {"url": {**URL, "allowUnverified": False}},
     "sha256": {"model": SHA_A, "config": SHA_B}},
    {"voice": AMY, "source": {"url": {**URL, "allowUnverified": True}}},
    {"voice": AMY, "source": {"local": {"path": "/opt/voices"}}},
    _xtts(clips=[{kind: body} for kind, body in XTTS_CLIP_FILES.items()],
          languages=["en", "fr", "zh-cn"],
          checkpoint={"name": "xtts-v2.0.3", "url": XTTS_URL_CHECKPOINT}),
    _xtts(checkpoint={"name": "mine", "local": {"path": "/opt/xtts"}}),
    _xtts(checkpoint={"huggingFace": {"repo": "me/xtts", "revision": "v2.0.3"}}),
]


def test_maximal_specs_are_valid_everywhere() -> None:
    for cr in [_service_cr(MAXIMAL), *map(_voice_cr, MAXIMAL_VOICES)]:
        assert [e.message for e in schema_errors(cr)] == []
        assert cel_failures(cr) == []
    parse_service(_service_cr(MAXIMAL))
    for spec in MAXIMAL_VOICES:
        parse_voice(_voice_cr(spec))


@pytest.mark.parametrize(("cr", "keyword"), [
    pytest.param(_voice_cr({**HF_VOICE, "engine": "espeak"}), "enum", id="voice-engine-enum"),
    pytest.param(_voice_cr({**KOKORO_VOICE, "source": {"kokoro": {
        **KOKORO_SOURCE, "model": {"url": {"url": "https://example.org/m.onnx"}}}}}),
                 "required", id="kokoro-url-without-sha256"),
    pytest.param(_voice_cr({**KOKORO_VOICE, "source": {"kokoro": {
        "model": KOKORO_SOURCE["model"]}}}), "required", id="kokoro-without-style"),
    pytest.param(_voice_cr({**KOKORO_VOICE, "source": {"kokoro": {
        **KOKORO_SOURCE, "style": {"local": {"path": "/opt/styles/"}}}}}),
                 "pattern", id="kokoro-local-directory"),
    pytest.param(_voice_cr(_xtts(language="xx")), "enum", id="xtts-language-enum"),
    pytest.param(_voice_cr(_xtts(languages=["en", "klingon"])), "enum",
                 id="xtts-languages-enum"),
    pytest.param(_voice_cr(_xtts(clips=[])), "minItems", id="xtts-no-clips"),
    pytest.param(_voice_cr(_xtts(clips=XTTS_SOURCE["clips"] * (MAX_CLIPS + 1))), "maxItems",
                 id="xtts-too-many-clips"),
    pytest.param(_voice_cr(_xtts(acceptLicense="MIT")), "enum", id="xtts-other-licence"),
    pytest.param(_voice_cr(_xtts(clips=[{"huggingFace": {"path": "a.wav"}}])), "required",
                 id="xtts-hub-clip-without-repo"),
    pytest.param(_voice_cr(_xtts(clips=[{"url": {"url": "https://example.org/a.wav"}}])),
                 "required", id="xtts-url-clip-without-sha256"),
    pytest.param(_voice_cr(_xtts(checkpoint={"url": {
        k: v for k, v in XTTS_URL_CHECKPOINT.items() if k != "vocab"}})), "required",
                 id="xtts-url-checkpoint-without-vocab"),
    pytest.param(_voice_cr(_xtts(checkpoint={"local": {"path": "xtts"}})), "pattern",
                 id="xtts-local-checkpoint-relative"),
    pytest.param(_voice_cr(_xtts(checkpoint={"name": "a/b", "huggingFace": {}})), "pattern",
                 id="xtts-checkpoint-name-pattern"),
    pytest.param(_voice_cr({**XTTS_VOICE, "source": {"xtts": {
        k: v for k, v in XTTS_SOURCE.items() if k != "language"}}}), "required",
                 id="xtts-without-language"),
    pytest.param(_voice_cr({**HF_VOICE, "voice": "../x"}), "pattern", id="voice-pattern"),
    pytest.param(_voice_cr({**HF_VOICE, "voice": ""}), "minLength", id="voice-empty"),
    pytest.param(_voice_cr({**HF_VOICE, "voice": "a" * 129}), "maxLength", id="voice-long"),
    pytest.param(_voice_cr({"voice": AMY}), "required", id="voice-no-source"),
    pytest.param(_voice_cr({"source": {"huggingFace": {}}}), "required", id="voice-no-voice"),
    pytest.param(_voice_cr({**HF_VOICE, "sha256": {"model": "ZZ", "config": SHA_B}}), "pattern",
                 id="sha256-pattern"),
    pytest.param(_voice_cr({**HF_VOICE, "sha256": {"model": SHA_A}}), "required",
                 id="sha256-config-required"),
    pytest.param(_voice_cr({"voice": AMY, "source": {"url": {"model": "ftp://x",
                                                             "config": "https://y"}},
                            "sha256": {"model": SHA_A, "config": SHA_B}}), "pattern",
                 id="url-pattern"),
    pytest.param(_voice_cr({"voice": AMY, "source": {"url": {"model": "https://x"}}}),
                 "required", id="url-config-required"),
    pytest.param(_voice_cr({"voice": AMY, "source": {"local": {"path": "relative"}}}),
                 "pattern", id="local-pattern"),
    pytest.param(_voice_cr({"voice": AMY, "source": {"huggingFace": {"repo": "norepo"}}}),
                 "pattern", id="hf-repo-pattern"),
    pytest.param(_voice_cr({"voice": AMY, "source": {"hugging": {}}}), "additionalProperties",
                 id="voice-unknown-field"),
    pytest.param(_voice_cr({"voice": AMY, "source": {"url": {**URL, "allowUnverified": "yes"}}}),
                 "type", id="allow-unverified-type"),
    pytest.param(_service_cr({**BASE_SPEC, "replicas": -1}), "minimum", id="negative-replicas"),
    pytest.param(_service_cr({**BASE_SPEC, "replicas": 101}), "maximum", id="replicas-max"),
    pytest.param(_service_cr({"voices": {"names": ["amy"]}}), "required",
                 id="service-no-default-voice"),
    pytest.param(_service_cr({"defaultVoice": AMY}), "required", id="service-no-voices"),
    pytest.param(_service_cr({**BASE_SPEC, "defaultVoice": "/etc/x"}), "pattern",
                 id="default-voice-pattern"),
    pytest.param(_service_cr({**BASE_SPEC, "voices": {"names": ["Not_A_Name"]}}), "pattern",
                 id="names-pattern"),
    pytest.param(_service_cr({**BASE_SPEC, "storage": {"type": "HostPath"}}), "enum",
                 id="storage-type-enum"),
    pytest.param(_service_cr({**BASE_SPEC, "storage": {"size": "lots"}}), "pattern",
                 id="storage-size-pattern"),
    pytest.param(_service_cr({**BASE_SPEC, "storage": {"accessModes": []}}), "minItems",
                 id="access-modes-empty"),
    pytest.param(_service_cr({**BASE_SPEC, "autoscaling": {"minReplicas": 2}}), "required",
                 id="autoscaling-max-required"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"resources": {"requests": {
        "cpu": "lots"}}}}), "pattern", id="quantity-pattern"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"resources": {"requests": {
        "cpu": 1.5}}}}), "anyOf", id="quantity-float"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"http": {"port": 0}}}), "minimum",
                 id="http-port-min"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"logLevel": "TRACE"}}), "enum",
                 id="log-level-enum"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"workers": 0}}), "minimum",
                 id="workers-min"),
    pytest.param(_service_cr({**BASE_SPEC, "service": {"type": "ExternalName"}}), "enum",
                 id="service-type-enum"),
    pytest.param(_service_cr({**BASE_SPEC, "voices": {"selector": {"matchExpressions": [
        {"key": "a", "operator": "Near"}]}}}), "enum", id="selector-operator-enum"),
    pytest.param(_service_cr({**BASE_SPEC, "pod": {"imagePullSecrets": [{}]}}), "required",
                 id="pull-secret-name-required"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"http": {"apiKeySecretRef": {
        "name": "s"}}}}), "required", id="secret-key-required"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"thread": 2}}), "additionalProperties",
                 id="service-unknown-field"),
])
def test_invalid_crs_fail_the_schema(cr: dict[str, Any], keyword: str) -> None:
    errors = schema_errors(cr)
    assert keyword in {e.validator for e in errors}, [e.message for e in errors]


def test_valid_quantities() -> None:
    for value in (2, "2", "500m", "1.5", "512Mi", "2Gi", "1k"):
        cr = _service_cr({**BASE_SPEC, "server": {"resources": {"limits": {"cpu": value}}}})
        assert schema_errors(cr) == [], value


# --- structural schemas -----------------------------------------------------------------------


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (``[]`` items, ``{}`` map values, ``|n`` anyOf)."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{}}")
    for i, sub in enumerate(node.get("anyOf", [])):
        yield from schema_nodes(sub, f"{path}|{i}")


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_crd_schemas_are_structural(kind: str) -> None:
    for path, node in schema_nodes(root_schema(kind)):
        special = (node.get("x-kubernetes-int-or-string")
                   or node.get("x-kubernetes-preserve-unknown-fields"))
        assert "type" in node or special, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert not isinstance(node.get("items"), list), path
        if "anyOf" in node:
            # value validation only: int-or-string is the one place a type may appear in it
            assert node.get("x-kubernetes-int-or-string"), path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), f"{path} has no items schema"
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "map":
            items = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in items.get("required", []) or "default" in items["properties"][key]
        if list_type == "set":
            assert node["items"].get("type") in ("string", "integer", "number", "boolean"), path
        if "default" in node:
            assert not path.startswith(".metadata"), path
            sub_validator = jsonschema.Draft202012Validator(to_json_schema(node, closed=True))
            assert list(sub_validator.iter_errors(node["default"])) == [], path
        for rule in node.get("x-kubernetes-validations", []):
            assert set(rule) <= {"rule", "message", "messageExpression", "reason",
                                 "fieldPath", "optionalOldSelf"}, path
            assert rule["message"].strip(), path
    root = root_schema(kind)
    assert set(root["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert root["properties"]["metadata"] == {"type": "object"}


# --- statuses fit the status schemas -----------------------------------------------------------


def _statuses() -> Iterator[tuple[str, dict[str, Any]]]:
    both = {AMY: installed(), JOE: installed()}
    yield "TTSService", service_status(observe(reports=(report("p1", **both),)))
    yield "TTSService", service_status(observe(spec_error="bad"))
    yield "TTSService", service_status(observe(http_port=None, deployment=None))
    yield "TTSService", service_status(observe(reports=(PodReport("p1", error="refused"),)))
    yield "TTSVoice", voice_status(AMY, 1, ["speech"], [report("p1", **both)])
    yield "TTSVoice", voice_status(AMY, 1, [], [])
    yield "TTSVoice", voice_status(AMY, 1, ["speech"], [], spec_error="bad")
    yield "TTSVoice", voice_status("narrator", 1, ["speech"], [],
                                   license_refusal="the licence is not accepted")


@pytest.mark.parametrize(("kind", "status"), list(_statuses()))
def test_computed_status_fits_the_status_schema(kind: str, status: dict[str, Any]) -> None:
    schema = to_json_schema(root_schema(kind)["properties"]["status"], closed=True)
    assert [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(status)] == []


# --- CRDs and pydantic models cannot drift ------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    return annotation


_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string", dict: "object",
               tuple: "array"}


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def model_schema_pairs(model: type[BaseModel], schema: dict[str, Any],
                       path: str = "spec") -> Iterator[tuple[str, type[BaseModel],
                                                              dict[str, Any]]]:
    """(path, model, schema node) for the model and every nested one."""
    yield path, model, schema
    for name, info in model.model_fields.items():
        alias = info.alias or name
        sub = schema.get("properties", {}).get(alias)
        if sub is None:
            continue
        kind = _unwrap(info.annotation)
        if _is_model(kind):
            yield from model_schema_pairs(kind, sub, f"{path}.{alias}")
        elif typing.get_origin(kind) is tuple and _is_model(typing.get_args(kind)[0]):
            yield from model_schema_pairs(typing.get_args(kind)[0], sub["items"],
                                          f"{path}.{alias}[]")


PAIRS = [pytest.param(m, s, id=p) for kind, model in (("TTSService", ServiceSpec),
                                                      ("TTSVoice", Voice))
         for p, m, s in model_schema_pairs(model, spec_schema(kind))]


def _manifest_records(kind: Any) -> dict[tuple[str, ...], Any] | None:
    """The manifest records a field holds, by their path below the field: each kind of
    a voice source, or the field's own record (``sha256``); None for any other field."""
    if kind == Source:
        return dict(SOURCE_RECORDS)
    if dataclasses.is_dataclass(kind):
        return {(): kind}
    return None


def record_schema_pairs(model: type[BaseModel], schema: dict[str, Any]
                        ) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(path, manifest record, schema node) for every field typed with the manifest's records."""
    for path, inner, node in model_schema_pairs(model, schema):
        for name, info in inner.model_fields.items():
            alias = info.alias or name
            records = _manifest_records(_unwrap(info.annotation))
            for below, record in (records or {}).items():
                sub = node["properties"][alias]
                for part in below:
                    sub = sub["items"] if part == "[]" else sub["properties"][part]
                yield ".".join((path, alias, *below)), record, sub


RECORD_PAIRS = [pytest.param(r, s, id=p) for kind, model in (("TTSService", ServiceSpec),
                                                             ("TTSVoice", Voice))
                for p, r, s in record_schema_pairs(model, spec_schema(kind))]


def test_voice_source_and_sha256_are_the_manifest_records() -> None:
    assert {p.id for p in RECORD_PAIRS} == {
        "spec.source.huggingFace", "spec.source.url", "spec.source.local", "spec.sha256",
        *(f"spec.source.kokoro.{part}.{kind}" for part in ("model", "style")
          for kind in ("huggingFace", "url", "local")),
        *(f"spec.source.xtts.clips.[].{kind}" for kind in ("huggingFace", "url", "local")),
        "spec.source.xtts.checkpoint.huggingFace", "spec.source.xtts.checkpoint.local",
        *(f"spec.source.xtts.checkpoint.url.{key}" for key in XTTS_URL_FILES)}
    assert set(spec_schema("TTSVoice")["properties"]["source"]["properties"]) == set(SOURCE_KINDS)


def test_the_crd_xtts_source_matches_the_manifest() -> None:
    """What the records table does not hold: the XTTS source's own keys and limits."""
    xtts = spec_schema("TTSVoice")["properties"]["source"]["properties"]["xtts"]
    props = xtts["properties"]
    assert set(props) == {"clips", "language", "languages", "checkpoint", "acceptLicense"}
    assert set(xtts["required"]) == {"clips", "language", "checkpoint"}
    assert (props["clips"]["minItems"], props["clips"]["maxItems"]) == (1, MAX_CLIPS)
    assert props["language"]["enum"] == props["languages"]["items"]["enum"] == list(LANGUAGES)
    assert props["languages"]["maxItems"] == len(LANGUAGES)
    assert props["acceptLicense"]["enum"] == [LICENSE_NAME]
    checkpoint = props["checkpoint"]["properties"]
    assert set(checkpoint) == {"name", *XTTS_CHECKPOINT_KINDS}
    assert checkpoint["name"]["default"] == DEFAULT_CHECKPOINT
    assert set(checkpoint["url"]["properties"]) == set(XTTS_URL_FILES)
    assert set(checkpoint["url"]["required"]) == set(XTTS_URL_FILES) - {"speakers"}
    source = parse_source({"xtts": XTTS_SOURCE}, "source")
    assert license_refusal(source) is None

@pytest.mark.parametrize(("record", "schema"), RECORD_PAIRS)
def test_crd_properties_match_the_manifest(record: Any, schema: dict[str, Any]) -> None:
    keys = {k.key: k for k in json_keys(record)}
    assert set(keys) == set(schema.get("properties", {}))
    assert {name for name, k in keys.items() if k.required} == set(schema.get("required", []))
    for name, key in keys.items():
        sub = schema["properties"][name]
        assert sub["type"] == _JSON_TYPES[key.type], name
        assert sub.get("default") == key.default, f"{name}: default"


@pytest.mark.parametrize(("model", "schema"), PAIRS)
def test_crd_properties_match_the_model(model: type[BaseModel], schema: dict[str, Any]) -> None:
    fields = {(info.alias or name): info for name, info in model.model_fields.items()}
    assert set(fields) == set(schema.get("properties", {}))
    assert {a for a, info in fields.items() if info.is_required()} == set(
        schema.get("required", []))
    for alias, info in fields.items():
        sub = schema["properties"][alias]
        kind = _unwrap(info.annotation)
        origin = typing.get_origin(kind) or kind
        if origin is typing.Literal:
            assert set(typing.get_args(kind)) == set(sub["enum"]), alias
            assert sub["type"] == "string", alias
        elif origin is tuple and typing.get_origin(typing.get_args(kind)[0]) is typing.Literal:
            assert set(typing.get_args(typing.get_args(kind)[0])) == set(sub["items"]["enum"])
        elif _is_model(kind):
            assert sub["type"] == "object", alias
        elif origin in _JSON_TYPES:
            assert sub.get("type") == _JSON_TYPES[origin], alias
        ge = next((m.ge for m in info.metadata if isinstance(m, Ge)), None)
        gt = next((m.gt for m in info.metadata if isinstance(m, Gt)), None)
        le = next((m.le for m in info.metadata if isinstance(m, Le)), None)
        assert (ge if gt is None else gt) == sub.get("minimum"), f"{alias}: minimum"
        assert (gt is not None) == sub.get("exclusiveMinimum", False), f"{alias}: exclusive"
        if le is not None:  # the model may leave an upper bound to the API server
            assert le == sub.get("maximum"), f"{alias}: maximum"


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill in schema defaults the way the API server does (recursively, into defaults too)."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out = dict(value)
        for name, sub in props.items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
        extra = schema.get("additionalProperties")
        for name, item in out.items():
            if name in props:
                out[name] = apply_defaults(props[name], item)
            elif isinstance(extra, dict):
                out[name] = apply_defaults(extra, item)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


MINIMAL_SPECS: list[tuple[str, type[BaseModel], dict[str, Any]]] = [
    ("TTSService", ServiceSpec, {"defaultVoice": AMY, "voices": {"names": ["amy"]}}),
    ("TTSService", ServiceSpec, {"defaultVoice": AMY, "voices": {"names": ["amy"]},
                                 "autoscaling": {"maxReplicas": 3},
                                 "storage": {"type": "EmptyDir"}}),
    ("TTSService", ServiceSpec, {"defaultVoice": AMY, "voices": {"names": ["amy"]},
                                 "server": {"gpu": {"count": 1}}}),
    ("TTSVoice", Voice, HF_VOICE),
    ("TTSVoice", Voice, {"voice": AMY, "source": {"url": URL},
                         "sha256": {"model": SHA_A, "config": SHA_B}}),
    ("TTSVoice", Voice, {"voice": AMY, "source": {"local": {"path": "/v"}}}),
    ("TTSVoice", Voice, {"voice": "af_heart", "engine": "kokoro", "source": {"kokoro": {
        "model": {"huggingFace": {"path": "onnx/model.onnx"}},
        "style": {"huggingFace": {"path": "voices/af_heart.bin"}}}}}),
    ("TTSVoice", Voice, {"voice": "narrator", "engine": "xtts", "source": {"xtts": {
        "clips": [{"huggingFace": {"repo": "me/clips", "path": "narrator.wav"}}],
        "language": "en", "checkpoint": {"huggingFace": {}}}}}),
]


def _lookup(value: Any, path: list[str]) -> Any:
    """The value at ``path`` (``[]``: a list's first item), or KeyError."""
    for part in path:
        if part == "[]" and isinstance(value, list) and value:
            value = value[0]
            continue
        if not isinstance(value, dict) or part not in value:
            return KeyError
        value = value[part]
    return value


def _default_paths(schema: dict[str, Any], path: tuple[str, ...] = ()
                   ) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, sub in schema.get("properties", {}).items():
        if "default" in sub:
            yield (*path, name), sub["default"]
        yield from _default_paths(sub, (*path, name))
        if isinstance(sub.get("items"), dict):
            yield from _default_paths(sub["items"], (*path, name, "[]"))


@pytest.mark.parametrize(("kind", "model", "spec"),
                         [pytest.param(*m, id=f"{m[0]}-{i}") for i, m in enumerate(MINIMAL_SPECS)])
def test_crd_defaults_equal_model_defaults(kind: str, model: type[BaseModel],
                                           spec: dict[str, Any]) -> None:
    defaulted = apply_defaults(spec_schema(kind), spec)
    # The API server's defaults change nothing the operator would render.
    assert model.model_validate(defaulted) == model.model_validate(spec)
    dumped = model.model_validate(spec).model_dump(by_alias=True, mode="json")
    for path, default in _default_paths(spec_schema(kind)):
        if isinstance(default, dict):
            continue  # an object default: its own fields' defaults are compared
        given, seen = _lookup(spec, list(path)), _lookup(defaulted, list(path))
        if given is KeyError and seen is not KeyError:  # the API server filled it in
            assert seen == default
            assert _lookup(dumped, list(path)) == default, ".".join(path)


def test_every_crd_default_is_exercised() -> None:
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for kind, _, spec in MINIMAL_SPECS:
        defaulted = apply_defaults(spec_schema(kind), spec)
        seen |= {(kind, p) for p, _ in _default_paths(spec_schema(kind))
                 if _lookup(defaulted, list(p)) is not KeyError}
    every = {(kind, p) for kind in CRDS for p, _ in _default_paths(spec_schema(kind))}
    assert every - seen == set()


def _model_defaults(model: type[BaseModel], path: tuple[str, ...] = ()
                    ) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, info in model.model_fields.items():
        alias = (*path, info.alias or name)
        kind = _unwrap(info.annotation)
        records = _manifest_records(kind)
        if records is not None:
            yield from (((*alias, *below, k.key), k.default) for below, record in records.items()
                        for k in json_keys(record) if k.default is not None)
        elif _is_model(kind):
            yield from _model_defaults(kind, alias)
        elif not info.is_required() and info.default not in (None, {}, ()):
            yield alias, info.default


# Model defaults the CRD documents in a description instead of a schema default.
DOCUMENTED_DEFAULTS: dict[tuple[str, ...], str] = {}


@pytest.mark.parametrize(("kind", "model"), [("TTSService", ServiceSpec), ("TTSVoice", Voice)])
def test_every_model_default_is_a_crd_default(kind: str, model: type[BaseModel]) -> None:
    crd_defaults = dict(_default_paths(spec_schema(kind)))
    for path, default in _model_defaults(model):
        if path in DOCUMENTED_DEFAULTS:
            node = spec_schema(kind)
            for part in path:
                node = node["properties"][part]
            assert DOCUMENTED_DEFAULTS[path] in node["description"]
            assert str(default) == DOCUMENTED_DEFAULTS[path]
            continue
        expected = list(default) if isinstance(default, tuple) else default
        assert crd_defaults.get(path, KeyError) == expected, ".".join(path)


# --- CEL rules (x-kubernetes-validations) ------------------------------------------------------


def cel_rules(kind: str) -> list[tuple[str, str, str]]:
    """(schema path, rule, message) of every CEL rule of the CRD."""
    return [(path, rule["rule"], rule["message"])
            for path, node in schema_nodes(root_schema(kind))
            for rule in node.get("x-kubernetes-validations", [])]


def _instances(value: Any, path: str) -> Iterator[Any]:
    """The values at schema path ``path`` (``.a.b``, ``[]`` items, ``{}`` map values)."""
    if not path:
        yield value
        return
    if path.startswith("[]"):
        for item in value if isinstance(value, list) else []:
            yield from _instances(item, path[2:])
        return
    if path.startswith("{}"):
        for item in (value.values() if isinstance(value, dict) else []):
            yield from _instances(item, path[2:])
        return
    name, rest = path[1:], ""
    for i, char in enumerate(path[1:], 1):
        if char in ".[{":
            name, rest = path[1:i], path[i:]
            break
    if isinstance(value, dict) and name in value:
        yield from _instances(value[name], rest)


_CEL = celpy.Environment()


@functools.cache
def _program(rule: str) -> celpy.Runner:
    return _CEL.program(_CEL.compile(rule))


def cel_holds(rule: str, value: Any) -> bool:
    """The API server's verdict: an evaluation error fails the rule too."""
    try:
        result = _program(rule).evaluate({"self": json_to_cel(value)})
    except CELEvalError:
        return False
    return isinstance(result, BoolType) and bool(result)


def cel_failures(obj: dict[str, Any]) -> list[str]:
    """Messages of the CEL rules ``obj`` breaks, after defaulting as the API server does."""
    kind = obj["kind"]
    defaulted = apply_defaults(root_schema(kind), obj)
    return [message for path, rule, message in cel_rules(kind)
            for value in _instances(defaulted, path) if not cel_holds(rule, value)]


def test_every_cel_rule_compiles() -> None:
    rules = [rule for kind in CRDS for _, rule, _ in cel_rules(kind)]
    assert len(rules) == 33
    for rule in rules:
        assert _program(rule) is not None


EMPTY = {"storage": {"type": "EmptyDir"}}
RWO = "more than one replica cannot share a ReadWriteOnce volume"
METRICS_PORT = "monitoring.port must differ from server.wyoming.port"
CEL_CASES = [
    pytest.param(_voice_cr({**HF_VOICE, "source": {"huggingFace": {}, "local": {"path": "/v"}}}),
                 "source needs exactly one of", id="two-sources"),
    pytest.param(_voice_cr({**HF_VOICE, "source": {"huggingFace": {}, "url": URL,
                                                   "local": {"path": "/v"}}}),
                 "source needs exactly one of", id="three-sources"),
    pytest.param(_voice_cr({**HF_VOICE, "source": {}}), "source needs exactly one of",
                 id="no-source"),
    pytest.param(_voice_cr({**HF_VOICE, "source": {"url": URL}}), "url sources need sha256",
                 id="url-without-sha256"),
    pytest.param(_voice_cr({**HF_VOICE, "source": {"url": {**URL, "allowUnverified": False}}}),
                 "url sources need sha256", id="url-explicitly-verified-without-sha256"),
    pytest.param(_voice_cr({**KOKORO_VOICE, "source": {"huggingFace": {}}}),
                 "engine kokoro needs source.kokoro", id="kokoro-with-a-piper-source"),
    pytest.param(_voice_cr({**HF_VOICE, "source": {"kokoro": KOKORO_SOURCE}}),
                 "engine kokoro needs source.kokoro", id="piper-with-a-kokoro-source"),
    pytest.param(_voice_cr({**KOKORO_VOICE, "sha256": {"model": SHA_A, "config": SHA_B}}),
                 "sha256 pins a Piper voice's", id="kokoro-with-piper-hashes"),
    pytest.param(_voice_cr({**KOKORO_VOICE, "source": {"kokoro": {
        **KOKORO_SOURCE, "model": {**KOKORO_SOURCE["model"], **KOKORO_SOURCE["style"]}}}}),
                 "model needs exactly one of", id="kokoro-model-two-kinds"),
    pytest.param(_voice_cr({**KOKORO_VOICE, "source": {"kokoro": {
        **KOKORO_SOURCE, "style": {}}}}), "style needs exactly one of", id="kokoro-no-style-kind"),
    pytest.param(_voice_cr({**KOKORO_VOICE, "source": {"kokoro": KOKORO_SOURCE},
                            "engine": "piper"}),
                 "engine kokoro needs source.kokoro", id="kokoro-source-engine-piper"),
    pytest.param(_voice_cr({**XTTS_VOICE, "source": {"huggingFace": {}}}),
                 "engine xtts needs source.xtts", id="xtts-with-a-piper-source"),
    pytest.param(_voice_cr({**XTTS_VOICE, "source": {"kokoro": KOKORO_SOURCE}}),
                 "engine xtts needs source.xtts", id="xtts-with-a-kokoro-source"),
    pytest.param(_voice_cr({**HF_VOICE, "source": {"xtts": XTTS_SOURCE}}),
                 "engine xtts needs source.xtts", id="piper-with-an-xtts-source"),
    pytest.param(_voice_cr({**KOKORO_VOICE, "source": {"xtts": XTTS_SOURCE}}),
                 "engine kokoro needs source.kokoro", id="kokoro-with-an-xtts-source"),
    pytest.param(_voice_cr({**XTTS_VOICE, "sha256": {"model": SHA_A, "config": SHA_B}}),
                 "sha256 pins a Piper voice's", id="xtts-with-piper-hashes"),
    pytest.param(_voice_cr(_xtts(clips=[{"url": XTTS_CLIP_FILES["url"],
                                                  "local": XTTS_CLIP_FILES["local"]}])),
                 "each clip needs exactly one of", id="xtts-clip-two-kinds"),
    pytest.param(_voice_cr(_xtts(clips=[{}])), "each clip needs exactly one of",
                 id="xtts-clip-no-kind"),
    pytest.param(_voice_cr(_xtts(checkpoint={"huggingFace": {}, "local": {"path": "/x"}})),
                 "checkpoint needs exactly one of", id="xtts-checkpoint-two-kinds"),
    pytest.param(_voice_cr(_xtts(checkpoint={"name": "XTTS-v2"})),
                 "checkpoint needs exactly one of", id="xtts-checkpoint-no-kind"),
    pytest.param(_voice_cr(_xtts(checkpoint={"name": "a..b", "huggingFace": {}})),
                 "checkpoint name must not contain '..'", id="xtts-checkpoint-name-dotdot"),
    pytest.param(_voice_cr(_xtts(clips=[{"huggingFace": {"repo": "me/c", "path": "a/../b"}}])),
                 "path must not contain '.' or '..' segments", id="xtts-clip-path-dotdot"),
    pytest.param(_voice_cr(_xtts(checkpoint={"huggingFace": {"revision": "a..b"}})),
                 "revision must not contain '..'", id="xtts-checkpoint-revision-dotdot"),
    pytest.param(_voice_cr({**HF_VOICE, "voice": "en..x"}), "voice must not contain '..'",
                 id="voice-dotdot"),
    pytest.param(_voice_cr({**HF_VOICE, "source": {"huggingFace": {"revision": "a..b"}}}),
                 "revision must not contain '..'", id="revision-dotdot"),
    pytest.param(_voice_cr({**HF_VOICE, "source": {"huggingFace": {"path": "en/../x"}}}),
                 "path must not contain '.' or '..' segments", id="path-dotdot"),
    pytest.param(_voice_cr({**HF_VOICE, "source": {"huggingFace": {"path": "./en"}}}),
                 "path must not contain '.' or '..' segments", id="path-dot"),
    pytest.param(_service_cr({**BASE_SPEC, "replicas": 1, "autoscaling": {"maxReplicas": 2},
                              **EMPTY}),
                 "set replicas or autoscaling, not both", id="replicas-and-autoscaling"),
    pytest.param(_service_cr({**BASE_SPEC, "replicas": 2}), RWO, id="rwo-two-replicas"),
    pytest.param(_service_cr({**BASE_SPEC, "replicas": 2, "storage": {
        "type": "PersistentVolumeClaim", "accessModes": ["ReadWriteOncePod"]}}), RWO,
                 id="rwop-two-replicas"),
    pytest.param(_service_cr({**BASE_SPEC, "autoscaling": {"maxReplicas": 3}}), RWO,
                 id="rwo-autoscaling"),
    pytest.param(_service_cr({**BASE_SPEC, "replicas": 2, "server": {
        "http": {"enabled": False, "port": 10200}}}), RWO,
                 id="rwo-two-replicas-http-off"),
    pytest.param(_service_cr({**BASE_SPEC, "autoscaling": {"minReplicas": 4, "maxReplicas": 3},
                              **EMPTY}),
                 "autoscaling.minReplicas must not exceed maxReplicas", id="min-above-max"),
    pytest.param(_service_cr({**BASE_SPEC, "autoscaling": {"minReplicas": 2, "maxReplicas": 1},
                              **EMPTY}),
                 "autoscaling.minReplicas must not exceed maxReplicas", id="min-above-max-1"),
    pytest.param(_service_cr({"defaultVoice": AMY, "voices": {}}),
                 "voices needs names, a selector, or both", id="no-names-no-selector"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"http": {"port": 10200}}}),
                 "server.http.port and server.wyoming.port must differ",
                 id="http-port-is-the-default-wyoming-port"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"wyoming": {"port": 5000}}}),
                 "server.http.port and server.wyoming.port must differ",
                 id="wyoming-port-is-the-default-http-port"),
    pytest.param(_service_cr({**BASE_SPEC, "monitoring": {"port": 10200}}), METRICS_PORT,
                 id="metrics-port-is-the-wyoming-port"),
    pytest.param(_service_cr({**BASE_SPEC, "monitoring": {"port": 5000}}), METRICS_PORT,
                 id="metrics-port-is-the-http-port"),
    pytest.param(_service_cr({**BASE_SPEC, "monitoring": {"port": 9090}}), METRICS_PORT,
                 id="metrics-port-is-the-status-port"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"wyoming": {"port": 7000}},
                              "monitoring": {"port": 7000}}), METRICS_PORT,
                 id="metrics-port-is-a-chosen-wyoming-port"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"gpu": {"count": 1}, "device": "cpu"}}),
                 "server.gpu with server.device cpu", id="gpu-on-the-cpu"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"gpu": {"count": 1},
                                                      "backend": "openvino"}}),
                 "server.gpu with server.backend openvino", id="gpu-with-openvino"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"gpu": {"count": 1}, "resources": {
        "limits": {"nvidia.com/gpu": 2}}}}), "server.gpu sets the GPU resource itself",
                 id="gpu-in-resources-too"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"gpu": {
        "count": 1, "resourceName": "example.com/tpu"}, "resources": {
        "requests": {"example.com/tpu": 1}}}}), "server.gpu sets the GPU resource itself",
                 id="gpu-resource-requested-too"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"gpu": {
        "count": 1, "nodeSelector": {"gpu": "a100"}}}, "pod": {"nodeSelector": {"gpu": "h100"}}}),
                 "server.gpu.nodeSelector and pod.nodeSelector give one label two values",
                 id="gpu-node-selector-conflict"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"gpu": {"count": 1, "tolerations": [
        {"key": "gpu", "operator": "Exists", "value": "yes"}]}}}),
                 "a toleration with operator Exists takes no value", id="exists-with-value"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"gpu": {"count": 1, "tolerations": [
        {"value": "yes"}]}}}),
                 "a toleration without a key needs operator Exists", id="no-key-equal"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"gpu": {"count": 1, "tolerations": [
        {"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 60}]}}}),
                 "tolerationSeconds needs effect NoExecute", id="seconds-without-noexecute"),
]


@pytest.mark.parametrize(("cr", "message"), CEL_CASES)
def test_cel_rules_refuse_invalid_specs(cr: dict[str, Any], message: str) -> None:
    assert [e.message for e in schema_errors(cr)] == []  # only the CEL rule stands in the way
    failures = cel_failures(cr)
    assert any(f.startswith(message) for f in failures), failures
    # and the operator's own models refuse the same spec
    with pytest.raises(SpecError):
        parse(cr)


def test_every_cel_rule_has_a_failing_case() -> None:
    tested = {str(p.values[1]) for p in CEL_CASES}
    for kind in CRDS:
        for _, _, message in cel_rules(kind):
            assert any(message.startswith(t) for t in tested), message


@pytest.mark.parametrize("cr", [
    pytest.param(_service_cr({**BASE_SPEC, "replicas": 1}), id="one-replica-rwo"),
    pytest.param(_service_cr({**BASE_SPEC, "replicas": 0}), id="zero-replicas-rwo"),
    pytest.param(_service_cr({**BASE_SPEC, "replicas": 4, **EMPTY}), id="replicas-emptydir"),
    pytest.param(_service_cr({**BASE_SPEC, "replicas": 4,
                              "storage": {"accessModes": ["ReadWriteMany"]}}), id="rwx"),
    pytest.param(_service_cr({**BASE_SPEC, "autoscaling": {"maxReplicas": 4},
                              "storage": {"accessModes": ["ReadWriteOnce", "ReadWriteMany"]}}),
                 id="autoscaling-rwx"),
    pytest.param(_service_cr({**BASE_SPEC, "autoscaling": {"minReplicas": 3, "maxReplicas": 3},
                              **EMPTY}), id="min-equals-max"),
    pytest.param(_service_cr({"defaultVoice": AMY, "voices": {"selector": {}}}),
                 id="selector-only"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"http": {"port": 10300},
                                                      "wyoming": {"port": 10200}}}),
                 id="distinct-ports"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"http": {"enabled": False,
                                                               "port": 10200}}}),
                 id="same-port-with-http-off"),
    pytest.param(_service_cr({**BASE_SPEC, "autoscaling": {"maxReplicas": 1}}),
                 id="autoscaling-to-one-rwo"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"http": {"enabled": False}},
                              "monitoring": {"port": 5000}}),
                 id="metrics-port-on-the-unused-http-port"),
    pytest.param(_service_cr({**BASE_SPEC, "monitoring": {"port": 9100}}),
                 id="metrics-port-of-its-own"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"gpu": {"count": 1}, "device": "auto",
                                                      "backend": "auto"}}),
                 id="gpu-with-device-auto"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"gpu": {
        "count": 1, "nodeSelector": {"gpu": "a100", "zone": "a"}}},
        "pod": {"nodeSelector": {"gpu": "a100", "disk": "ssd"}}}),
                 id="gpu-node-selector-agrees"),
    pytest.param(_service_cr({**BASE_SPEC, "server": {"gpu": {"count": 1, "tolerations": [
        {"operator": "Exists"}, {"key": "t", "effect": "NoExecute", "tolerationSeconds": 9}]},
        "resources": {"limits": {"cpu": 2}}}}), id="gpu-tolerations-and-cpu-limits"),
    pytest.param(_voice_cr({**HF_VOICE, "source": {"huggingFace": {
        "path": "en/en_US/a.b/medium", "revision": "v1.0"}}}), id="dotted-path-and-revision"),
    pytest.param(_voice_cr({**HF_VOICE, "voice": "en_US-a.b-medium"}), id="dotted-voice"),
    pytest.param(_voice_cr({**HF_VOICE, "source": {"url": {**URL, "allowUnverified": True}}}),
                 id="url-unverified-opt-in"),
    pytest.param(_voice_cr({**HF_VOICE, "source": {"url": URL},
                            "sha256": {"model": SHA_A, "config": SHA_B}}), id="url-pinned"),
    pytest.param(_voice_cr(KOKORO_VOICE), id="kokoro"),
    pytest.param(_voice_cr(XTTS_VOICE), id="xtts"),
    pytest.param(_voice_cr({**XTTS_VOICE, "source": {"xtts": {
        k: v for k, v in XTTS_SOURCE.items() if k != "acceptLicense"}}}),
                 id="xtts-licence-not-accepted-is-the-voice-managers-refusal"),
])
def test_cel_rules_accept_valid_specs(cr: dict[str, Any]) -> None:
    assert [e.message for e in schema_errors(cr)] == []
    assert cel_failures(cr) == []
    parse(cr)


@pytest.mark.parametrize("key", ["en_US-amy-medium", "a", "zh_CN-x.y+1", "../x", "a..b", ".a",
                                 "a/b", "a b", "x" * 128, "x" * 129, "", "-a", "a\x00"])
def test_crd_voice_key_rules_equal_the_volume_layout_rules(key: str) -> None:
    cr = _voice_cr({**HF_VOICE, "voice": key})
    crd_ok = not schema_errors(cr) and not cel_failures(cr)
    try:
        parse(cr)
        model_ok = True
    except SpecError:
        model_ok = False
    assert crd_ok == model_ok


def test_the_render_test_voices_are_valid_ttsvoices() -> None:
    """The voices() fixtures of the render tests pass the CRD too."""
    for resource in voices():
        cr = _voice_cr(resource.spec.model_dump(by_alias=True, exclude_none=True))
        assert schema_errors(cr) == [] and cel_failures(cr) == []
