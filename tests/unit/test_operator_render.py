"""``operator/render.py``: the children ``build_*`` returns for a TTSService.

No cluster and no network: every rendered field is checked on the dicts ``build_*``
return. The table tests show that every spec field has an effect a test sees (and the
coverage test fails when a field is added to the models without a row here).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from chorus.cli.main import build_parser
from chorus.common import xtts
from chorus.common.kokoro import DEFAULT_MODEL_BYTES, MEMORY_FACTOR, memory_estimate
from chorus.common.manifest import SOURCE_RECORDS, Source, json_keys, load_manifest
from chorus.common.options import OptionError, load_config_file, resolve_options
from chorus.operator.models import (
    LabelSelector,
    Resources,
    SecretKey,
    ServiceSpec,
    SpecError,
    Voice,
    VoiceResource,
)
from chorus.operator.render import (
    CHECKSUM_ANNOTATION,
    DEFAULT_SERVER_IMAGE,
    STATUS_PORT,
    RenderSettings,
    build_manifest,
    engine_memory,
    labels_for,
    select_voices,
    selector_labels,
)
from chorus.server import cli as server_cli
from chorus.server.settings import ServerSettings
from tests.unit.operator_specs import (
    AMY,
    EMPTY,
    JOE,
    KOKORO_FILES,
    KOKORO_SOURCE,
    MISSING,
    NAME,
    NS,
    SHA,
    THORSTEN,
    URL,
    XTTS_CLIP_FILES,
    XTTS_SOURCE,
    XTTS_URL_CHECKPOINT,
    Children,
    Getter,
    arg,
    attempt,
    case,
    checksum,
    container,
    cport,
    deployment_spec,
    env,
    init,
    manager,
    manifest_voices,
    obj,
    pod,
    render,
    server,
    service,
    settings_json,
    sport,
    template,
    voice,
    voices,
    volume,
)

# --- every field has an effect ------------------------------------------------------------

RESOURCES = {"requests": {"cpu": "250m", "memory": "300Mi"}, "limits": {"memory": "1Gi"}}
TOLERATION = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
    "nodeSelectorTerms": [{"matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
MIG = "nvidia.com/mig-1g.10gb"
SPREAD = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
          "whenUnsatisfiable": "ScheduleAnyway"}


def _names(children: Children) -> list[str]:
    return sorted(manifest_voices(children))


def _images(children: Children) -> tuple[object, ...]:
    return (server(children)["image"], manager(children)["image"], init(children)["image"])


def _pulls(children: Children) -> tuple[object, ...]:
    return tuple(c.get("imagePullPolicy", MISSING)
                 for c in (server(children), manager(children), init(children)))


POD_MONITOR = {
    "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
    "metadata": {"name": NAME, "namespace": NS, "labels": labels_for(NAME)},
    "spec": {"selector": {"matchLabels": selector_labels(NAME)},
             "podMetricsEndpoints": [
                 {"port": "metrics", "path": "/metrics", "interval": "30s"},
                 {"port": "vm-status", "path": "/metrics", "interval": "30s"}]}}

SERVICE_CASES = [
    case("defaultVoice", {"defaultVoice": JOE},
         lambda c: (settings_json(c)["default-voice"], arg(manager(c), "--keep"),
                    [k for k, v in manifest_voices(c).items() if v["required"]]),
         (JOE, JOE, [JOE])),
    case("voices.names", {"voices": {"names": ["amy"]}}, _names, [AMY]),
    case("voices.selector.matchLabels",
         {"voices": {"selector": {"matchLabels": {"tier": "home"}}}}, _names,
         [THORSTEN, AMY, JOE]),
    case("voices.selector.matchExpressions[In]",
         {"voices": {"names": ["amy"], "selector": {"matchExpressions": [
             {"key": "lang", "operator": "In", "values": ["de"]}]}}}, _names, [THORSTEN, AMY]),
    case("voices.selector.matchExpressions[NotIn]",
         {"voices": {"names": ["amy"], "selector": {"matchExpressions": [
             {"key": "lang", "operator": "NotIn", "values": ["en"]}]}}}, _names, [THORSTEN, AMY]),
    case("voices.selector.matchExpressions[Exists]",
         {"voices": {"names": ["amy"], "selector": {"matchExpressions": [
             {"key": "tier", "operator": "Exists"}]}}}, _names, [THORSTEN, AMY]),
    case("voices.selector.matchExpressions[DoesNotExist]",
         {"defaultVoice": JOE, "voices": {"names": ["thorsten"], "selector": {
             "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}}},
         _names, [THORSTEN, JOE]),
    case("replicas", {"replicas": 3, **EMPTY}, lambda c: deployment_spec(c)["replicas"], 3),
    case("autoscaling.minReplicas", {"autoscaling": {"minReplicas": 2, "maxReplicas": 4},
                                     **EMPTY},
         lambda c: obj(c, "hpa")["spec"]["minReplicas"], 2),
    case("autoscaling.maxReplicas", {"autoscaling": {"maxReplicas": 4}, **EMPTY},
         lambda c: obj(c, "hpa")["spec"]["maxReplicas"], 4),
    case("autoscaling.targetCPUUtilizationPercentage",
         {"autoscaling": {"maxReplicas": 4, "targetCPUUtilizationPercentage": 55}, **EMPTY},
         lambda c: obj(c, "hpa")["spec"]["metrics"][0]["resource"]["target"],
         {"type": "Utilization", "averageUtilization": 55}),
    case("storage.type", EMPTY, lambda c: (c["pvc"], volume(c, "voices")),
         (None, {"name": "voices", "emptyDir": {"sizeLimit": "2Gi"}})),
    case("storage.size", {"storage": {"size": "5Gi"}},
         lambda c: obj(c, "pvc")["spec"]["resources"]["requests"]["storage"], "5Gi"),
    case("storage.storageClassName", {"storage": {"storageClassName": "fast"}},
         lambda c: obj(c, "pvc")["spec"]["storageClassName"], "fast"),
    case("storage.accessModes", {"storage": {"accessModes": ["ReadWriteMany"]}},
         lambda c: (obj(c, "pvc")["spec"]["accessModes"], deployment_spec(c)["strategy"]["type"]),
         (["ReadWriteMany"], "RollingUpdate")),
    case("server.image", {"server": {"image": "registry.example/chorus:9"}}, _images,
         ("registry.example/chorus:9",) * 3),
    case("server.imagePullPolicy", {"server": {"imagePullPolicy": "Always"}}, _pulls,
         ("Always",) * 3),
    case("server.resources", {"server": {"resources": RESOURCES}},
         lambda c: server(c)["resources"], RESOURCES),
    case("server.workers", {"server": {"workers": 3}}, lambda c: settings_json(c)["workers"], 3),
    case("server.threadsPerWorker", {"server": {"threadsPerWorker": 2}},
         lambda c: settings_json(c)["threads-per-worker"], 2),
    case("server.maxRequests", {"server": {"maxRequests": 7}},
         lambda c: settings_json(c)["max-requests"], 7),
    case("server.voiceMemoryMB", {"server": {"voiceMemoryMB": 256}},
         lambda c: settings_json(c)["voice-memory-mb"], 256),
    case("server.maxTextChars", {"server": {"maxTextChars": 500}},
         lambda c: settings_json(c)["max-text-chars"], 500),
    case("server.lengthScale", {"server": {"lengthScale": 1.5}},
         lambda c: settings_json(c)["length-scale"], 1.5),
    case("server.noiseScale", {"server": {"noiseScale": 0.5}},
         lambda c: settings_json(c)["noise-scale"], 0.5),
    case("server.noiseWScale", {"server": {"noiseWScale": 0.7}},
         lambda c: settings_json(c)["noise-w-scale"], 0.7),
    case("server.sentenceSilence", {"server": {"sentenceSilence": 0.25}},
         lambda c: settings_json(c)["sentence-silence"], 0.25),
    case("server.paragraphSilence", {"server": {"paragraphSilence": 0.8}},
         lambda c: settings_json(c)["paragraph-silence"], 0.8),
    case("server.emoji", {"server": {"emoji": "drop"}},
         lambda c: settings_json(c)["emoji"], "drop"),
    case("server.codeBlocks", {"server": {"codeBlocks": "skip"}},
         lambda c: settings_json(c)["code-blocks"], "skip"),
    case("server.backend", {"server": {"backend": "openvino"}},
         lambda c: settings_json(c)["backend"], "openvino"),
    case("server.precision", {"server": {"precision": "bf16"}},
         lambda c: settings_json(c)["precision"], "bf16"),
    case("server.device", {"server": {"device": "auto"}},
         lambda c: settings_json(c)["device"], "auto"),
    case("server.gpu.count", {"server": {"gpu": {"count": 2}}},
         lambda c: (server(c)["resources"]["limits"], server(c)["resources"]["requests"],
                    settings_json(c)["device"]),
         ({"memory": "2Gi", "nvidia.com/gpu": 2},
          {"cpu": "500m", "memory": "512Mi", "nvidia.com/gpu": 2}, "cuda")),
    case("server.gpu.resourceName", {"server": {"gpu": {"count": 1, "resourceName": MIG}}},
         lambda c: (server(c)["resources"]["limits"].get(MIG),
                    server(c)["resources"]["requests"].get(MIG),
                    "nvidia.com/gpu" in server(c)["resources"]["limits"]), (1, 1, False)),
    case("server.gpu.nodeSelector", {"pod": {"nodeSelector": {"disk": "ssd"}}, "server": {
        "gpu": {"count": 1, "nodeSelector": {"nvidia.com/gpu.present": "true"}}}},
         lambda c: pod(c)["nodeSelector"], {"disk": "ssd", "nvidia.com/gpu.present": "true"}),
    case("server.gpu.tolerations", {"pod": {"tolerations": [TOLERATION]}, "server": {
        "gpu": {"count": 1, "tolerations": [GPU_TOLERATION, TOLERATION]}}},
         lambda c: pod(c)["tolerations"], [TOLERATION, GPU_TOLERATION]),
    case("server.logLevel", {"server": {"logLevel": "DEBUG"}},
         lambda c: settings_json(c)["log-level"], "DEBUG"),
    case("server.maxSentenceChars", {"server": {"maxSentenceChars": 400}},
         lambda c: settings_json(c)["max-sentence-chars"], 400),
    case("server.maxConnections", {"server": {"maxConnections": 32}},
         lambda c: settings_json(c)["max-connections"], 32),
    case("server.maxHttpConnections", {"server": {"maxHttpConnections": 64}},
         lambda c: settings_json(c)["max-http-connections"], 64),
    case("server.idleTimeout", {"server": {"idleTimeout": 12.5}},
         lambda c: settings_json(c)["idle-timeout"], 12.5),
    case("server.maxPipelined", {"server": {"maxPipelined": 3}},
         lambda c: settings_json(c)["max-pipelined"], 3),
    case("server.maxRequestsPerClient", {"server": {"maxRequestsPerClient": 2}},
         lambda c: settings_json(c)["max-requests-per-client"], 2),
    case("server.wyoming.port", {"server": {"wyoming": {"port": 10300}}},
         lambda c: (cport(server(c), "wyoming"), arg(server(c), "--wyoming-uri"),
                    env(server(c), "CHORUS_HEALTHCHECK_URI"), sport(c, "wyoming")),
         (10300, "tcp://0.0.0.0:10300",
          {"name": "CHORUS_HEALTHCHECK_URI", "value": "tcp://127.0.0.1:10300"}, 10300)),
    case("server.http.enabled", {"server": {"http": {"enabled": False}}},
         lambda c: ("--no-http" in server(c)["args"], cport(server(c), "http"), sport(c, "http"),
                    server(c)["readinessProbe"]["exec"]["command"]),
         (True, None, None, ["python", "-m", "chorus.server.healthcheck"])),
    case("server.http.port", {"server": {"http": {"port": 8080}}},
         lambda c: (cport(server(c), "http"), arg(server(c), "--http-port"), sport(c, "http")),
         (8080, "8080", 8080)),
    case("server.http.apiKeySecretRef",
         {"server": {"http": {"apiKeySecretRef": {"name": "tts-key", "key": "token"}}}},
         lambda c: env(server(c), "CHORUS_API_KEY"),
         {"name": "CHORUS_API_KEY",
          "valueFrom": {"secretKeyRef": {"name": "tts-key", "key": "token"}}}),
    case("server.http.openaiVoices", {"server": {"http": {"openaiVoices": {
        "nova": JOE, "alloy": AMY}}}},
         lambda c: settings_json(c)["openai-voice"], [f"alloy={AMY}", f"nova={JOE}"]),
    case("server.http.publicRoutes", {"server": {"http": {"publicRoutes": ["voices", "models"]}}},
         lambda c: settings_json(c)["public-routes"], "voices,models"),
    case("server.http.trustedProxies", {"server": {"http": {"trustedProxies": [
        "10.42.0.0/16", "fd00::/8"]}}},
         lambda c: settings_json(c)["trusted-proxies"], "10.42.0.0/16,fd00::/8"),
    case("server.cache.enabled", {"server": {"cache": {"enabled": False}}},
         lambda c: ("--no-cache" in server(c)["args"], "--cache-dir" in server(c)["args"],
                    "cache-max-mb" in settings_json(c),
                    "cache" in [v["name"] for v in pod(c)["volumes"]]),
         (True, False, False, False)),
    case("server.cache.maxMB", {"server": {"cache": {"maxMB": 100}}},
         lambda c: (settings_json(c)["cache-max-mb"], volume(c, "cache")["emptyDir"]),
         (100, {"sizeLimit": "164Mi"})),
    case("voiceManager.image", {"voiceManager": {"image": "vm:2"}}, _images,
         (DEFAULT_SERVER_IMAGE, "vm:2", "vm:2")),
    case("voiceManager.imagePullPolicy", {"voiceManager": {"imagePullPolicy": "Never"}}, _pulls,
         (MISSING, "Never", "Never")),
    case("voiceManager.resources", {"voiceManager": {"resources": RESOURCES}},
         lambda c: (manager(c)["resources"], init(c)["resources"], server(c)["resources"]
                    == RESOURCES),
         (RESOURCES, RESOURCES, False)),
    case("voiceManager.parallel", {"voiceManager": {"parallel": 4}},
         lambda c: (arg(manager(c), "--parallel"), arg(init(c), "--parallel")), ("4", "4")),
    case("voiceManager.removeAfterSeconds", {"voiceManager": {"removeAfterSeconds": 60}},
         lambda c: arg(manager(c), "--remove-after"), "60"),
    case("voiceManager.hfTokenSecretRef",
         {"voiceManager": {"hfTokenSecretRef": {"name": "hf", "key": "token"}}},
         lambda c: (env(manager(c), "HF_TOKEN"), env(init(c), "HF_TOKEN"),
                    env(server(c), "HF_TOKEN")),
         ({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},)
         * 2 + (None,)),
    case("service.type", {"service": {"type": "LoadBalancer"}},
         lambda c: obj(c, "service")["spec"]["type"], "LoadBalancer"),
    case("service.annotations", {"service": {"annotations": {"lb.example/internal": "true"}}},
         lambda c: obj(c, "service")["metadata"]["annotations"], {"lb.example/internal": "true"}),
    case("pod.annotations", {"pod": {"annotations": {"prometheus.io/scrape": "false"}}},
         lambda c: template(c)["metadata"]["annotations"]["prometheus.io/scrape"], "false"),
    case("pod.labels", {"pod": {"labels": {"team": "voice"}}},
         lambda c: template(c)["metadata"]["labels"]["team"], "voice"),
    case("pod.nodeSelector", {"pod": {"nodeSelector": {"disk": "ssd"}}},
         lambda c: pod(c)["nodeSelector"], {"disk": "ssd"}),
    case("pod.tolerations", {"pod": {"tolerations": [TOLERATION]}},
         lambda c: pod(c)["tolerations"], [TOLERATION]),
    case("pod.affinity", {"pod": {"affinity": AFFINITY}}, lambda c: pod(c)["affinity"], AFFINITY),
    case("pod.topologySpreadConstraints", {"pod": {"topologySpreadConstraints": [SPREAD]}},
         lambda c: pod(c)["topologySpreadConstraints"], [SPREAD]),
    case("pod.priorityClassName", {"pod": {"priorityClassName": "high"}},
         lambda c: pod(c)["priorityClassName"], "high"),
    case("pod.imagePullSecrets", {"pod": {"imagePullSecrets": [{"name": "regcred"}]}},
         lambda c: pod(c)["imagePullSecrets"], [{"name": "regcred"}]),
    case("monitoring.port", {"monitoring": {"port": 9100, "podMonitor": True}},
         lambda c: (cport(server(c), "metrics"), arg(server(c), "--metrics-port"),
                    template(c)["metadata"]["annotations"]["prometheus.io/port"],
                    obj(c, "podmonitor")["spec"]["podMetricsEndpoints"][0]["port"]),
         (9100, "9100", "9100", "metrics")),
    case("monitoring.scrapeAnnotations", {"monitoring": {"scrapeAnnotations": False}},
         lambda c: sorted(template(c)["metadata"]["annotations"]), [CHECKSUM_ANNOTATION]),
    case("monitoring.podMonitor", {"monitoring": {"podMonitor": True}},
         lambda c: obj(c, "podmonitor"), POD_MONITOR),
    case("monitoring.interval", {"monitoring": {"podMonitor": True, "interval": "1m30s"}},
         lambda c: obj(c, "podmonitor")["spec"]["podMetricsEndpoints"][0]["interval"],
         "1m30s"),
    case("monitoring.labels", {"monitoring": {"podMonitor": True,
                                              "labels": {"release": "kube-prometheus"}}},
         lambda c: obj(c, "podmonitor")["metadata"]["labels"]["release"], "kube-prometheus"),
]


@pytest.mark.parametrize(("patch", "get", "expected"), SERVICE_CASES)
def test_every_service_field_has_an_effect(patch: dict[str, Any], get: Getter,
                                           expected: object) -> None:
    assert get(render(patch)) == expected
    assert attempt(get, render()) != expected, "the default already renders this"


def _amy(children: Children) -> dict[str, Any]:
    return manifest_voices(children)[AMY]



def _kokoro_file(part: str, kind: str, key: str) -> Getter:
    """The rendered manifest's value of one key of amy's Kokoro ``part`` file."""
    return lambda c: _amy(c)["source"]["kokoro"][part][kind][key]


def _xtts_value(*keys: str) -> Getter:
    """The rendered manifest's value at ``keys`` below amy's ``source.xtts`` (``[]``: the
    first item)."""
    def get(children: Children) -> object:
        value: Any = _amy(children)["source"]["xtts"]
        for key in keys:
            value = value[0] if key == "[]" else value[key]
        return value
    return get


def _xtts_patch(**changes: Any) -> dict[str, Any]:
    return {"engine": "xtts", "source": {"xtts": {**XTTS_SOURCE, **changes}}}


VOICE_CASES = [
    case("voice", {"voice": "en_US-amy-low"}, _names, ["en_US-amy-low", JOE]),
    case("source.huggingFace.repo", {"source": {"huggingFace": {"repo": "me/voices"}}},
         lambda c: _amy(c)["source"], {"huggingFace": {"repo": "me/voices", "revision": "main"}}),
    case("source.huggingFace.revision", {"source": {"huggingFace": {"revision": "v1.0.0"}}},
         lambda c: _amy(c)["source"]["huggingFace"]["revision"], "v1.0.0"),
    case("source.huggingFace.path", {"source": {"huggingFace": {"path": "en/custom/amy"}}},
         lambda c: _amy(c)["source"]["huggingFace"]["path"], "en/custom/amy"),
    case("source.url.model", {"source": {"url": URL}, "sha256": SHA},
         lambda c: _amy(c)["source"]["url"]["model"], URL["model"]),
    case("source.url.config", {"source": {"url": URL}, "sha256": SHA},
         lambda c: _amy(c)["source"]["url"]["config"], URL["config"]),
    case("source.url.allowUnverified", {"source": {"url": {**URL, "allowUnverified": True}}},
         lambda c: (_amy(c)["source"]["url"].get("allowUnverified"), "sha256" in _amy(c)),
         (True, False)),
    case("source.local.path", {"source": {"local": {"path": "/opt/voices"}}},
         lambda c: _amy(c)["source"], {"local": {"path": "/opt/voices"}}),
    case("sha256", {"sha256": SHA}, lambda c: _amy(c)["sha256"], SHA),
    *(case(f"source.kokoro.{part}.{kind}.{key}",
           {"engine": "kokoro", "source": {"kokoro": {**KOKORO_SOURCE, part: {kind: body}}}},
           _kokoro_file(part, kind, key), body[key])
      for part in ("model", "style") for kind, body in KOKORO_FILES.items() for key in body),
    *(case(f"source.xtts.clips.[].{kind}.{key}", _xtts_patch(clips=[{kind: body}]),
           _xtts_value("clips", "[]", kind, key), body[key])
      for kind, body in XTTS_CLIP_FILES.items() for key in body),
    case("source.xtts.checkpoint.huggingFace.repo",
         _xtts_patch(checkpoint={"huggingFace": {"repo": "me/xtts"}}),
         _xtts_value("checkpoint", "huggingFace", "repo"), "me/xtts"),
    case("source.xtts.checkpoint.huggingFace.revision",
         _xtts_patch(checkpoint={"huggingFace": {"revision": "v2.0.3"}}),
         _xtts_value("checkpoint", "huggingFace", "revision"), "v2.0.3"),
    case("source.xtts.checkpoint.local.path",
         _xtts_patch(checkpoint={"local": {"path": "/opt/xtts"}}),
         _xtts_value("checkpoint", "local", "path"), "/opt/xtts"),
    *(case(f"source.xtts.checkpoint.url.{part}.{key}",
           _xtts_patch(checkpoint={"url": XTTS_URL_CHECKPOINT}),
           _xtts_value("checkpoint", "url", part, key), body[key])
      for part, body in XTTS_URL_CHECKPOINT.items() for key in body),
]


@pytest.mark.parametrize(("patch", "get", "expected"), VOICE_CASES)
def test_every_voice_field_has_an_effect(patch: dict[str, Any], get: Getter,
                                         expected: object) -> None:
    assert get(render(voice_list=voices(**patch))) == expected
    assert attempt(get, render()) != expected, "the default already renders this"


def test_engine_is_rendered_and_takes_its_own_source_shape() -> None:
    assert _amy(render(voice_list=voices(engine="piper")))["engine"] == "piper"
    assert _amy(render())["engine"] == "piper"
    kokoro = _amy(render(voice_list=voices(engine="kokoro",
                                           source={"kokoro": KOKORO_SOURCE})))
    assert (kokoro["engine"], kokoro["source"]) == ("kokoro", {"kokoro": {
        "model": {"huggingFace": {"path": "onnx/model_quantized.onnx",
                                  "repo": "onnx-community/Kokoro-82M-v1.0-ONNX",
                                  "revision": "main"}},
        "style": {"local": {"path": "/opt/styles/af_heart.bin"}}}})
    with pytest.raises(SpecError, match=r"engine .kokoro. needs source\.kokoro"):
        voice("amy", AMY, engine="kokoro")
    with pytest.raises(SpecError, match=r"source\.kokoro is for engine"):
        voice("amy", AMY, source={"kokoro": KOKORO_SOURCE})
    with pytest.raises(SpecError, match="a Kokoro voice pins each file"):
        voice("amy", AMY, engine="kokoro", source={"kokoro": KOKORO_SOURCE}, sha256=SHA)


def _kokoro_voice(name: str, key: str, model: dict[str, Any] | None = None) -> VoiceResource:
    source = {**KOKORO_SOURCE, "model": model or KOKORO_SOURCE["model"],
              "style": {"huggingFace": {"path": f"voices/{key}.bin"}}}
    return voice(name, key, engine="kokoro", source={"kokoro": source})


def _with_kokoro(*kokoro: VoiceResource) -> Children:
    names = ["amy", "joe", *(v.name for v in kokoro)]
    return render({"voices": {"names": names}}, voice_list=[*voices(), *kokoro])


KOKORO_MODEL_MIB = math.ceil(int(DEFAULT_MODEL_BYTES * MEMORY_FACTOR) / 2**20)


def test_a_kokoro_model_raises_the_memory_once_however_many_voices_share_it() -> None:
    assert KOKORO_MODEL_MIB == 705  # 92 MB int8 model x 8
    heart, george = _kokoro_voice("heart", "af_heart"), _kokoro_voice("george", "bm_george")
    shared = _with_kokoro(heart, george)
    assert server(shared)["resources"] == {
        "requests": {"cpu": "500m", "memory": f"{512 + KOKORO_MODEL_MIB}Mi"},
        "limits": {"memory": f"{2048 + KOKORO_MODEL_MIB}Mi"}}
    assert server(_with_kokoro(heart))["resources"] == server(shared)["resources"]
    assert {n: v["engine"] for n, v in manifest_voices(shared).items()} == {
        "af_heart": "kokoro", AMY: "piper", "bm_george": "kokoro", JOE: "piper"}
    assert manifest_voices(shared)["bm_george"]["source"]["kokoro"]["style"] == {
        "huggingFace": {"path": "voices/bm_george.bin", "revision": "main",
                        "repo": "onnx-community/Kokoro-82M-v1.0-ONNX"}}
    other = _kokoro_voice("fr", "ff_siwis", {"url": {"url": "https://example.org/k.onnx",
                                                     "sha256": SHA["model"]}})
    two = server(_with_kokoro(heart, george, other))["resources"]
    assert two["requests"]["memory"] == f"{512 + 2 * KOKORO_MODEL_MIB}Mi"
    assert server(render())["resources"]["requests"]["memory"] == "512Mi"  # Piper only


def test_given_server_resources_are_used_as_they_are_with_kokoro_voices() -> None:
    heart = _kokoro_voice("heart", "af_heart")
    children = render({"voices": {"names": ["amy", "heart"]},
                       "server": {"resources": RESOURCES}}, voice_list=[*voices(), heart])
    assert server(children)["resources"] == RESOURCES
    assert engine_memory(select_voices(service({"voices": {"names": ["heart"]}}), [heart])
                         ) == memory_estimate([DEFAULT_MODEL_BYTES])


def _xtts_voice(name: str, checkpoint: dict[str, Any] | None = None) -> VoiceResource:
    return voice(name, name, engine="xtts", source={"xtts": {
        **XTTS_SOURCE, "checkpoint": checkpoint or XTTS_SOURCE["checkpoint"]}})


XTTS_CHECKPOINT_MIB = math.ceil(int(xtts.DEFAULT_MODEL_BYTES * xtts.MEMORY_FACTOR) / 2**20)


def test_an_xtts_checkpoint_raises_the_memory_once_however_many_voices_share_it() -> None:
    assert XTTS_CHECKPOINT_MIB == 2673  # the published model.pth's size x 1.5
    narrator, guide = _xtts_voice("narrator"), _xtts_voice("guide")
    names = ["amy", "joe", "narrator", "guide"]
    shared = render({"voices": {"names": names}}, voice_list=[*voices(), narrator, guide])
    assert server(shared)["resources"] == {
        "requests": {"cpu": "500m", "memory": f"{512 + XTTS_CHECKPOINT_MIB}Mi"},
        "limits": {"memory": f"{2048 + XTTS_CHECKPOINT_MIB}Mi"}}
    entry = manifest_voices(shared)["narrator"]
    assert entry["engine"] == "xtts"
    assert entry["source"]["xtts"]["checkpoint"] == {
        "name": "XTTS-v2", "huggingFace": {"repo": "coqui/XTTS-v2", "revision": "main"}}
    assert entry["source"]["xtts"]["acceptLicense"] == "CPML"
    # another checkpoint directory is another loaded checkpoint; a Kokoro model adds its own
    mine = _xtts_voice("mine", {"name": "mine", "local": {"path": "/opt/xtts"}})
    heart = _kokoro_voice("heart", "af_heart")
    every = render({"voices": {"names": [*names, "mine", "heart"]}},
                   voice_list=[*voices(), narrator, guide, mine, heart])
    extra = (xtts.memory_estimate([xtts.DEFAULT_MODEL_BYTES] * 2)
             + memory_estimate([DEFAULT_MODEL_BYTES]))
    assert server(every)["resources"]["requests"]["memory"] == (
        f"{512 + math.ceil(extra / 2**20)}Mi")  # the sum rounded up to whole MiB once
    assert engine_memory(select_voices(service({"voices": {"names": ["narrator"]}}),
                                       [narrator])) == xtts.memory_estimate(
        [xtts.DEFAULT_MODEL_BYTES])


def test_an_xtts_voice_takes_its_own_source_shape() -> None:
    with pytest.raises(SpecError, match=r"engine .xtts. needs source\.xtts"):
        voice("amy", AMY, engine="xtts")
    with pytest.raises(SpecError, match=r"source\.xtts is for engine 'xtts'"):
        voice("amy", AMY, source={"xtts": XTTS_SOURCE})
    with pytest.raises(SpecError, match="an XTTS voice each file"):
        voice("amy", AMY, engine="xtts", source={"xtts": XTTS_SOURCE}, sha256=SHA)


def _unwrap(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    return annotation


def spec_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Alias paths of every field; small value objects (resources, secret refs, the
    manifest's sha256) are leaves; a voice source has the keys of every manifest kind."""
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        kind = _unwrap(info.annotation)
        if kind == Source:
            paths |= {".".join((path, *below, k.key)) for below, record in SOURCE_RECORDS.items()
                      for k in json_keys(record)}
        elif (isinstance(kind, type) and issubclass(kind, BaseModel)
                and kind not in (Resources, SecretKey)):
            paths |= spec_paths(kind, path + ".")
        else:
            paths.add(path)
    return paths


