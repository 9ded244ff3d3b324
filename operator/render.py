"""Pure renderers: a TTSService and its voices -> the Kubernetes objects that run it.

Nothing here talks to the API; the handlers fetch, call these ``build_*`` functions,
apply and report, and ``chorus render`` prints the same objects for GitOps review.
So a reader finds every rendered field in this one module, and every field is
unit-tested without a cluster.

Topology choices (the why):

* One ConfigMap ``<svc>-config`` holds ``manifest.json`` (the voice manifest, read by the
  voice-manager sidecar, which notices the ConfigMap volume's symlink swap and converges
  without a restart) and ``server.json`` (``chorus serve --config``). Only
  ``server.json`` is hashed into the pod template's checksum annotation: a settings
  change rolls the pods, a voice-list change does not need to.
* A ReadWriteOnce claim can only be shared by pods on one node, so more than one replica
  with it is refused at validation (CRD CEL rule and :mod:`.models`); single-replica
  claims use the ``Recreate`` strategy, since a surge pod on another node could never
  attach the volume. ``EmptyDir`` storage gives every pod its own copy and rolls without
  downtime.
* The pods get no service-account token: the server and the voice manager never call
  the API. The operator polls the voice manager's ``/status`` port instead (see
  :mod:`.voice_reports`), so an exposed, unauthenticated Wyoming port sits in a pod
  that holds no credentials.
* ``server.gpu`` puts the GPU extended resource in the server container's limits and
  requests (equal: Kubernetes refuses an extended resource whose request differs from
  its limit), merges its node selector and tolerations into the pod's, and sets
  ``device: cuda`` in ``server.json`` unless ``server.device`` is given. The voice
  manager gets no GPU: it only downloads.
* Every server serves ``/metrics`` without the API key on a pod port of its own
  (``spec.monitoring.port``, named ``metrics``), which the Service does not carry:
  Prometheus reaches it pod by pod (``prometheus.io`` annotations or a PodMonitor, which
  only the Prometheus Operator's CRD makes servable), while the API key keeps guarding
  everything a client of the Service can reach.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from chorus.common import kokoro, xtts
from chorus.common.manifest import KokoroSource, Manifest, XttsSource

from .models import STATUS_PORT, ServiceSpec, VoiceResource

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_SERVER_IMAGE",
    "METRICS_PORT_NAME",
    "STATUS_PORT",
    "STATUS_PORT_NAME",
    "VOICES_DIR",
    "RenderSettings",
    "Selection",
    "build_children",
    "build_config_map",
    "build_deployment",
    "build_hpa",
    "build_manifest",
    "build_pdb",
    "build_pod_monitor",
    "build_pvc",
    "build_server_settings",
    "build_service",
    "child_names",
    "engine_memory",
    "labels_for",
    "select_voices",
    "selector_labels",
]

DEFAULT_SERVER_IMAGE = "ghcr.io/chorus-tts/chorus-server:0.1.0"
VOICES_DIR = "/voices"
CONFIG_DIR = "/etc/chorus"
CACHE_DIR = "/var/cache/chorus"
STATUS_PORT_NAME = "vm-status"
METRICS_PORT_NAME = "metrics"
SCRAPE_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")
CHECKSUM_ANNOTATION = "tts.chorus.dev/config-checksum"
SERVICE_LABEL = "tts.chorus.dev/service"
MANAGED_BY = "chorus-operator"

_SERVER_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"},
                     "limits": {"memory": "2Gi"}}
_MANAGER_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"},
                      "limits": {"memory": "512Mi"}}
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_SERVICE_NAME = 56
"""Longest TTSService name: child names add at most ``-config`` and must stay DNS labels."""


@dataclass(frozen=True)
class RenderSettings:
    """Operator-wide settings that shape every service (from ``chorus operator`` options)."""

    server_image: str = DEFAULT_SERVER_IMAGE
    image_pull_policy: str | None = None
    hf_endpoint: str | None = None
    """A Hugging Face mirror for every voice manager (``HF_ENDPOINT``), for clusters that
    cannot reach huggingface.co."""


@dataclass(frozen=True)
class Selection:
    """The TTSVoices a service selects, and what is wrong with that set."""

    voices: tuple[VoiceResource, ...] = ()
    missing: tuple[str, ...] = ()
    """``voices.names`` entries with no TTSVoice in the namespace."""
    conflicts: tuple[str, ...] = ()
    """Voice keys claimed by two selected TTSVoices with different specs."""
    invalid: dict[str, str] = field(default_factory=dict)
    """Selected TTSVoice name -> why its spec cannot be used."""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(v.spec.voice for v in self.voices)


def select_voices(spec: ServiceSpec, voices: list[VoiceResource],
                  invalid: dict[str, str] | None = None) -> Selection:
    """The voices ``spec`` selects among ``voices`` (one namespace), by name and selector.

    Two TTSVoices naming the same voice key are fine when their specs agree (one entry);
    when they disagree the key is a conflict and neither is used, since installing
    either would silently ignore the other.
    """
    chosen: dict[str, VoiceResource] = {}
    conflicts: set[str] = set()
    for voice in sorted(voices, key=lambda v: v.name):
        if not spec.voices.selects(voice):
            continue
        key = voice.spec.voice
        if key in chosen and chosen[key].spec != voice.spec:
            conflicts.add(key)
        chosen.setdefault(key, voice)
    for key in conflicts:
        chosen.pop(key)
    present = {v.name for v in voices} | set(invalid or {})
    missing = tuple(n for n in spec.voices.names if n not in present)
    bad = {n: why for n, why in (invalid or {}).items() if n in spec.voices.names}
    return Selection(tuple(chosen[k] for k in sorted(chosen)), missing, tuple(sorted(conflicts)),
                     bad)


# --- names and labels ------------------------------------------------------------------


def child_names(service: str) -> dict[str, str]:
    """Names of the children of TTSService ``service`` (same namespace)."""
    return {"configmap": f"{service}-config", "pvc": f"{service}-voices",
            "deployment": service, "service": service, "hpa": service, "pdb": service,
            "podmonitor": service}


def check_service_name(name: str) -> None:
    """Child names must be valid DNS labels (a Service name is one); raise ValueError."""
    if len(name) > MAX_SERVICE_NAME or not _DNS_LABEL.match(name):
        raise ValueError(f"TTSService name {name!r} must be a DNS label (lower-case letters, "
                         f"digits, '-', starting with a letter) of at most "
                         f"{MAX_SERVICE_NAME} characters")


def selector_labels(service: str) -> dict[str, str]:
    """Labels that pick this service's pods (immutable in a Deployment: never change)."""
    return {"app.kubernetes.io/name": "chorus", SERVICE_LABEL: service}


