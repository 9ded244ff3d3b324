"""Typed views of the TTSVoice and TTSService specs, parsed once at the operator's edge.

The CRD schemas in ``crds/`` are what the API server enforces; these models repeat the
rules that matter to rendering, because an object can reach the operator without the
schema having run (an emulator, an older CRD still installed, ``chorus render`` on a
file) and a half-understood spec must become a clear error, never a wrong Deployment.
Defaults here equal the CRD defaults; a test compares both so they cannot drift.

A voice's ``source`` and ``sha256`` are not modelled here: they are the manifest's
records (``chorus.common.manifest``), validated by the manifest's parser, so the rules
of a voice source (and the tests comparing them with the CRD) have one definition.
"""

from __future__ import annotations

import argparse
import re
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from chorus.common.layout import is_valid_voice_name
from chorus.common.manifest import (
    DesiredVoice,
    Engine,
    ManifestError,
    Sha256,
    Source,
    check_engine,
    check_verifiable,
    parse_sha256,
    parse_source,
    record_to_dict,
    source_to_dict,
)
from chorus.common.server_options import (
    PASS_THROUGHS,
    PassThroughOption,
    parse_networks,
    parse_route_groups,
)

__all__ = [
    "GROUP",
    "VERSION",
    "Autoscaling",
    "Gpu",
    "Monitoring",
    "ServiceSpec",
    "SpecError",
    "Storage",
    "Toleration",
    "Voice",
    "VoiceResource",
    "parse_service",
    "parse_voice",
]

GROUP = "tts.chorus.dev"
VERSION = "v1alpha1"
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")