@pytest.mark.parametrize(("model", "cases", "elsewhere"), [
    (ServiceSpec, SERVICE_CASES, set()),
    (Voice, VOICE_CASES, {"engine"}),
])
def test_the_tables_cover_every_spec_field(model: type[BaseModel], cases: list[Any],
                                           elsewhere: set[str]) -> None:
    # "matchExpressions[In]" covers matchExpressions; "clips.[]" is a path's list items
    covered = {re.sub(r"\[[^\]]+\]$", "", str(c.id)) for c in cases} | elsewhere
    assert spec_paths(model) - covered == set()
    assert covered - spec_paths(model) == set(), "a table row names no field"


# --- the default rendering ------------------------------------------------------------


def test_default_children_names_and_labels() -> None:
    children = render()
    assert {role: c and (c["kind"], c["metadata"]["name"]) for role, c in children.items()} == {
        "configmap": ("ConfigMap", "speech-config"),
        "pvc": ("PersistentVolumeClaim", "speech-voices"),
        "deployment": ("Deployment", "speech"), "service": ("Service", "speech"),
        "hpa": None, "pdb": None, "podmonitor": None}
    for child in children.values():
        if child is not None:
            assert child["metadata"]["namespace"] == NS
            assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "chorus-operator"
            assert child["metadata"]["labels"].items() >= selector_labels(NAME).items()
    assert deployment_spec(children)["selector"] == {"matchLabels": selector_labels(NAME)}
    assert obj(children, "service")["spec"]["selector"] == selector_labels(NAME)
    assert template(children)["metadata"]["labels"].items() >= selector_labels(NAME).items()