def labels_for(service: str) -> dict[str, str]:
    """Labels on every child."""
    return {**selector_labels(service), "app.kubernetes.io/instance": service,
            "app.kubernetes.io/component": "speech-server",
            "app.kubernetes.io/part-of": "chorus", "app.kubernetes.io/managed-by": MANAGED_BY}


def _meta(name: str, namespace: str, service: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels_for(service), **extra}


# --- configuration ---------------------------------------------------------------------


def build_manifest(spec: ServiceSpec, selection: Selection) -> Manifest:
    """The voice manifest: every selected voice, the default one required."""
    return Manifest(tuple(v.spec.manifest_entry(required=v.spec.voice == spec.default_voice)
                          for v in selection.voices))


def _cpu(value: int | str | None) -> float | None:
    if value is None:
        return None
    text = str(value)
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        return None


def _resources(given: Any, defaults: dict[str, dict[str, str]]) -> dict[str, Any]:
    if given is None:
        return copy.deepcopy(dict(defaults))
    out: dict[str, Any] = {}
    if given.requests:
        out["requests"] = dict(given.requests)
    if given.limits:
        out["limits"] = dict(given.limits)
    return out


def engine_memory(selection: Selection) -> int:
    """Bytes the selected voices' engines need beyond the server's default resources.

    Each distinct Kokoro model counts once, however many voices share it, at the
    engine's own estimate (:func:`chorus.common.kokoro.memory_estimate`) for a model of
    :data:`~chorus.common.kokoro.DEFAULT_MODEL_BYTES` (its size is unknown until it is
    downloaded; a pod template that changed after each download would roll the pods
    twice). Adding a voice of a model already selected changes nothing, so voices come
    and go without restarting pods; a new model does restart them, with room for it.
    XTTS voices likewise: each distinct checkpoint directory (``checkpoint.name``, which
    voices share) counts once, at :func:`chorus.common.xtts.memory_estimate` for the
    published checkpoint's size.
    """
    models = {v.spec.source.model for v in selection.voices
              if isinstance(v.spec.source, KokoroSource)}
    checkpoints = {v.spec.source.checkpoint.name for v in selection.voices
                   if isinstance(v.spec.source, XttsSource)}
    return (kokoro.memory_estimate([kokoro.DEFAULT_MODEL_BYTES] * len(models))
            + xtts.memory_estimate([xtts.DEFAULT_MODEL_BYTES] * len(checkpoints)))