class SpecError(ValueError):
    """A spec the operator cannot render; the message says which field and why."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel,
                              populate_by_name=True)


# --- TTSVoice ------------------------------------------------------------------------


def _parsed_by(parse: Callable[[Any, str], Any], kind: type | types.UnionType,
               where: str) -> PlainValidator:
    """Validation by the manifest's own parser, so that each rule lives in one place.

    A value already of the manifest's type passes as it is; anything else is parsed at
    ``where`` (the field's path in the spec), which the parser's messages name.
    """
    def validate(value: Any) -> Any:
        return value if isinstance(value, kind) else parse(value, where)
    return PlainValidator(validate)


SourceField = Annotated[Source, _parsed_by(parse_source, Source, "source"),
                        PlainSerializer(source_to_dict)]
Sha256Field = Annotated[Sha256, _parsed_by(parse_sha256, Sha256, "sha256"),
                        PlainSerializer(record_to_dict)]


class Voice(_Model):
    """``TTSVoice.spec``. ``source`` and ``sha256`` are the manifest's own types, parsed by
    its parser: the operator renders them into the manifest unchanged."""

    voice: str
    engine: Engine = "piper"
    source: SourceField
    sha256: Sha256Field | None = None

    @field_validator("voice")
    @classmethod
    def _safe_key(cls, voice: str) -> str:
        if not is_valid_voice_name(voice):
            raise ValueError(f"unsafe voice key {voice!r}")
        return voice

    @model_validator(mode="after")
    def _verifiable(self) -> Voice:
        check_engine(self.engine, self.source, self.sha256)
        check_verifiable(self.source, self.sha256)
        return self

    def manifest_entry(self, required: bool) -> DesiredVoice:
        """This voice as a manifest entry (its parts were validated as manifest parts)."""
        return DesiredVoice(self.voice, self.source, self.engine, required, self.sha256)


class VoiceResource(_Model):
    """A TTSVoice as the operator sees it: identity, labels and parsed spec."""

    name: str
    namespace: str
    labels: dict[str, str] = {}
    spec: Voice


# --- TTSService ----------------------------------------------------------------------


class SelectorRequirement(_Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()


class LabelSelector(_Model):
    match_labels: dict[str, str] = {}
    match_expressions: tuple[SelectorRequirement, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        """Kubernetes label-selector semantics (all terms must hold)."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and not (present and labels[req.key] in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


class VoiceSelection(_Model):
    names: tuple[str, ...] = ()
    selector: LabelSelector | None = None

    @model_validator(mode="after")
    def _something(self) -> VoiceSelection:
        if not self.names and self.selector is None:
            raise ValueError("voices needs names, a selector, or both")
        return self

    def selects(self, voice: VoiceResource) -> bool:
        return voice.name in self.names or (
            self.selector is not None and self.selector.matches(voice.labels))


class Autoscaling(_Model):
    min_replicas: int = Field(1, ge=1, le=100)
    max_replicas: int = Field(ge=1, le=100)
    target_cpu_utilization_percentage: int = Field(70, ge=1, le=100,
                                                   alias="targetCPUUtilizationPercentage")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed maxReplicas")
        return self


class Storage(_Model):
    type: Literal["PersistentVolumeClaim", "EmptyDir"] = "PersistentVolumeClaim"
    size: str = Field("2Gi", pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
    storage_class_name: str | None = None
    access_modes: tuple[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"], ...] = (
        "ReadWriteOnce",)


class Resources(_Model):
    requests: dict[str, int | str] = {}
    limits: dict[str, int | str] = {}


class SecretKey(_Model):
    name: str
    key: str


class Wyoming(_Model):
    port: int = Field(10200, ge=1, le=65535)


def _server_rule(parse: Callable[[str], Any]) -> Callable[[tuple[str, ...]], tuple[str, ...]]:
    """A list checked by the server's own option parser (its message, as a ValueError)."""
    def check(items: tuple[str, ...]) -> tuple[str, ...]:
        try:
            parse(",".join(items))
        except argparse.ArgumentTypeError as err:
            raise ValueError(str(err)) from None
        return items
    return check


class Http(_Model):
    enabled: bool = True
    port: int = Field(5000, ge=1, le=65535)
    api_key_secret_ref: SecretKey | None = None
    openai_voices: dict[str, str] = {}
    public_routes: Annotated[tuple[str, ...], AfterValidator(
        _server_rule(parse_route_groups))] = ()
    """``--public-routes``: listings an in-cluster client (Open WebUI) reads keyless."""
    trusted_proxies: Annotated[tuple[str, ...], AfterValidator(
        _server_rule(parse_networks))] = ()
    """``--trusted-proxies``: the Ingress controller's pod CIDRs, say."""


class Cache(_Model):
    enabled: bool = True
    max_mb: int = Field(256, ge=1, le=1048576, alias="maxMB")


class Toleration(_Model):
    """A Kubernetes toleration, with the API server's own rules for one."""

    key: str | None = Field(None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _rules(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if not self.key and self.operator != "Exists":
            raise ValueError("a toleration without a key needs operator Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds needs effect NoExecute")
        return self

    def to_json(self) -> dict[str, Any]:
        """As a pod spec's ``tolerations`` item takes it (unset fields left out)."""
        data: dict[str, Any] = self.model_dump(by_alias=True, exclude_none=True)
        return data


EXTENDED_RESOURCE = (r"^[a-z0-9]+(-+[a-z0-9]+)*(\.[a-z0-9]+(-+[a-z0-9]+)*)*"
                     r"/([A-Za-z0-9]|[A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9])$")
"""A domain-qualified extended resource name (``nvidia.com/gpu``)."""


class Gpu(_Model):
    """``spec.server.gpu``: GPUs per server pod and where such pods can run."""

    count: int = Field(ge=1, le=16)
    resource_name: str = Field("nvidia.com/gpu", pattern=EXTENDED_RESOURCE, max_length=253)
    node_selector: dict[str, str] = Field({}, max_length=32)
    tolerations: tuple[Toleration, ...] = Field((), max_length=32)


def _pass_through_field(option: PassThroughOption) -> tuple[Any, Any]:
    """The annotation and field of one pass-through, bounded as the CRD bounds it."""
    kind: Any = (Literal.__getitem__(option.choices) if option.choices
                 else option.type)
    exclusive = option.exclusive_minimum
    return kind | None, Field(None, alias=option.key, le=option.maximum,
                              ge=None if exclusive else option.minimum,
                              gt=option.minimum if exclusive else None)


if TYPE_CHECKING:
    _ServerPassThroughs = _Model
else:
    # Built from the table rather than written out, so a server option the operator
    # passes through is declared once (``chorus.common.server_options``); mypy sees the
    # plain base, and the values are read through ``Server.pass_throughs``.
    _ServerPassThroughs = create_model(
        "_ServerPassThroughs", __base__=_Model,
        **{option.name: _pass_through_field(option) for option in PASS_THROUGHS})


class Server(_ServerPassThroughs):
    """``spec.server``: the container's wiring, and the server options in
    :data:`~chorus.common.server_options.PASS_THROUGHS` (one property each)."""

    image: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    resources: Resources | None = None
    wyoming: Wyoming = Wyoming()
    http: Http = Http()
    cache: Cache = Cache()
    gpu: Gpu | None = None

    @model_validator(mode="after")
    def _ports(self) -> Server:
        if self.http.enabled and self.http.port == self.wyoming.port:
            raise ValueError("server.http.port and server.wyoming.port must differ")
        return self

    @model_validator(mode="after")
    def _gpu(self) -> Server:
        gpu = self.gpu
        if gpu is None:
            return self
        options = self.pass_throughs()
        if options.get("device") == "cpu":
            raise ValueError("server.gpu with server.device cpu would leave the GPUs unused: "
                             "drop one of them")
        if options.get("backend") == "openvino":
            raise ValueError("server.gpu with server.backend openvino: OpenVINO runs on the "
                             "CPU only; on a GPU every voice runs onnxruntime")
        resources = self.resources or Resources()
        if gpu.resource_name in resources.limits or gpu.resource_name in resources.requests:
            raise ValueError("server.gpu sets the GPU resource itself: leave "
                             f"{gpu.resource_name} out of server.resources")
        return self

    def pass_throughs(self) -> dict[str, int | float | str]:
        """The pass-through options this spec sets, by ``server.json`` key."""
        values = {option.option: getattr(self, option.name) for option in PASS_THROUGHS}
        return {key: value for key, value in values.items() if value is not None}


PROMETHEUS_DURATION = (r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                       r"(([0-9]+)s)?(([0-9]+)ms)?)$")
"""A Prometheus duration (``30s``, ``1m30s``), as a PodMonitor's ``interval`` takes it."""
STATUS_PORT = 9090
"""The voice manager's ``/status`` port, in the same pod (and network namespace) as the
server: no other door of the pod may take it."""


class Monitoring(_Model):
    """``spec.monitoring``: the pods' keyless metrics door and how Prometheus finds it."""

    port: int = Field(9464, ge=1, le=65535)
    """``chorus serve --metrics-port``: ``/metrics`` without the API key, on the pod only
    (the Service does not carry it)."""
    scrape_annotations: bool = True
    """``prometheus.io/scrape``/``port``/``path`` on the pod template, pointing at
    :attr:`port` (annotation-based discovery)."""
    pod_monitor: bool = False
    """Render a ``monitoring.coreos.com/v1`` PodMonitor (the Prometheus Operator's way)."""
    interval: str = Field("30s", pattern=PROMETHEUS_DURATION, max_length=32)
    labels: dict[str, str] = {}
    """Extra labels of the PodMonitor, for a Prometheus' ``podMonitorSelector``."""


class VoiceManager(_Model):
    image: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    resources: Resources | None = None
    parallel: int | None = Field(None, ge=1, le=16)
    remove_after_seconds: int = Field(3600, ge=0)
    hf_token_secret_ref: SecretKey | None = None


class ServiceExposure(_Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    annotations: dict[str, str] = {}


class ImagePullSecret(_Model):
    name: str


class Pod(_Model):
    annotations: dict[str, str] = {}
    labels: dict[str, str] = {}
    node_selector: dict[str, str] = {}
    tolerations: tuple[dict[str, Any], ...] = ()
    affinity: dict[str, Any] | None = None
    topology_spread_constraints: tuple[dict[str, Any], ...] = ()
    priority_class_name: str | None = None
    image_pull_secrets: tuple[ImagePullSecret, ...] = ()


class ServiceSpec(_Model):
    """``TTSService.spec``."""

    default_voice: str
    voices: VoiceSelection
    replicas: int | None = Field(None, ge=0, le=100)
    autoscaling: Autoscaling | None = None
    storage: Storage = Storage()
    server: Server = Server()
    voice_manager: VoiceManager = VoiceManager()
    service: ServiceExposure = ServiceExposure()
    pod: Pod = Pod()
    monitoring: Monitoring = Monitoring()

    @model_validator(mode="after")
    def _metrics_port(self) -> ServiceSpec:
        port = self.monitoring.port
        taken = {self.server.wyoming.port: "server.wyoming.port",
                 STATUS_PORT: f"the voice manager's status port {STATUS_PORT}"}
        if self.server.http.enabled:
            taken[self.server.http.port] = "server.http.port"
        if port in taken:
            raise ValueError(f"monitoring.port {port} is already {taken[port]}; the pod's "
                             "ports must differ")
        return self

    @model_validator(mode="after")
    def _gpu_nodes(self) -> ServiceSpec:
        gpu = self.server.gpu
        for label, value in (gpu.node_selector if gpu is not None else {}).items():
            if self.pod.node_selector.get(label, value) != value:
                raise ValueError("server.gpu.nodeSelector and pod.nodeSelector give one label "
                                 f"two values ({label}: {value!r} and "
                                 f"{self.pod.node_selector[label]!r})")
        return self

    @model_validator(mode="after")
    def _topology(self) -> ServiceSpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set replicas or autoscaling, not both")
        if (self.storage.type == "PersistentVolumeClaim"
                and "ReadWriteMany" not in self.storage.access_modes and self.many_replicas):
            raise ValueError(
                "more than one replica cannot share a ReadWriteOnce volume across nodes: set "
                "storage.accessModes to [ReadWriteMany] or storage.type to EmptyDir")
        return self

    @property
    def many_replicas(self) -> bool:
        """True when more than one pod may run (PDB, rolling updates)."""
        if self.autoscaling is not None:
            return self.autoscaling.max_replicas > 1
        return (self.replicas if self.replicas is not None else 1) > 1


def _format_error(kind: str, err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        if isinstance(item.get("ctx", {}).get("error"), ManifestError):
            where = ""  # the manifest's parser named the field's whole path itself
        parts.append(f"{where}: {message}" if where else message)
    return f"invalid {kind} spec: " + "; ".join(parts)


def parse_voice(body: dict[str, Any]) -> VoiceResource:
    """A TTSVoice object (as read from the API) -> :class:`VoiceResource`."""
    meta = body.get("metadata") or {}
    try:
        spec = Voice.model_validate(body.get("spec") or {})
    except ValidationError as err:
        raise SpecError(_format_error("TTSVoice", err)) from None
    return VoiceResource(name=str(meta.get("name", "")), namespace=str(meta.get("namespace", "")),
                         labels=dict(meta.get("labels") or {}), spec=spec)


def parse_service(body: dict[str, Any]) -> ServiceSpec:
    """``TTSService.spec`` -> :class:`ServiceSpec`; raises :class:`SpecError`."""
    try:
        spec = ServiceSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        raise SpecError(_format_error("TTSService", err)) from None
    if not is_valid_voice_name(spec.default_voice):
        raise SpecError(f"invalid TTSService spec: defaultVoice: unsafe voice key "
                        f"{spec.default_voice!r}")
    return spec