def test_pod_is_locked_down() -> None:
    children = render()
    spec = pod(children)
    assert spec["automountServiceAccountToken"] is False
    # written out although they are the API's defaults, so that hand edits are undone
    assert (spec["hostNetwork"], spec["hostPID"], spec["hostIPC"]) == (False, False, False)
    assert spec["serviceAccountName"] == "default"
    assert all(c["securityContext"]["privileged"] is False
               for c in (server(children), manager(children), init(children)))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert volume(children, "tmp") == {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}
    for cont in (server(children), manager(children), init(children)):
        sec = cont["securityContext"]
        assert sec["readOnlyRootFilesystem"] is True
        assert sec["allowPrivilegeEscalation"] is False
        assert sec["runAsNonRoot"] is True
        assert sec["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in cont["volumeMounts"]
        assert cont["command"] == ["chorus"]
    mounts = {m["name"]: m for m in server(children)["volumeMounts"]}
    assert mounts["voices"]["readOnly"] is True  # only the voice manager writes voices
    # ... so the HTTP API's clone and delete are refused with a 403, not a write error.
    assert "--no-voice-cloning" in server(children)["args"]
    assert "readOnly" not in {m["name"]: m for m in manager(children)["volumeMounts"]}["voices"]


def test_containers_and_probes() -> None:
    children = render()
    assert [c["name"] for c in pod(children)["initContainers"]] == ["voice-manager-init"]
    assert [c["name"] for c in pod(children)["containers"]] == ["server", "voice-manager"]
    srv = server(children)
    assert srv["image"] == DEFAULT_SERVER_IMAGE
    assert "imagePullPolicy" not in srv
    assert srv["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert srv["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert srv["startupProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert srv["args"][:2] == ["serve", "--config"]
    assert arg(srv, "--voices-dir") == "/voices"
    assert "--no-embedded-voice" in srv["args"]
    assert (cport(srv, "wyoming"), cport(srv, "http"), cport(srv, "metrics")) == (
        10200, 5000, 9464)
    assert (arg(srv, "--http-host"), arg(srv, "--metrics-port")) == ("0.0.0.0", "9464")  # noqa: S104
    assert {k: v for k, v in template(children)["metadata"]["annotations"].items()
            if k.startswith("prometheus.io/")} == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9464",
        "prometheus.io/path": "/metrics"}
    assert srv["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"},
                                "limits": {"memory": "2Gi"}}
    vm, first = manager(children), init(children)
    assert first["args"][:2] == vm["args"][:2] == ["voices", "sync"]
    assert "--once" in first["args"] and "--once" not in vm["args"]
    assert "--status-port" not in first["args"]
    assert arg(vm, "--status-port") == str(STATUS_PORT)
    assert cport(vm, "vm-status") == STATUS_PORT
    assert vm["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "vm-status"}
    assert arg(vm, "--keep") == AMY
    assert arg(vm, "--remove-after") == "3600"
    assert env(vm, "HOME") == {"name": "HOME", "value": "/tmp"}
    assert vm["resources"] == first["resources"] == {
        "requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
    assert obj(children, "service")["spec"]["type"] == "ClusterIP"
    assert [(p["name"], p["port"], p["targetPort"])
            for p in obj(children, "service")["spec"]["ports"]] == [
        ("wyoming", 10200, "wyoming"), ("http", 5000, "http")]


def test_render_settings_supply_image_and_pull_policy() -> None:
    settings = RenderSettings(server_image="mirror.example/chorus:1",
                              image_pull_policy="IfNotPresent")
    children = render(settings=settings)
    assert _images(children) == ("mirror.example/chorus:1",) * 3
    assert _pulls(children) == ("IfNotPresent",) * 3
    children = render({"server": {"image": "own:1", "imagePullPolicy": "Always"},
                       "voiceManager": {"image": "vm:1"}}, settings=settings)
    assert _images(children) == ("own:1", "vm:1", "vm:1")
    assert _pulls(children) == ("Always",) * 3


def test_an_hf_mirror_reaches_every_voice_manager_and_nothing_else() -> None:
    children = render(settings=RenderSettings(hf_endpoint="https://hf-mirror.example"))
    pod = template(children)["spec"]
    env = {c["name"]: {e["name"]: e.get("value") for e in c.get("env", [])}
           for c in pod["initContainers"] + pod["containers"]}
    assert env["voice-manager-init"]["HF_ENDPOINT"] == "https://hf-mirror.example"
    assert env["voice-manager"]["HF_ENDPOINT"] == "https://hf-mirror.example"
    assert "HF_ENDPOINT" not in env["server"]
    default = template(render())["spec"]["containers"]
    assert all("HF_ENDPOINT" not in {e["name"] for e in c.get("env", [])} for c in default)


def test_pod_labels_and_annotations_cannot_break_selector_or_checksum() -> None:
    children = render({"pod": {"labels": {"tts.chorus.dev/service": "other"},
                               "annotations": {CHECKSUM_ANNOTATION: "forged"}}})
    assert template(children)["metadata"]["labels"].items() >= selector_labels(NAME).items()
    assert checksum(children) == checksum(render())


@pytest.mark.parametrize(("resources", "workers"), [
    (None, 1),  # the default request: 500m
    ({"requests": {"cpu": "2"}}, 2),
    ({"requests": {"cpu": "2500m"}}, 3),
    ({"requests": {"cpu": "1"}, "limits": {"cpu": 4}}, 4),
    ({"limits": {"cpu": "1.4"}}, 1),
    ({"requests": {"cpu": "100m"}}, 1),
    ({"requests": {"memory": "1Gi"}}, 1),
])
def test_workers_follow_the_cpu_allowance(resources: dict[str, Any] | None,
                                          workers: int) -> None:
    patch = {"server": {"resources": resources}} if resources else {}
    assert settings_json(render(patch))["workers"] == workers


def test_autoscaling_always_has_a_cpu_request() -> None:
    children = render({"autoscaling": {"maxReplicas": 3}, **EMPTY,
                       "server": {"resources": {"requests": {"memory": "1Gi"}}}})
    assert server(children)["resources"] == {"requests": {"memory": "1Gi", "cpu": "500m"}}
    children = render({"server": {"resources": {"requests": {"memory": "1Gi"}}}})
    assert server(children)["resources"] == {"requests": {"memory": "1Gi"}}


def test_a_gpu_goes_to_the_server_alone_and_given_resources_keep_their_own() -> None:
    children = render({"server": {"gpu": {"count": 1}, "resources": {
        "requests": {"cpu": "2"}, "limits": {"memory": "4Gi"}}}})
    assert server(children)["resources"] == {
        "requests": {"cpu": "2", "nvidia.com/gpu": 1},
        "limits": {"memory": "4Gi", "nvidia.com/gpu": 1}}
    assert settings_json(children)["workers"] == 2
    for name in ("voice-manager", "voice-manager-init"):
        assert "nvidia.com/gpu" not in json.dumps(container(children, name)["resources"])
    assert "nodeSelector" not in pod(children) and "tolerations" not in pod(children)


@pytest.mark.parametrize(("device", "rendered"), [
    (None, "cuda"), ("cuda", "cuda"), ("auto", "auto")])
def test_a_gpu_runs_the_server_on_cuda_unless_the_device_is_given(
        device: str | None, rendered: str) -> None:
    given = {"device": device} if device else {}
    assert settings_json(render({"server": {"gpu": {"count": 1}, **given}}))[
        "device"] == rendered
    assert "device" not in settings_json(render())


@pytest.mark.parametrize(("patch", "message"), [
    ({"server": {"gpu": {"count": 1}, "device": "cpu"}},
     "server.gpu with server.device cpu would leave the GPUs unused"),
    ({"server": {"gpu": {"count": 1}, "backend": "openvino"}},
     "OpenVINO runs on the CPU only"),
    ({"server": {"gpu": {"count": 1}, "resources": {"limits": {"nvidia.com/gpu": 1}}}},
     "leave nvidia.com/gpu out of server.resources"),
    ({"server": {"gpu": {"count": 1, "resourceName": MIG},
                 "resources": {"requests": {MIG: 1}}}},
     f"leave {MIG} out of server.resources"),
    ({"server": {"gpu": {"count": 1, "nodeSelector": {"gpu": "a100"}}},
      "pod": {"nodeSelector": {"gpu": "h100"}}},
     "server.gpu.nodeSelector and pod.nodeSelector give one label two values"),
    ({"server": {"gpu": {"count": 0}}}, "greater than or equal to 1"),
    ({"server": {"gpu": {"count": 1, "resourceName": "gpu"}}}, "resourceName"),
    ({"server": {"gpu": {"count": 1, "tolerations": [{"operator": "Equal"}]}}},
     "a toleration without a key needs operator Exists"),
    ({"server": {"gpu": {"count": 1, "tolerations": [
        {"key": "k", "operator": "Exists", "value": "v"}]}}},
     "a toleration with operator Exists takes no value"),
    ({"server": {"gpu": {"count": 1, "tolerations": [
        {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 30}]}}},
     "tolerationSeconds needs effect NoExecute"),
    ({"server": {"device": "cuda:1"}}, "device"),
])
def test_contradictory_gpu_specs_are_refused(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        service(patch)


@pytest.mark.usefixtures("clean_env")
def test_a_gpu_service_server_json_is_read_by_chorus_serve(tmp_path: Path) -> None:
    values = _serve_values(render({"server": {"gpu": {"count": 1}}}), tmp_path)
    assert values["device"] == "cuda"
    values = _serve_values(render({"server": {"device": "auto"}}), tmp_path)
    assert values["device"] == "auto"


# --- the ConfigMap and the checksum ---------------------------------------------------------


def test_checksum_rolls_on_settings_but_not_on_voices() -> None:
    base = render()
    assert checksum(base) == checksum(render())
    for patch in ({"server": {"workers": 5}}, {"server": {"logLevel": "DEBUG"}},
                  {"defaultVoice": JOE}, {"server": {"cache": {"maxMB": 64}}},
                  {"server": {"http": {"openaiVoices": {"alloy": AMY}}}}):
        assert checksum(render(patch)) != checksum(base), patch
    for children in (render({"voices": {"names": ["amy"]}}),
                     render({"voices": {"selector": {"matchLabels": {"tier": "home"}}}}),
                     render(voice_list=voices(source={"huggingFace": {"revision": "v2"}}))):
        assert manifest_voices(children) != manifest_voices(base)
        assert checksum(children) == checksum(base)


def test_manifest_parses_and_only_the_default_voice_is_required() -> None:
    children = render({"voices": {"selector": {"matchLabels": {"tier": "home"}}}})
    manifest = load_manifest(obj(children, "configmap")["data"]["manifest.json"])
    assert [(v.name, v.required) for v in manifest.voices] == [
        (THORSTEN, False), (AMY, True), (JOE, False)]
    selection = select_voices(service(), voices())
    assert build_manifest(service(), selection).voices == tuple(
        v.spec.manifest_entry(required=v.spec.voice == AMY) for v in selection.voices)


def _serve_values(children: Children, tmp_path: Path) -> dict[str, Any]:
    """The server container's command line resolved exactly as ``chorus serve`` does."""
    path = tmp_path / "server.json"
    path.write_text(obj(children, "configmap")["data"]["server.json"])
    serve_options = server_cli.SERVE_OPTIONS
    # Strict: every key of server.json must be a `chorus serve` option.
    resolve_options(argparse.Namespace(), serve_options, {}, load_config_file(path))
    args = [str(path) if a == "/etc/chorus/server.json" else a for a in server(children)["args"]]
    namespace = build_parser().parse_args(args)
    assert namespace.command == "serve"
    values: dict[str, Any] = server_cli._resolve(namespace, serve_options)
    ServerSettings.from_options(values)  # the settings the server would run with
    return values


@pytest.mark.usefixtures("clean_env")
def test_server_json_and_args_are_accepted_by_chorus_serve(tmp_path: Path) -> None:
    values = _serve_values(render({"server": {
        "workers": 3, "threadsPerWorker": 2, "maxRequests": 9, "voiceMemoryMB": 300,
        "maxTextChars": 400, "lengthScale": 1.2, "noiseScale": 0.3, "noiseWScale": 0.4,
        "sentenceSilence": 0.5, "logLevel": "WARNING", "maxSentenceChars": 300,
        "maxConnections": 20, "maxHttpConnections": 30, "idleTimeout": 5, "maxPipelined": 2,
        "maxRequestsPerClient": 6,
        "http": {"port": 8080, "openaiVoices": {"alloy": AMY}}, "cache": {"maxMB": 64},
        "wyoming": {"port": 10300}}}), tmp_path)
    assert values["default_voice"] == AMY
    assert (values["workers"], values["threads_per_worker"], values["max_requests"]) == (3, 2, 9)
    assert (values["voice_memory_mb"], values["max_text_chars"]) == (300, 400)
    assert (values["length_scale"], values["noise_scale"], values["noise_w_scale"]) == (
        1.2, 0.3, 0.4)
    assert (values["sentence_silence"], values["log_level"]) == (0.5, "WARNING")
    assert (values["max_sentence_chars"], values["max_connections"],
            values["max_http_connections"], values["idle_timeout"], values["max_pipelined"],
            values["max_requests_per_client"]) == (300, 20, 30, 5.0, 2, 6)
    assert values["openai_voice"] == [("alloy", AMY)]
    assert values["cache_max_mb"] == 64
    assert values["cache_dir"] == Path("/var/cache/chorus")
    assert not values["no_cache"] and not values["no_http"]
    assert (values["http_host"], values["http_port"]) == ("0.0.0.0", 8080)  # noqa: S104
    assert values["wyoming_uri"] == "tcp://0.0.0.0:10300"
    assert values["voices_dir"] == [Path("/voices")]
    assert values["no_embedded_voice"] is True

    values = _serve_values(render({"server": {"http": {"enabled": False}}}), tmp_path)
    assert values["no_http"] is True and values["no_cache"] is True

    values = _serve_values(render(), tmp_path)
    assert values["workers"] == 1 and values["cache_max_mb"] == 256


def test_an_unknown_server_json_key_would_be_refused(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    path.write_text(json.dumps({**settings_json(render()), "max-voices": 3}))
    with pytest.raises(OptionError, match="max_voices"):
        resolve_options(argparse.Namespace(), server_cli.SERVE_OPTIONS, {},
                        load_config_file(path))


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("which", ["voice-manager-init", "voice-manager"])
def test_voice_manager_args_are_accepted_by_chorus_voices_sync(which: str) -> None:
    children = render({"voiceManager": {"parallel": 3, "removeAfterSeconds": 10}})
    namespace = build_parser().parse_args(container(children, which)["args"])
    assert (namespace.command, namespace.voices_command) == ("voices", "sync")


# --- voice selection -----------------------------------------------------------------------


@pytest.mark.parametrize(("selector", "labels", "matches"), [
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchLabels": {"a": "1"}}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"},
     True),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {"a": "3"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"},
     False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": "1"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
    ({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]},
     {"a": "1"}, False),
    ({}, {"anything": "x"}, True),
])
def test_label_selector_semantics(selector: dict[str, Any], labels: dict[str, str],
                                  matches: bool) -> None:
    assert LabelSelector.model_validate(selector).matches(labels) is matches


def test_selection_is_the_union_of_names_and_selector() -> None:
    spec = service({"voices": {"names": ["joe", "ghost"],
                               "selector": {"matchLabels": {"tier": "home"}}}})
    selection = select_voices(spec, voices())
    assert selection.keys == (THORSTEN, AMY, JOE)  # sorted by voice key
    assert [v.name for v in selection.voices] == ["thorsten", "amy", "joe"]
    assert selection.missing == ("ghost",)
    assert selection.conflicts == ()
    assert selection.invalid == {}


def test_same_voice_key_same_spec_is_one_entry() -> None:
    twin = voice("amy-copy", AMY, {"tier": "home"})
    spec = service({"voices": {"names": ["amy"], "selector": {"matchLabels": {"tier": "home"}}}})
    selection = select_voices(spec, [*voices(), twin])
    assert selection.keys == (THORSTEN, AMY)
    assert selection.conflicts == ()
    assert len(manifest_voices(render(spec.model_dump(by_alias=True, exclude_none=True),
                                      [*voices(), twin]))) == 2


def test_same_voice_key_different_spec_is_a_conflict() -> None:
    rival = voice("amy-rival", AMY, {"tier": "home"},
                  source={"huggingFace": {"revision": "other"}})
    spec = service({"voices": {"names": ["amy", "joe"],
                               "selector": {"matchLabels": {"tier": "home"}}}})
    selection = select_voices(spec, [*voices(), rival])
    assert selection.conflicts == (AMY,)
    assert AMY not in selection.keys  # neither is used
    assert selection.keys == (THORSTEN, JOE)
    # a rival the service does not select is no conflict
    assert select_voices(service(), [*voices(), rival]).conflicts == ()


def test_invalid_voices_are_reported_only_when_named() -> None:
    spec = service({"voices": {"names": ["amy", "broken"]}})
    selection = select_voices(spec, voices(), {"broken": "bad spec", "unrelated": "bad too"})
    assert selection.invalid == {"broken": "bad spec"}
    assert selection.missing == ()  # it exists, it is just invalid
    assert selection.keys == (AMY,)


# --- topology: replicas, HPA, PDB, strategy, storage ------------------------------------------


def test_fixed_replicas_without_autoscaling() -> None:
    children = render()
    assert deployment_spec(children)["replicas"] == 1
    assert children["hpa"] is None and children["pdb"] is None
    assert deployment_spec(children)["strategy"] == {"type": "Recreate"}
    assert volume(children, "voices") == {
        "name": "voices", "persistentVolumeClaim": {"claimName": "speech-voices"}}
    assert obj(children, "pvc")["spec"] == {"accessModes": ["ReadWriteOnce"],
                                            "resources": {"requests": {"storage": "2Gi"}}}
    zero = render({"replicas": 0})
    assert deployment_spec(zero)["replicas"] == 0 and zero["pdb"] is None


def test_autoscaling_replaces_replicas_with_an_hpa() -> None:
    children = render({"autoscaling": {"minReplicas": 2, "maxReplicas": 5}, **EMPTY})
    assert "replicas" not in deployment_spec(children)
    assert obj(children, "hpa") == {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": obj(children, "hpa")["metadata"],
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "speech"},
                 "minReplicas": 2, "maxReplicas": 5,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 70}}}]}}
    assert obj(children, "pdb")["spec"] == {"maxUnavailable": 1,
                                            "selector": {"matchLabels": selector_labels(NAME)}}
    assert deployment_spec(children)["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


@pytest.mark.parametrize(("patch", "pdb"), [
    ({}, False),
    ({"replicas": 1}, False),
    ({"replicas": 0}, False),
    ({"replicas": 2, **EMPTY}, True),
    ({"replicas": 2, "storage": {"accessModes": ["ReadWriteMany"]}}, True),
    ({"autoscaling": {"maxReplicas": 1}, **EMPTY}, False),
    ({"autoscaling": {"maxReplicas": 2}, **EMPTY}, True),
])
def test_pdb_only_when_more_than_one_replica_is_possible(patch: dict[str, Any],
                                                         pdb: bool) -> None:
    assert (render(patch)["pdb"] is not None) is pdb


@pytest.mark.parametrize(("storage", "strategy"), [
    ({}, "Recreate"),
    ({"accessModes": ["ReadWriteOncePod"]}, "Recreate"),
    ({"accessModes": ["ReadWriteOnce", "ReadWriteMany"]}, "RollingUpdate"),
    ({"type": "EmptyDir"}, "RollingUpdate"),
])
def test_update_strategy_follows_the_claim(storage: dict[str, Any], strategy: str) -> None:
    assert deployment_spec(render({"storage": storage}))["strategy"]["type"] == strategy


def test_autoscaling_with_rwo_is_refused() -> None:
    with pytest.raises(SpecError, match="ReadWriteOnce"):
        service({"autoscaling": {"maxReplicas": 2}})


def test_empty_dir_storage() -> None:
    children = render({"storage": {"type": "EmptyDir", "size": "3Gi",
                                   "storageClassName": "ignored"}})
    assert children["pvc"] is None
    assert volume(children, "voices") == {"name": "voices", "emptyDir": {"sizeLimit": "3Gi"}}


def test_http_disabled() -> None:
    children = render({"server": {"http": {
        "enabled": False, "apiKeySecretRef": {"name": "k", "key": "k"},
        "openaiVoices": {"alloy": AMY}}}})
    srv = server(children)
    assert "--no-http" in srv["args"] and "--http-port" not in srv["args"]
    assert cport(srv, "http") is None
    # the metrics door stays, on all interfaces, and may take the HTTP API's port
    assert (arg(srv, "--http-host"), arg(srv, "--metrics-port")) == ("0.0.0.0", "9464")  # noqa: S104
    assert cport(server(render({"server": {"http": {"enabled": False}},
                                "monitoring": {"port": 5000}})), "metrics") == 5000
    assert [p["name"] for p in obj(children, "service")["spec"]["ports"]] == ["wyoming"]
    healthcheck = {"exec": {"command": ["python", "-m", "chorus.server.healthcheck"]}}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert {k: v for k, v in srv[probe].items() if k == "exec"} == healthcheck
        assert "httpGet" not in srv[probe]
    assert env(srv, "CHORUS_HEALTHCHECK_URI") == {"name": "CHORUS_HEALTHCHECK_URI",
                                                  "value": "tcp://127.0.0.1:10200"}
    assert env(srv, "CHORUS_API_KEY") is None
    assert "--no-cache" in srv["args"]
    assert "cache" not in [v["name"] for v in pod(children)["volumes"]]
    assert "openai-voice" not in settings_json(children)