def _plus(quantity: str, extra: int) -> str:
    """``512Mi`` plus ``extra`` bytes, rounded up to whole MiB."""
    mib = {"Mi": 1, "Gi": 1024}[quantity[-2:]] * int(quantity[:-2])
    return f"{mib + -(-extra // 2**20)}Mi"


def server_resources(spec: ServiceSpec, extra_memory: int = 0) -> dict[str, Any]:
    """Container resources; with autoscaling a CPU request is guaranteed (HPA needs one).

    The defaults grow by ``extra_memory`` (:func:`engine_memory`); resources the spec
    gives are used as they are.
    """
    defaults = copy.deepcopy(_SERVER_RESOURCES)
    if extra_memory:
        for kind in ("requests", "limits"):
            defaults[kind]["memory"] = _plus(defaults[kind]["memory"], extra_memory)
    res = _resources(spec.server.resources, defaults)
    if spec.autoscaling is not None and "cpu" not in res.get("requests", {}):
        res.setdefault("requests", {})["cpu"] = _SERVER_RESOURCES["requests"]["cpu"]
    gpu = spec.server.gpu
    if gpu is not None:
        for kind in ("limits", "requests"):
            res.setdefault(kind, {})[gpu.resource_name] = gpu.count
    return res


def build_server_settings(spec: ServiceSpec) -> dict[str, Any]:
    """``server.json``: ``chorus serve`` options that are settings, not pod wiring.

    The pass-through options go as the spec gives them. Workers default to the
    container's CPU limit (else request), rounded, at least one: the server's own default
    (one per CPU it can see) would count the node's cores. Every voice is preloaded: the
    volume holds exactly the voices the service declares, so "all" names them without
    putting voice names here (this file's checksum rolls the pods; a voice change must
    not), and the server stops preloading at its memory budget.
    """
    server = spec.server
    settings: dict[str, Any] = {"default-voice": spec.default_voice, "preload-voices": ["all"],
                                **server.pass_throughs()}
    if server.gpu is not None and "device" not in settings:
        settings["device"] = "cuda"
    if "workers" not in settings:
        res = server_resources(spec)
        cpu = _cpu(res.get("limits", {}).get("cpu")) or _cpu(res.get("requests", {}).get("cpu"))
        settings["workers"] = max(1, math.floor(cpu + 0.5)) if cpu else 1
    if server.http.enabled and server.http.openai_voices:
        settings["openai-voice"] = [f"{k}={v}" for k, v in
                                    sorted(server.http.openai_voices.items())]
    if server.http.enabled and server.http.public_routes:
        settings["public-routes"] = ",".join(server.http.public_routes)
    if server.http.enabled and server.http.trusted_proxies:
        settings["trusted-proxies"] = ",".join(server.http.trusted_proxies)
    if server.cache.enabled:
        settings["cache-max-mb"] = server.cache.max_mb
    return settings


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def build_config_map(name: str, namespace: str, spec: ServiceSpec,
                     selection: Selection) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(child_names(name)["configmap"], namespace, name),
            "data": {"manifest.json": build_manifest(spec, selection).to_json(),
                     "server.json": _json(build_server_settings(spec))}}


def config_checksum(spec: ServiceSpec) -> str:
    return hashlib.sha256(_json(build_server_settings(spec)).encode()).hexdigest()


# --- storage -----------------------------------------------------------------------------


def build_pvc(name: str, namespace: str, spec: ServiceSpec) -> dict[str, Any] | None:
    """The voices claim, or ``None`` for ``EmptyDir`` storage."""
    storage = spec.storage
    if storage.type != "PersistentVolumeClaim":
        return None
    pvc_spec: dict[str, Any] = {"accessModes": list(storage.access_modes),
                                "resources": {"requests": {"storage": storage.size}}}
    if storage.storage_class_name:
        pvc_spec["storageClassName"] = storage.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _meta(child_names(name)["pvc"], namespace, name), "spec": pvc_spec}


# --- the pod -----------------------------------------------------------------------------


# Security-relevant fields are written out even where they equal the API's defaults: the
# apply then undoes a hand edit of them (``privileged: true``, ``hostNetwork: true``, another
# service account) within one resync, instead of leaving it because no rendered field differs.
_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "privileged": False,
                       "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                       "capabilities": {"drop": ["ALL"]}}


def _env_secret(env_name: str, ref: Any) -> dict[str, Any]:
    return {"name": env_name,
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _server_container(spec: ServiceSpec, image: str, pull: str | None,
                      extra_memory: int) -> dict[str, Any]:
    server = spec.server
    wyoming_port = server.wyoming.port
    # The voices volume is the voice manager's and read-only here: a voice is a TTSVoice,
    # so the HTTP API's clone and delete answer 403 rather than fail on the mount.
    args = ["serve", "--config", f"{CONFIG_DIR}/server.json", "--voices-dir", VOICES_DIR,
            "--no-embedded-voice", "--no-voice-cloning",
            "--wyoming-uri", f"tcp://0.0.0.0:{wyoming_port}"]
    metrics_port = spec.monitoring.port
    # --http-host is where the metrics door listens too, with or without the HTTP API.
    args += ["--http-host", "0.0.0.0", "--metrics-port", str(metrics_port)]  # noqa: S104
    ports = [{"name": "wyoming", "containerPort": wyoming_port, "protocol": "TCP"},
             {"name": METRICS_PORT_NAME, "containerPort": metrics_port, "protocol": "TCP"}]
    env = [{"name": "CHORUS_HEALTHCHECK_URI", "value": f"tcp://127.0.0.1:{wyoming_port}"}]
    if server.http.enabled:
        args += ["--http-port", str(server.http.port)]
        ports.append({"name": "http", "containerPort": server.http.port, "protocol": "TCP"})
        ready: dict[str, Any] = {"httpGet": {"path": "/health/ready", "port": "http"}}
        live: dict[str, Any] = {"httpGet": {"path": "/health/live", "port": "http"}}
        if server.http.api_key_secret_ref is not None:
            env.append(_env_secret("CHORUS_API_KEY", server.http.api_key_secret_ref))
    else:
        args.append("--no-http")
        ready = live = {"exec": {"command": ["python", "-m", "chorus.server.healthcheck"]}}
    mounts = [{"name": "voices", "mountPath": VOICES_DIR, "readOnly": True},
              {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
              {"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    if server.cache.enabled and server.http.enabled:
        args += ["--cache-dir", CACHE_DIR]
        mounts.append({"name": "cache", "mountPath": CACHE_DIR})
    else:
        args.append("--no-cache")
    container: dict[str, Any] = {
        "name": "server", "image": image, "command": ["chorus"], "args": args,
        "ports": ports, "env": env, "resources": server_resources(spec, extra_memory),
        "volumeMounts": mounts, "securityContext": dict(_CONTAINER_SECURITY),
        "readinessProbe": {**ready, "periodSeconds": 5, "timeoutSeconds": 5,
                           "failureThreshold": 3},
        "livenessProbe": {**live, "initialDelaySeconds": 10, "periodSeconds": 15,
                          "timeoutSeconds": 10, "failureThreshold": 4},
        "startupProbe": {**live, "periodSeconds": 2, "timeoutSeconds": 5,
                         "failureThreshold": 60},
    }
    if pull:
        container["imagePullPolicy"] = pull
    return container


def _manager_args(spec: ServiceSpec, *, init: bool) -> list[str]:
    args = ["voices", "sync", "--manifest", f"{CONFIG_DIR}/manifest.json", "--dest", VOICES_DIR]
    if spec.voice_manager.parallel is not None:
        args += ["--parallel", str(spec.voice_manager.parallel)]
    if init:
        return [*args, "--once", "--only-required"]
    return [*args, "--status-port", str(STATUS_PORT), "--keep", spec.default_voice,
            "--remove-after", str(spec.voice_manager.remove_after_seconds)]


def _manager_container(spec: ServiceSpec, image: str, pull: str | None,
                       settings: RenderSettings, *, init: bool) -> dict[str, Any]:
    manager = spec.voice_manager
    env = [{"name": "HOME", "value": "/tmp"}]  # noqa: S108
    if settings.hf_endpoint:
        env.append({"name": "HF_ENDPOINT", "value": settings.hf_endpoint})
    if manager.hf_token_secret_ref is not None:
        env.append(_env_secret("HF_TOKEN", manager.hf_token_secret_ref))
    container: dict[str, Any] = {
        "name": "voice-manager-init" if init else "voice-manager", "image": image,
        "command": ["chorus"], "args": _manager_args(spec, init=init), "env": env,
        "resources": _resources(manager.resources, _MANAGER_RESOURCES),
        "volumeMounts": [{"name": "voices", "mountPath": VOICES_DIR},
                         {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
        "securityContext": dict(_CONTAINER_SECURITY),
    }
    if not init:
        container["ports"] = [{"name": STATUS_PORT_NAME, "containerPort": STATUS_PORT,
                               "protocol": "TCP"}]
        container["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": STATUS_PORT_NAME},
                                      "periodSeconds": 20, "timeoutSeconds": 5,
                                      "failureThreshold": 3}
    if pull:
        container["imagePullPolicy"] = pull
    return container


def _volumes(name: str, spec: ServiceSpec) -> list[dict[str, Any]]:
    if spec.storage.type == "PersistentVolumeClaim":
        voices: dict[str, Any] = {"name": "voices", "persistentVolumeClaim": {
            "claimName": child_names(name)["pvc"]}}
    else:
        voices = {"name": "voices", "emptyDir": {"sizeLimit": spec.storage.size}}
    volumes = [voices,
               {"name": "config", "configMap": {"name": child_names(name)["configmap"]}},
               {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    if spec.server.cache.enabled and spec.server.http.enabled:
        volumes.append({"name": "cache", "emptyDir": {
            "sizeLimit": f"{spec.server.cache.max_mb + 64}Mi"}})
    return volumes


def _scrape_annotations(spec: ServiceSpec) -> dict[str, str]:
    """Annotation-based discovery of the metrics door; the user's own pod annotations
    (set explicitly) win over these defaults."""
    if not spec.monitoring.scrape_annotations:
        return {}
    return dict(zip(SCRAPE_ANNOTATIONS, ("true", str(spec.monitoring.port), "/metrics"),
                    strict=True))


def build_deployment(name: str, namespace: str, spec: ServiceSpec,
                     settings: RenderSettings,
                     selection: Selection | None = None) -> dict[str, Any]:
    image = spec.server.image or settings.server_image
    pull = spec.server.image_pull_policy or settings.image_pull_policy
    manager_image = spec.voice_manager.image or image
    manager_pull = spec.voice_manager.image_pull_policy or pull
    pod = spec.pod
    pod_spec: dict[str, Any] = {
        "serviceAccountName": "default",  # the pods need no API access (no token either)
        "automountServiceAccountToken": False,
        "hostNetwork": False, "hostPID": False, "hostIPC": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                            "fsGroup": 1000, "fsGroupChangePolicy": "OnRootMismatch",
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [_manager_container(spec, manager_image, manager_pull, settings,
                                              init=True)],
        "containers": [_server_container(spec, image, pull,
                                        engine_memory(selection or Selection())),
                       _manager_container(spec, manager_image, manager_pull, settings,
                                          init=False)],
        "volumes": _volumes(name, spec),
    }
    gpu = spec.server.gpu
    node_selector = {**pod.node_selector, **(gpu.node_selector if gpu is not None else {})}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = [dict(t) for t in pod.tolerations]
    for toleration in (gpu.tolerations if gpu is not None else ()):
        if toleration.to_json() not in tolerations:
            tolerations.append(toleration.to_json())
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if pod.affinity is not None:
        pod_spec["affinity"] = dict(pod.affinity)
    if pod.topology_spread_constraints:
        pod_spec["topologySpreadConstraints"] = [dict(t) for t in pod.topology_spread_constraints]
    if pod.priority_class_name:
        pod_spec["priorityClassName"] = pod.priority_class_name
    if pod.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s.name} for s in pod.image_pull_secrets]

    shared_claim = (spec.storage.type == "PersistentVolumeClaim"
                    and "ReadWriteMany" not in spec.storage.access_modes)
    strategy: dict[str, Any] = ({"type": "Recreate"} if shared_claim else
                                {"type": "RollingUpdate",
                                 "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name)},
        "strategy": strategy,
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": {"labels": {**pod.labels, **labels_for(name)},
                         "annotations": {**_scrape_annotations(spec), **pod.annotations,
                                         CHECKSUM_ANNOTATION: config_checksum(spec)}},
            "spec": pod_spec,
        },
    }
    if spec.autoscaling is None:
        # With an HPA the replica count is its to set: leaving the field out of our
        # patch keeps whatever it chose.
        deployment_spec["replicas"] = spec.replicas if spec.replicas is not None else 1
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _meta(child_names(name)["deployment"], namespace, name),
            "spec": deployment_spec}


# --- exposure and scaling --------------------------------------------------------------


def build_service(name: str, namespace: str, spec: ServiceSpec) -> dict[str, Any]:
    ports = [{"name": "wyoming", "port": spec.server.wyoming.port, "targetPort": "wyoming",
              "protocol": "TCP"}]
    if spec.server.http.enabled:
        ports.append({"name": "http", "port": spec.server.http.port, "targetPort": "http",
                      "protocol": "TCP"})
    meta = _meta(child_names(name)["service"], namespace, name)
    if spec.service.annotations:
        meta["annotations"] = dict(spec.service.annotations)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"type": spec.service.type, "selector": selector_labels(name),
                     "ports": ports}}


def build_hpa(name: str, namespace: str, spec: ServiceSpec) -> dict[str, Any] | None:
    scaling = spec.autoscaling
    if scaling is None:
        return None
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": _meta(child_names(name)["hpa"], namespace, name),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": child_names(name)["deployment"]},
                     "minReplicas": scaling.min_replicas, "maxReplicas": scaling.max_replicas,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {
                             "type": "Utilization",
                             "averageUtilization": scaling.target_cpu_utilization_percentage}}}]}}


def build_pdb(name: str, namespace: str, spec: ServiceSpec) -> dict[str, Any] | None:
    """At most one pod voluntarily evicted at a time, when there can be more than one."""
    if not spec.many_replicas:
        return None
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(child_names(name)["pdb"], namespace, name),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(name)}}}


def build_pod_monitor(name: str, namespace: str, spec: ServiceSpec) -> dict[str, Any] | None:
    """A Prometheus Operator PodMonitor over this service's pods' metrics door, when asked.

    A PodMonitor rather than a ServiceMonitor: the metrics port is a pod port only (the
    Service carries the speech doors), and every pod is scraped, ready or not, so a pod
    stuck loading its voices still shows up. The voice manager's status port (its
    ``/metrics``: voices installed, download attempts, manifest errors) is the second
    endpoint; annotation-based discovery can name only one port, the server's.
    """
    monitoring = spec.monitoring
    if not monitoring.pod_monitor:
        return None
    meta = _meta(child_names(name)["podmonitor"], namespace, name)
    meta["labels"] = {**monitoring.labels, **meta["labels"]}
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": meta,
            "spec": {"selector": {"matchLabels": selector_labels(name)},
                     "podMetricsEndpoints": [
                         {"port": port, "path": "/metrics", "interval": monitoring.interval}
                         for port in (METRICS_PORT_NAME, STATUS_PORT_NAME)]}}


def build_children(name: str, namespace: str, spec: ServiceSpec, selection: Selection,
                   settings: RenderSettings) -> dict[str, dict[str, Any] | None]:
    """Every child by role; ``None`` marks a child this spec must not have (delete it)."""
    check_service_name(name)
    return {"configmap": build_config_map(name, namespace, spec, selection),
            "pvc": build_pvc(name, namespace, spec),
            "deployment": build_deployment(name, namespace, spec, settings, selection),
            "service": build_service(name, namespace, spec),
            "hpa": build_hpa(name, namespace, spec),
            "pdb": build_pdb(name, namespace, spec),
            "podmonitor": build_pod_monitor(name, namespace, spec)}
