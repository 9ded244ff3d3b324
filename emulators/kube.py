"""A Kubernetes API emulator for operator tests: kmock's ``KubernetesEmulator``, gaps closed.

kmock 0.8 keeps objects in memory and serves them over real HTTP, which is what kopf needs,
but it treats them as plain JSON documents.  kopf relies on more of the API server's contract
than that, so :class:`ChorusKubeEmulator` overrides only the write path, the listing and the
watch-stream (each override says which gap it closes), and keeps kmock's discovery, error
rendering, fetching, request log and DSL reactions (``emulator['get /x'] << 404``) as they are:

* every write stamps ``metadata.resourceVersion`` (one global, increasing integer), a create
  also ``uid``, ``creationTimestamp`` and ``generation: 1``; ``generation`` grows only when
  something outside ``metadata`` and ``status`` changes;
* a resource that declares the ``status`` subresource keeps ``.status`` out of writes to the
  main resource, and a write to ``/status`` changes nothing but ``.status``;
* merge patches follow RFC 7386 (``null`` deletes, lists are replaced), strategic merge patches
  are treated as merge patches, JSON patches (RFC 6902) that fail (a ``test`` op included)
  answer 422, and a stale ``metadata.resourceVersion`` in a PATCH or PUT body answers 409;
* PUT replaces the object (server-owned metadata kept); a write that changes nothing is a
  no-op: no new resourceVersion and no watch event, as in Kubernetes;
* DELETE respects finalizers (``deletionTimestamp`` first, the real deletion once the last
  finalizer goes) and garbage-collects dependents (``ownerReferences[].uid``) recursively;
* lists carry the current resourceVersion, ``labelSelector``/``fieldSelector`` and
  ``limit``/``continue`` work on lists and watches;
* a watch subscribes before it takes its snapshot, resumes from ``?resourceVersion=`` by
  replaying the retained event history (``410 Gone`` once compacted), supports
  ``sendInitialEvents`` and ends after ``timeoutSeconds``.
* writes are decoded, defaulted and validated as the API server does for the kinds the
  operator writes: Deployments and Services get apps/v1 and core/v1 defaults (a
  ``RollingUpdate`` strategy of 25 %/25 %, ``protocol: TCP``, ...), container and claim
  resource quantities are stored in canonical form (``0.5`` -> ``500m``, invalid ones answer
  422), and a Deployment with ``strategy.type: Recreate`` and ``strategy.rollingUpdate``
  answers 422 (see ``canonicalize_and_validate``);
* Services get a cluster IP and node ports allocated, ``spec.clusterIP`` is immutable, and
  a type change away from ``NodePort`` drops the node ports (see ``ServiceAllocator``);
* ``writes`` logs every write request whole, and ``outage = 500`` answers the operator's
  non-watch requests with that status until cleared (failure injection);
* POST on a namespaced URL puts the URL's namespace into the object, ``generateName`` works,
  and ``/api/v1/namespaces[/name]`` works at all (kmock's URL parser takes it for a prefix).
* a kind outside ``declare_resources`` is served only once a CustomResourceDefinition for
  it is created (its served versions, scope, names and subresources), and deleting that CRD
  deletes its objects and stops serving the kind: until then every request for it answers
  404, as for the Prometheus Operator's ``monitoring.coreos.com`` kinds in a cluster
  without it (see ``_serve_crd``);
* with ``start_emulator(tls=ca)``: HTTPS with a certificate of that CA, and authentication
  as an API server does it (a client certificate of the CA or a known bearer token).

Known simplifications: the garbage collector runs synchronously inside the DELETE (a client
cannot tell it from a fast background collector; objects created with owners already gone
are collected 50 ms after their create), ``Foreground`` propagation behaves as
``Background``; namespaces need not exist and deleting one deletes nothing else; PUT does not
demand a resourceVersion; subresources other than ``status`` (``scale``) are not writable.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import copy
import datetime
import decimal
import http.client
import json
import random
import re
import ssl
import string
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import aiohttp.test_utils
import aiohttp.web
import attrs
import jsonpatch
import kmock
import trustme
import yaml
from kmock._internal.rendering import Response  # exported by kmock, but not in its __all__

T = TypeVar("T")

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

# The metadata fields that only the server sets; clients' values are ignored on writes.
_SERVER_OWNED = ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                 "deletionGracePeriodSeconds", "generation", "resourceVersion")
# Go's omitempty: Kubernetes never stores these metadata fields empty.
_OMIT_EMPTY = ("finalizers", "labels", "annotations", "ownerReferences")

Selector = Callable[[Mapping[str, Any]], bool]

# /api/v1/namespaces, /api/v1/namespaces/NAME and its /status and /finalize subresources.
_NAMESPACES_PATH = re.compile(r"^/api/v1/namespaces(?:/[^/]+)?(?:/(?:status|finalize))?/?$")
_DISGUISE = "Namespaces"  # kmock's parser treats only the lowercase word as the prefix


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status, reason, message, {})


def _now() -> str:
    """RFC 3339 in UTC with a ``Z``, as the API server writes timestamps."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rv(obj: Mapping[str, Any]) -> int:
    """The resourceVersion of an object as an integer (0 for objects put in by hand)."""
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, ``None`` deletes, the rest replaces.

    kmock's own merge refuses to put a dict over a scalar or a scalar over a dict (HTTP 500).
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result



# --- validation and canonical forms (what the API server does to our kinds on writes) --------

_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_BINARY = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}


def canonical_quantity(text: Any, field: str) -> str:
    """A resource quantity in the canonical form the API server stores (``Quantity`` in
    k8s.io/apimachinery/pkg/api/resource: "0.5" -> "500m", "1024Mi" -> "1Gi",
    "1.5Gi" -> "1536Mi", "1000m" -> "1"): binary suffixes stay binary when the value is a
    whole number of bytes of at least 1024, else the value is written with the largest
    decimal SI suffix (or ``eN`` exponent, for values written that way) that keeps the
    number whole; precision is capped at nano (rounded up). Anything else is refused
    with 422, as the API server does."""
    match = _QUANTITY.match(str(text))
    if match is None:
        raise _error(422, "Invalid", f"{field}: Invalid value: {json.dumps(text)}: quantities "
                     "must match the regular expression "
                     "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    number, suffix = decimal.Decimal(match.group(1)), match.group(2) or ""
    exponential = suffix[:1] in ("e", "E")
    if exponential:
        value, binary = number.scaleb(int(suffix[1:])), False
    elif suffix and suffix in _BINARY:
        value, binary = number * 1024 ** _BINARY.index(suffix), True
    else:
        exponent = next(e for e, s in _DECIMAL.items() if s == suffix)
        value, binary = number.scaleb(exponent), False
    value = (value.scaleb(9).to_integral_value(decimal.ROUND_CEILING)).scaleb(-9)
    if binary and abs(value) >= 1024 and value == value.to_integral_value():
        power = 0
        while power < 6 and value % 1024 ** (power + 1) == 0:
            power += 1
        return f"{int(value / 1024 ** power)}{_BINARY[power]}"
    if value == 0:
        return "0"
    for exponent in sorted(_DECIMAL, reverse=True):
        scaled = value.scaleb(-exponent)
        if scaled == scaled.to_integral_value():
            unit = (f"e{exponent}" if exponent else "") if exponential else _DECIMAL[exponent]
            return f"{int(scaled)}{unit}"
    raise AssertionError("unreachable: values are whole numbers of nano units")


def _canonical_resources(resources: Any, field: str) -> None:
    if not isinstance(resources, dict):
        return
    for part in ("requests", "limits"):
        values = resources.get(part)
        if isinstance(values, dict):
            for name, value in values.items():
                values[name] = canonical_quantity(value, f"{field}.{part}[{name}]")


def _pod_spec_of(kind: str, obj: Mapping[str, Any]) -> Any:
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"):
        return ((spec.get("template") or {}).get("spec")) if isinstance(spec, dict) else None
    return None


def _default_deployment(spec: dict[str, Any]) -> None:
    """apps/v1 ``SetDefaults_Deployment``: one replica, a rolling update of 25 %/25 %, ten
    old ReplicaSets kept, a 600 s progress deadline. Defaulting runs on every decoded write,
    so a patch that switches ``strategy.type`` to ``Recreate`` still finds the defaulted
    ``rollingUpdate`` beside it (and the validation below refuses the pair)."""
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.get("rollingUpdate")
            if not isinstance(rolling, dict):
                rolling = strategy["rollingUpdate"] = {}
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)


def _default_service(spec: dict[str, Any]) -> None:
    """core/v1 ``SetDefaults_Service`` for the fields a Chorus Service can reach: type
    ``ClusterIP``, ``sessionAffinity: None``, ``internalTrafficPolicy: Cluster``,
    ``externalTrafficPolicy: Cluster`` where node ports exist, and per port ``protocol:
    TCP`` and ``targetPort`` = ``port``."""
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in _NODE_PORT_TYPES:
        spec.setdefault("externalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))


_NODE_PORT_TYPES = ("NodePort", "LoadBalancer")


def canonicalize_and_validate(kind: str, obj: dict[str, Any]) -> None:
    """The API server's decoding, defaulting and validation of a written object, for the
    kinds and fields the operator writes: Deployments and Services get their defaults (see
    ``_default_deployment``, ``_default_service``), quantities in container resources and
    claims come back in canonical form, and a Deployment may not combine ``strategy.type:
    Recreate`` with ``strategy.rollingUpdate`` (apps/v1 validation: "may not be specified
    when strategy `type` is 'Recreate'", answered with 422)."""
    spec = obj.get("spec")
    if kind == "Deployment" and isinstance(spec, dict):
        _default_deployment(spec)
    if kind == "Service" and isinstance(spec, dict):
        _default_service(spec)
    pod_spec = _pod_spec_of(kind, obj)
    prefix = "spec.template.spec" if kind != "Pod" else "spec"
    if isinstance(pod_spec, dict):
        for group in ("initContainers", "containers"):
            for index, container in enumerate(pod_spec.get(group) or []):
                if isinstance(container, dict):
                    _canonical_resources(container.get("resources"),
                                         f"{prefix}.{group}[{index}].resources")
    if kind == "PersistentVolumeClaim":
        _canonical_resources((obj.get("spec") or {}).get("resources"), "spec.resources")
    if kind == "Deployment":
        strategy = (obj.get("spec") or {}).get("strategy") or {}
        if strategy.get("type") == "Recreate" and strategy.get("rollingUpdate") is not None:
            name = (obj.get("metadata") or {}).get("name")
            raise _error(422, "Invalid", f'Deployment.apps "{name}" is invalid: '
                         "spec.strategy.rollingUpdate: Forbidden: may not be specified when "
                         "strategy `type` is 'Recreate'")


class ServiceAllocator:
    """What the API server's Service registry adds and keeps: a cluster IP (from
    ``10.96.0.0/12``, the kubeadm default) and node ports (``30000-32767``) allocated on
    create, ``spec.clusterIP`` immutable afterwards, an update that leaves either out
    keeping the allocated value (``patchAllocatedValues``), and node ports dropped when
    the type changes to one without them and the update did not change them
    (``dropTypeDependentFields``, Kubernetes 1.20+), or refused when it did."""

    def __init__(self) -> None:
        self._next_ip = 1
        self._next_node_port = 30000

    def on_create(self, obj: dict[str, Any]) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        if spec.get("clusterIP") in (None, ""):
            host = self._next_ip
            self._next_ip += 1
            spec["clusterIP"] = f"10.96.{host >> 8 & 255}.{host & 255}"
        if spec["clusterIP"] != "None":
            spec["clusterIPs"] = [spec["clusterIP"]]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        self._node_ports(obj, spec)

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        old_spec, spec = old.get("spec") or {}, new.get("spec")
        if not isinstance(spec, dict):
            return
        name = (new.get("metadata") or {}).get("name")
        if spec.get("clusterIP") in (None, "") and old_spec.get("clusterIP"):
            for field in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if field in old_spec:
                    spec[field] = copy.deepcopy(old_spec[field])
        elif spec.get("clusterIP") != old_spec.get("clusterIP"):
            raise _error(422, "Invalid", f'Service "{name}" is invalid: spec.clusterIP: '
                         f'Invalid value: "{spec.get("clusterIP")}": field is immutable')
        old_ports = {(p.get("port"), p.get("protocol")): p.get("nodePort")
                     for p in old_spec.get("ports") or [] if isinstance(p, dict)}
        if spec.get("type") in _NODE_PORT_TYPES:
            for port in spec.get("ports") or []:
                if isinstance(port, dict) and port.get("nodePort") is None:
                    kept = old_ports.get((port.get("port"), port.get("protocol")))
                    if kept is not None:
                        port["nodePort"] = kept
        elif old_spec.get("type") in _NODE_PORT_TYPES:
            for port in spec.get("ports") or []:
                if (isinstance(port, dict) and port.get("nodePort") is not None
                        and port["nodePort"] == old_ports.get((port.get("port"),
                                                               port.get("protocol")))):
                    del port["nodePort"]
            spec.pop("externalTrafficPolicy", None)
        self._node_ports(new, spec)

    def _node_ports(self, obj: dict[str, Any], spec: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        for index, port in enumerate(spec.get("ports") or []):
            if not isinstance(port, dict):
                continue
            if spec.get("type") in _NODE_PORT_TYPES:
                if port.get("nodePort") is None:
                    port["nodePort"] = self._next_node_port
                    self._next_node_port += 1
            elif port.get("nodePort") is not None:
                raise _error(422, "Invalid", f'Service "{name}" is invalid: '
                             f"spec.ports[{index}].nodePort: Forbidden: may not be used when "
                             f"`type` is '{spec.get('type')}'")


# --- selectors -------------------------------------------------------------------------------

_LABEL_REQUIREMENT = re.compile(
    r"^\s*(?:!\s*(?P<absent>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*$")
_FIELD_REQUIREMENT = re.compile(r"^\s*(?P<path>[\w.-]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*?)\s*$")


def _split_requirements(text: str) -> list[str]:
    """Split a selector on the commas that are not inside ``in (...)`` value lists."""
    parts: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part for part in parts if part.strip()]


def _label_matches(labels: Mapping[str, Any], op: str, key: str, values: frozenset[str]) -> bool:
    if op == "exists":
        return key in labels
    if op == "absent":
        return key not in labels
    if op == "in":
        return labels.get(key) in values
    return labels.get(key) not in values  # notin, !=: also true when the label is absent


def parse_label_selector(text: str) -> Selector:
    """``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a notin (x,y)``, comma-ANDed.

    The returned predicate takes the labels dict.  A malformed selector is a 400, as in Kubernetes.
    """
    requirements: list[tuple[str, str, frozenset[str]]] = []
    for part in _split_requirements(text):
        match = _LABEL_REQUIREMENT.match(part)
        if match is None:
            raise _error(400, "BadRequest", f"unable to parse requirement: {part!r}")
        if match["absent"]:
            requirements.append(("absent", match["absent"], frozenset()))
        elif match["op"]:
            op = "notin" if match["op"] == "!=" else "in"
            requirements.append((op, match["key"], frozenset([match["value"]])))
        elif match["setop"]:
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append((match["setop"], match["key"], values))
        else:
            requirements.append(("exists", match["key"], frozenset()))
    return lambda labels: all(_label_matches(labels, *req) for req in requirements)


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def parse_field_selector(text: str) -> Selector:
    """``path=value``, ``path==value``, ``path!=value`` over any dotted path, comma-ANDed.

    Kubernetes allows only a few paths per resource (``metadata.name``, ``metadata.namespace``
    everywhere); the emulator accepts every path, a missing field reading as ``""``.
    The returned predicate takes the whole object.
    """
    requirements: list[tuple[str, bool, str]] = []
    for part in _split_requirements(text):
        match = _FIELD_REQUIREMENT.match(part)
        if match is None:
            raise _error(400, "BadRequest", f"invalid field selector: {part!r}")
        requirements.append((match["path"], match["op"] == "!=", match["value"]))
    return lambda obj: all((_field_value(obj, path) == value) != negated
                           for path, negated, value in requirements)


def _header(request: kmock.Request, name: str) -> str:
    for key, value in request.headers.items():
        if key.lower() == name.lower():
            return value
    return ""


# --- the emulator ----------------------------------------------------------------------------

@dataclass(frozen=True)
class WatchEvent:
    """One change, as kept in the history and fanned out to the open watch-streams."""

    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None = None  # the previous state of a MODIFIED object

    @property
    def rv(self) -> int:
        return _rv(self.obj)


KUBECONFIG_TOKEN = "emulator-token"  # noqa: S105 - a dummy credential of the emulator
"""The bearer token in the kubeconfigs written here (the operator's identity)."""

_REQUEST_LOG = 8
"""Requests kmock keeps in its log (see ``ChorusKubeEmulator._forget_old_requests``)."""


@attrs.define(kw_only=True)
class ChorusKubeEmulator(kmock.KubernetesEmulator):
    """``kmock.KubernetesEmulator`` with the API-server semantics kopf relies on (see module doc).

    Objects stay in ``emulator.objects`` (kmock's view, with histories) for assertions.
    """

    # Watch events kept per resource for ``?resourceVersion=`` resumption; older ones answer 410.
    history_limit: int = 10_000

    _last_rv: int = attrs.field(default=0, init=False)
    _history: dict[kmock.resource, collections.deque[WatchEvent]] = attrs.field(
        factory=lambda: collections.defaultdict(collections.deque), init=False)
    _compacted_rv: dict[kmock.resource, int] = attrs.field(factory=dict, init=False)
    # One queue per open watch-stream; ``None`` tells it to end (server shutdown).
    _watchers: dict[kmock.resource, set[asyncio.Queue[WatchEvent | None]]] = attrs.field(
        factory=lambda: collections.defaultdict(set), init=False)
    # The state a write produced, picked up by the response handler for that same request:
    # kmock's handlers look objects up by the URL/body name, which fails for generateName.
    _results: dict[kmock.Request, dict[str, Any]] = attrs.field(factory=dict, init=False)
    _gc_tasks: set[asyncio.Task[None]] = attrs.field(factory=set, init=False)
    _services: ServiceAllocator = attrs.field(factory=lambda: ServiceAllocator(), init=False)
    rbac_rules: list[dict[str, Any]] | None = attrs.field(default=None)
    """When set: RBAC ``rules`` (as in a ClusterRole) that every request made with the
    kubeconfig's token (the operator's) must be allowed by; others are answered 403
    Forbidden, as an API server would for a service account. Requests without that token
    (the test's own client) stay unrestricted."""
    outage: int | None = attrs.field(default=None)
    """When set: every request made with the kubeconfig's token (the operator's), watches
    excepted, is answered with this status (e.g. 500), as by an API server that is
    briefly unwell (etcd leader election, an overloaded apiserver)."""
    writes: list[str] = attrs.field(factory=list, init=False)
    """``METHOD path`` of every write request (POST, PUT, PATCH, DELETE) received, kept
    whole (kmock's own request log is kept short, see ``_forget_old_requests``)."""
    denied: list[str] = attrs.field(factory=list, init=False)
    """``verb group/resource`` of every request refused by ``rbac_rules``."""
    accepted_tokens: frozenset[str] | None = attrs.field(default=None)
    """When set: authentication as an API server without anonymous access does it
    (``--anonymous-auth=false``): a request needs a client certificate that TLS verified
    against the client CA, or ``Authorization: Bearer`` with one of these tokens; any
    other request is answered 401 Unauthorized."""
    _crd_kinds: dict[str, list[kmock.resource]] = attrs.field(factory=dict, init=False)
    """CRD name -> the resources it made servable."""
    authenticated: list[str] = attrs.field(factory=list, init=False)
    """How each accepted request proved its identity: ``cert:<CN>`` or ``token:<token>``."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock maps PUT to no action at all, so a replace fell through to "404 endpoint".
        self.fallback[kmock.method.PUT] << self._serve_replace

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion (that of the latest write)."""
        return str(self._last_rv)

    def stop_watches(self) -> None:
        """End every open watch-stream, so that the HTTP server can shut down at once."""
        for queues in self._watchers.values():
            for queue in queues:
                queue.put_nowait(None)

    # -- namespaces: kmock's URL parser reads /api/v1/namespaces/x as "in namespace x" and
    # crashes on the bare /api/v1/namespaces, so that resource goes in under a disguise (a
    # plural kmock parses as such) that _handle() takes off again.

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if self.accepted_tokens is not None:
            identity = self._authenticate(raw_request)
            if identity is None:
                return aiohttp.web.json_response(
                    {"kind": "Status", "apiVersion": "v1", "metadata": {},
                     "status": "Failure", "message": "Unauthorized",
                     "reason": "Unauthorized", "code": 401}, status=401)
            self.authenticated.append(identity)
        if _NAMESPACES_PATH.match(raw_request.path):
            path = raw_request.path.replace("/namespaces", f"/{_DISGUISE}", 1)
            raw_request = raw_request.clone(
                rel_url=raw_request.rel_url.with_path(path).with_query(raw_request.rel_url.query))
        return await super().__call__(raw_request)

    def _authenticate(self, raw_request: aiohttp.web.BaseRequest) -> str | None:
        """``cert:<CN>`` or ``token:<token>`` for a known client, else ``None``.

        A presented certificate was already verified by the TLS handshake (the server's
        context trusts only the client CA), so its presence is proof enough here.
        """
        transport = raw_request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        if peer:
            subject = dict(item[0] for item in peer.get("subject", ()))
            return f"cert:{subject.get('commonName', '')}"
        scheme, _, token = raw_request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token in (self.accepted_tokens or ()):
            return f"token:{token}"
        return None

    def _undisguise(self, request: kmock.Request) -> kmock.Request:
        real = attrs.evolve(request, resource=kmock.resource("", "v1", "namespaces"),
                            url=request.url.with_path(
                                request.url.path.replace(_DISGUISE, "namespaces", 1)))
        self._requests[:] = [real if known is request else known for known in self._requests]
        return real

    # -- the write path: replaces KubernetesEmulator._handle's state changes entirely ----------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.resource.plural == _DISGUISE:
            request = self._undisguise(request)
        if (self.outage is not None and request.resource is not None
                and request.params.get("watch") not in ("true", "1")
                and _header(request, "Authorization") == f"Bearer {KUBECONFIG_TOKEN}"):
            raise _error(self.outage, "InternalError", "the server is currently unable to "
                         "handle the request")
        if (self.rbac_rules is not None and request.resource is not None
                and request.resource.plural  # discovery is open to every user
                and _header(request, "Authorization") == f"Bearer {KUBECONFIG_TOKEN}"):
            self._authorize(request)
        # kmock's _handle merges every PATCH (even JSON patches and /status) into the stored
        # dict, stamps nothing and has no PUT; so the state changes are done here instead, and
        # the rendering goes to the grandparent, skipping KubernetesEmulator's own changes.
        if request.resource is not None:
            method = str(getattr(request.method, "value", request.method)).upper()
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                self.writes.append(f"{method} {request.url.path}")
            async with self._lock:
                result: dict[str, Any] | None = None
                if request.action == kmock.action.CREATE:
                    result = self._create(request)
                elif request.action == kmock.action.UPDATE:
                    result = self._update(request, replace=False)
                elif request.method == kmock.method.PUT and request.name is not None:
                    result = self._update(request, replace=True)
                elif request.action == kmock.action.DELETE:
                    result = self._delete_request(request)
                if result is not None:
                    self._results[request] = result
                    if request.resource == _CRDS and request.action != kmock.action.DELETE:
                        self._serve_crd(result)
                if request.action == kmock.action.CREATE:
                    self._collect_dangling_later()
        self._forget_old_requests(request)
        return await super(kmock.KubernetesEmulator, self)._handle(request)

    def _authorize(self, request: kmock.Request) -> None:
        """Refuse what ``rbac_rules`` do not allow (verbs as the API server derives them)."""
        assert request.resource is not None
        method = str(request.method.value if hasattr(request.method, "value")
                     else request.method).upper()
        if method == "GET":
            verb = ("get" if request.name else
                    "watch" if request.params.get("watch") in ("true", "1") else "list")
        else:
            verb = {"POST": "create", "PATCH": "patch", "PUT": "update",
                    "DELETE": "delete" if request.name else "deletecollection"}.get(method, "?")
        resource = request.resource.plural or ""
        if request.subresource:
            resource += f"/{request.subresource}"
        group = request.resource.group or ""
        for rule in self.rbac_rules or []:
            if (group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
                    and verb in rule.get("verbs", [])):
                return
        self.denied.append(f"{verb} {group}/{resource}")
        raise _error(403, "Forbidden", f'cannot {verb} resource "{resource}" in API group '
                                       f'"{group}": not in the RBAC rules')

    def _forget_old_requests(self, current: kmock.Request) -> None:
        """Keep kmock's request log short: its reaction lookup tests ``request in view`` by
        walking every logged request through the view's filters, so with the full log each
        request cost grew with all the traffic before it (20 ms a GET after a few hundred
        calls, quadratic over a benchmark). Nothing here asserts on old requests; the
        lookup for ``current`` follows without an await, so it is still in the log."""
        if len(self._requests) > _REQUEST_LOG:
            del self._requests[:-_REQUEST_LOG]
        if not any(r is current for r in self._requests):
            self._requests.append(current)

    def _collect_dangling_later(self) -> None:
        """The real garbage collector also deletes objects *created* with owner references
        to owners that are already gone (a controller racing a delete); it does so a moment
        later, so this does too (after the create's response has been rendered)."""
        async def collect() -> None:
            await asyncio.sleep(0.05)
            async with self._lock:
                live = self._live_uids()
                for key, obj in list(self._objects.items()):
                    if obj.deleted:
                        continue
                    refs = (obj.raw.get("metadata") or {}).get("ownerReferences") or []
                    owners = {ref.get("uid") for ref in refs if isinstance(ref, dict)}
                    if owners and not owners & live:
                        self._delete(key)

        task = asyncio.get_running_loop().create_task(collect())
        self._gc_tasks.add(task)
        task.add_done_callback(self._gc_tasks.discard)

    def _next_rv(self) -> str:
        self._last_rv += 1
        return str(self._last_rv)

    def _info(self, resource: kmock.resource) -> kmock.ResourceInfo:
        """The declared info of a resource; 404 for resources the server does not serve."""
        if resource in self._resources:
            return self._resources[resource]
        if any(known == resource for known in self._get_resources()):
            return kmock.ResourceInfo()
        raise kmock.KubernetesResourceNotFoundError()

    def _emit(self, resource: kmock.resource, event: WatchEvent) -> None:
        history = self._history[resource]
        history.append(event)
        while len(history) > self.history_limit:
            self._compacted_rv[resource] = history.popleft().rv
        for queue in self._watchers.get(resource, ()):
            queue.put_nowait(event)

    def _store(self, key: tuple[kmock.resource, str | None, str], obj: dict[str, Any]) -> None:
        if key in self._objects:
            self._objects[key].history.append(obj)
        else:
            self._objects[key] = obj

    def _create(self, request: kmock.Request) -> dict[str, Any]:
        assert request.resource is not None
        resource, info = request.resource, self._info(request.resource)
        if not isinstance(request.data, dict) or not isinstance(
                request.data.get("metadata", {}), dict):
            raise _error(400, "BadRequest", "the body must be a JSON object with metadata")
        obj = copy.deepcopy(request.data)
        meta: dict[str, Any] = obj.setdefault("metadata", {})
        namespaced = info.namespaced if info.namespaced is not None else bool(request.namespace)
        namespace: str | None = None
        if namespaced:  # the URL's namespace wins (kmock left it out when the body had none)
            if request.namespace and meta.get("namespace") not in (None, "", request.namespace):
                raise _error(400, "BadRequest", "the namespace of the provided object does not "
                             "match the namespace sent on the request")
            namespace = request.namespace or meta.get("namespace") or None
            if namespace is None:
                raise _error(400, "BadRequest", "a namespaced object needs a namespace")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        name = meta.get("name") or ""
        while not name and meta.get("generateName"):
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            candidate = f"{meta['generateName']}{suffix}"
            key_candidate = (resource, namespace, candidate)
            if key_candidate not in self._objects or self._objects[key_candidate].deleted:
                name = candidate
        if not name:
            raise _error(422, "Invalid", "metadata.name: Required value: name or generateName "
                         "is required")
        key = (resource, namespace, name)
        if key in self._objects and not self._objects[key].deleted:
            raise _error(409, "AlreadyExists", f"{resource.plural} {name!r} already exists")
        obj["apiVersion"] = f"{resource.group}/{resource.version}" if resource.group else (
            resource.version or "v1")
        if info.kind:
            obj["kind"] = info.kind
        if "status" in info.subresources:
            obj.pop("status", None)  # status only through /status, as Kubernetes does
        for field in _SERVER_OWNED:
            meta.pop(field, None)
        canonicalize_and_validate(info.kind or "", obj)
        if info.kind == "Service":
            self._services.on_create(obj)
        meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1,
                    resourceVersion=self._next_rv())
        if namespace is not None:
            meta["namespace"] = namespace
        _omit_empty(meta)
        self._store(key, obj)
        self._emit(resource, WatchEvent("ADDED", obj))
        return obj

    def _update(self, request: kmock.Request, *, replace: bool) -> dict[str, Any]:
        assert request.resource is not None and request.name is not None
        resource, info = request.resource, self._info(request.resource)
        key = (resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        to_status = request.subresource == "status"
        if request.subresource is not None and not (to_status and "status" in info.subresources):
            raise _error(404, "NotFound", f"the emulator cannot write {request.subresource!r}")
        old = copy.deepcopy(self._objects[key].raw)
        old_meta: dict[str, Any] = old.setdefault("metadata", {})
        new = self._replacement(request, old) if replace else self._patched(request, old)
        if not isinstance(new, dict) or not isinstance(new.setdefault("metadata", {}), dict):
            raise _error(422, "Invalid", "the result is not an object with metadata")
        new_meta: dict[str, Any] = new["metadata"]

        # Optimistic concurrency: a resourceVersion or uid in the body is a precondition.
        sent_rv, sent_uid = new_meta.get("resourceVersion"), new_meta.get("uid")
        if sent_rv not in (None, "") and str(sent_rv) != str(old_meta.get("resourceVersion")):
            raise _error(409, "Conflict", "the object has been modified; please apply your "
                         "changes to the latest version and try again")
        if sent_uid not in (None, "") and sent_uid != old_meta.get("uid"):
            raise _error(409, "Conflict", f"Precondition failed: UID in precondition: "
                         f"{sent_uid}, UID in object meta: {old_meta.get('uid')}")

        if to_status:  # /status changes .status only
            new = {key_: value for key_, value in old.items() if key_ != "status"} | (
                {"status": new["status"]} if "status" in new else {})
            new_meta = new["metadata"] = copy.deepcopy(old_meta)
        else:
            for field in _SERVER_OWNED:
                if field in old_meta:
                    new_meta[field] = old_meta[field]
                else:
                    new_meta.pop(field, None)
            for field in ("apiVersion", "kind"):
                if field in old:
                    new[field] = old[field]
            if "status" in info.subresources:  # the main resource does not write .status
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]
        _omit_empty(new_meta)
        if not to_status:
            canonicalize_and_validate(info.kind or "", new)
            if info.kind == "Service":
                self._services.on_update(old, new)

        if old_meta.get("deletionTimestamp") and (
                set(new_meta.get("finalizers", [])) - set(old_meta.get("finalizers", []))):
            raise _error(422, "Invalid", "metadata.finalizers: Forbidden: no new finalizers "
                         "can be added if the object is being deleted")
        if new == old:
            return old  # a no-op write: no new resourceVersion, no watch event
        if _essence(new) != _essence(old):
            new_meta["generation"] = int(old_meta.get("generation") or 1) + 1
        if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
            return self._remove(key, new)  # the last finalizer is gone: delete it for real
        new_meta["resourceVersion"] = self._next_rv()
        self._store(key, new)
        self._emit(resource, WatchEvent("MODIFIED", new, old))
        return new

    def _patched(self, request: kmock.Request, old: dict[str, Any]) -> Any:
        content_type = _header(request, "Content-Type").split(";")[0].strip().lower()
        if content_type == JSON_PATCH:
            if not isinstance(request.data, list):
                raise _error(400, "BadRequest", "a JSON patch must be a list of operations")
            try:
                return jsonpatch.apply_patch(old, request.data)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException,
                    TypeError, KeyError) as exc:
                # kmock lets JsonPatchTestFailed escape as a 500; kopf expects a 422 here.
                raise _error(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from exc
        if content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
            if not isinstance(request.data, dict):
                raise _error(400, "BadRequest", "a merge patch must be a JSON object")
            return merge_patch(old, request.data)
        raise _error(415, "UnsupportedMediaType",
                     f"the body of the request was in an unknown format ({content_type!r}) - "
                     f"accepted media types include: {JSON_PATCH}, {MERGE_PATCH}, "
                     f"{STRATEGIC_MERGE_PATCH}")

    @staticmethod
    def _replacement(request: kmock.Request, old: dict[str, Any]) -> Any:
        if not isinstance(request.data, dict):
            raise _error(400, "BadRequest", "the body must be a JSON object")
        name = (request.data.get("metadata") or {}).get("name")
        if name not in (None, "", request.name):
            raise _error(400, "BadRequest", f"the name of the object ({name}) does not match "
                         f"the name on the URL ({request.name})")
        return copy.deepcopy(request.data)

    def _delete_request(self, request: kmock.Request) -> dict[str, Any]:
        assert request.resource is not None and request.name is not None
        self._info(request.resource)
        key = (request.resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        options = request.data if isinstance(request.data, dict) else {}
        meta = self._objects[key].raw.get("metadata") or {}
        for field in ("uid", "resourceVersion"):
            expected = (options.get("preconditions") or {}).get(field)
            if expected and expected != meta.get(field):
                raise _error(409, "Conflict", f"Precondition failed: {field} in precondition: "
                             f"{expected}, {field} in object meta: {meta.get(field)}")
        policy = options.get("propagationPolicy") or request.params.get("propagationPolicy")
        return self._delete(key, orphan=policy == "Orphan")

    def _delete(self, key: tuple[kmock.resource, str | None, str], *,
                orphan: bool = False) -> dict[str, Any]:
        old = copy.deepcopy(self._objects[key].raw)
        meta: dict[str, Any] = old.setdefault("metadata", {})
        if not meta.get("finalizers"):
            return self._remove(key, old, orphan=orphan)
        if meta.get("deletionTimestamp"):
            return old  # already being deleted, waiting for the finalizers
        new = copy.deepcopy(old)
        new["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0,
                               resourceVersion=self._next_rv())
        self._store(key, new)
        self._emit(key[0], WatchEvent("MODIFIED", new, old))
        return new

    def _remove(self, key: tuple[kmock.resource, str | None, str], state: dict[str, Any], *,
                orphan: bool = False) -> dict[str, Any]:
        """Really delete an object, then its dependents (kmock has no garbage collector)."""
        final = copy.deepcopy(state)
        final.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
        self._store(key, final)
        self._objects[key].delete()
        self._emit(key[0], WatchEvent("DELETED", final))
        if key[0] == _CRDS:
            self._withdraw_crd(final)
        uid = final["metadata"].get("uid")
        if uid and orphan:
            self._orphan_dependents(uid)
        elif uid:
            self._collect_garbage(uid)
        return final

    def _serve_crd(self, crd: Mapping[str, Any]) -> None:
        """Serve the kind a created or changed CRD defines, in each of its served versions
        (apiextensions' job in a real API server; Established at once here)."""
        name = str((crd.get("metadata") or {}).get("name") or "")
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
        if not (group and plural and kind):
            return
        for resource in self._crd_kinds.pop(name, []):
            self.resources.pop(resource, None)
        served = []
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            resource = kmock.resource(group, version["name"], plural)
            self.resources[resource] = kmock.ResourceInfo(
                kind=kind, singular=names.get("singular") or kind.lower(),
                namespaced=spec.get("scope") == "Namespaced", verbs=set(_VERBS),
                subresources=set(version.get("subresources") or {}),
                shortnames=set(names.get("shortNames") or ()),
                categories=set(names.get("categories") or ()))
            served.append(resource)
        self._crd_kinds[name] = served

    def _withdraw_crd(self, crd: Mapping[str, Any]) -> None:
        """A deleted CRD takes its objects with it, and its kind is no longer served."""
        name = str((crd.get("metadata") or {}).get("name") or "")
        for resource in self._crd_kinds.pop(name, []):
            for key in [key for key in self._objects if key[0] == resource]:
                if not self._objects[key].deleted:
                    self._remove(key, copy.deepcopy(self._objects[key].raw))
                del self._objects[key]
            self.resources.pop(resource, None)

    def _orphan_dependents(self, owner_uid: str) -> None:
        """``propagationPolicy: Orphan``: the garbage collector takes the owner's reference
        out of each dependent (a write of its own), so nothing collects them later."""
        for key, obj in list(self._objects.items()):
            if obj.deleted:
                continue
            old = copy.deepcopy(obj.raw)
            refs = (old.get("metadata") or {}).get("ownerReferences") or []
            kept = [ref for ref in refs if not (isinstance(ref, dict)
                                                and ref.get("uid") == owner_uid)]
            if len(kept) == len(refs):
                continue
            new = copy.deepcopy(old)
            new["metadata"]["ownerReferences"] = kept
            _omit_empty(new["metadata"])
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._store(key, new)
            self._emit(key[0], WatchEvent("MODIFIED", new, old))

    def _collect_garbage(self, owner_uid: str) -> None:
        for key, obj in list(self._objects.items()):
            if obj.deleted:
                continue
            refs = (obj.raw.get("metadata") or {}).get("ownerReferences") or []
            owners = {ref.get("uid") for ref in refs if isinstance(ref, dict)}
            if owner_uid in owners and not (owners - {owner_uid}) & self._live_uids():
                self._delete(key)

    def _live_uids(self) -> set[str]:
        return {(obj.raw.get("metadata") or {}).get("uid", "")
                for obj in self._objects.values() if not obj.deleted}

    # -- the response handlers for the writes ---------------------------------------------

    async def _serve_create(self, request: kmock.Request) -> kmock.Payload:
        return Response(status=201, payload=self._results.pop(request))

    async def _serve_update(self, request: kmock.Request) -> kmock.Payload:
        return self._results.pop(request)

    async def _serve_delete(self, request: kmock.Request) -> kmock.Payload:
        return self._results.pop(request)

    async def _serve_replace(self, request: kmock.Request) -> kmock.Payload:
        if request.resource is None or request.name is None:
            raise kmock.KubernetesEndpointNotFoundError()
        return self._results.pop(request)

    # -- reading -------------------------------------------------------------------------------

    def _selectors(self, request: kmock.Request) -> Selector:
        labels = parse_label_selector(request.params.get("labelSelector", ""))
        fields = parse_field_selector(request.params.get("fieldSelector", ""))

        def check(obj: Mapping[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            return (
                (request.namespace is None or meta.get("namespace") == request.namespace)
                and (request.name is None or meta.get("name") == request.name)
                and labels(meta.get("labels") or {}) and fields(obj))
        return check

    def _live(self, resource: kmock.resource, check: Selector) -> list[dict[str, Any]]:
        objs = [obj.raw for (res, _, _), obj in self._objects.items()
                if res == resource and not obj.deleted]
        objs = [obj for obj in objs if check(obj)]
        return sorted(objs, key=lambda obj: (obj.get("metadata", {}).get("namespace") or "",
                                             obj.get("metadata", {}).get("name") or ""))

    def _list_meta(self, resource: kmock.resource) -> dict[str, str]:
        # NB: not .get(): that is typed as ResourceInfo | ResourceDict.
        info = self._resources[resource] if resource in self._resources else None  # noqa: SIM401
        api_version = f"{resource.group}/{resource.version}" if resource.group else "v1"
        kind = f"{info.kind}List" if info is not None and info.kind else "List"
        return {"apiVersion": api_version, "kind": kind}

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        # kmock answers resourceVersion "..." and ignores selectors and paging.
        assert request.resource is not None
        self._info(request.resource)
        check = self._selectors(request)
        try:
            limit = int(request.params.get("limit") or 0)
            token = request.params.get("continue") or ""
            start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        except ValueError as exc:
            raise _error(400, "BadRequest", f"invalid limit or continue: {exc}") from exc
        async with self._lock:
            items = self._live(request.resource, check)
            meta: dict[str, Any] = {"resourceVersion": self.resource_version}
        page = items[start:start + limit] if limit > 0 else items[start:]
        if limit > 0 and start + limit < len(items):
            meta["continue"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        return {**self._list_meta(request.resource), "metadata": meta, "items": page}

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        # kmock takes its snapshot before it subscribes (changes in between are lost) and
        # ignores resourceVersion, selectors and timeoutSeconds. Errors raised before the first
        # yield still render as plain HTTP errors.
        assert request.resource is not None
        resource = request.resource
        self._info(resource)
        check = self._selectors(request)
        since_param = request.params.get("resourceVersion") or ""
        initial_events = request.params.get("sendInitialEvents") == "true"
        try:
            since = int(since_param) if since_param else None
            timeout = float(request.params["timeoutSeconds"]) if request.params.get(
                "timeoutSeconds") else None
        except ValueError as exc:
            raise _error(400, "BadRequest", f"invalid watch parameter: {exc}") from exc
        yield b""  # the headers go out now, the stream is open even if nothing happens

        queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self._watchers[resource].add(queue)  # subscribe first, then read what already is
        try:
            async with self._lock:
                horizon = self._last_rv  # events up to here are in the replay below
                replay: list[WatchEvent]
                if since is None or since == 0 or initial_events:
                    replay = [WatchEvent("ADDED", obj) for obj in self._live(resource, check)]
                elif since < self._compacted_rv.get(resource, 0):
                    replay = []
                    horizon = -1
                else:
                    replay = [event for event in self._history[resource] if event.rv > since]
            if horizon < 0:
                yield {"type": "ERROR", "object": {
                    "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                    "code": 410, "reason": "Expired",
                    "message": f"too old resource version: {since}"}}
                return
            for event in replay:
                if (wire := _on_the_wire(event, check)) is not None:
                    yield wire
            if initial_events:
                yield {"type": "BOOKMARK", "object": {
                    **self._list_meta(resource),
                    "metadata": {"resourceVersion": str(horizon),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}}}

            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            while True:
                try:
                    if deadline is None:
                        item = await queue.get()
                    else:
                        item = await asyncio.wait_for(queue.get(), deadline - loop.time())
                except TimeoutError:
                    return  # timeoutSeconds: the server ends the stream, the client resumes
                if item is None:
                    return
                if item.rv > horizon and (wire := _on_the_wire(item, check)) is not None:
                    yield wire
        finally:
            self._watchers[resource].discard(queue)


def _essence(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What ``generation`` tracks: everything but metadata and status."""
    return {key: value for key, value in obj.items() if key not in ("metadata", "status")}


def _omit_empty(meta: dict[str, Any]) -> None:
    for field in _OMIT_EMPTY:
        if field in meta and not meta[field]:
            del meta[field]


def _on_the_wire(event: WatchEvent, check: Selector) -> dict[str, Any] | None:
    """The event as this watcher sees it: an object that leaves its selector is DELETED for it,
    one that enters is ADDED, as the API server's watch cache does."""
    matches = check(event.obj)
    if event.type == "MODIFIED" and event.old is not None:
        matched = check(event.old)
        if matched and not matches:
            return {"type": "DELETED", "object": event.obj}
        if matches and not matched:
            return {"type": "ADDED", "object": event.obj}
    return {"type": event.type, "object": event.obj} if matches else None


# --- resources -------------------------------------------------------------------------------

_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")


def declare_resources(emulator: kmock.KubernetesScaffold) -> None:
    """Declare the resources the Chorus operator touches, with their discovery information."""

    def declare(key: str, kind: str, *, namespaced: bool = True, subresources: Iterable[str] = (),
                shortnames: Iterable[str] = (), categories: Iterable[str] = ()) -> None:
        emulator.resources[key] = kmock.ResourceInfo(
            kind=kind, singular=kind.lower(), namespaced=namespaced, verbs=set(_VERBS),
            subresources=set(subresources), shortnames=set(shortnames),
            categories=set(categories))

    declare("v1/configmaps", "ConfigMap", shortnames=["cm"])
    declare("v1/persistentvolumeclaims", "PersistentVolumeClaim", subresources=["status"],
            shortnames=["pvc"])
    declare("v1/services", "Service", subresources=["status"], shortnames=["svc"],
            categories=["all"])
    declare("v1/pods", "Pod", subresources=["status"], shortnames=["po"], categories=["all"])
    declare("v1/events", "Event", shortnames=["ev"])
    declare("v1/namespaces", "Namespace", namespaced=False, subresources=["status"],
            shortnames=["ns"])
    declare("v1/secrets", "Secret")
    declare("apps/v1/deployments", "Deployment", subresources=["status", "scale"],
            shortnames=["deploy"], categories=["all"])
    declare("autoscaling/v2/horizontalpodautoscalers", "HorizontalPodAutoscaler",
            subresources=["status"], shortnames=["hpa"], categories=["all"])
    declare("policy/v1/poddisruptionbudgets", "PodDisruptionBudget", subresources=["status"],
            shortnames=["pdb"])
    declare("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition",
            namespaced=False, subresources=["status"], shortnames=["crd", "crds"])
    declare("tts.chorus.dev/v1alpha1/ttsvoices", "TTSVoice", subresources=["status"],
            shortnames=["ttsv"])
    declare("tts.chorus.dev/v1alpha1/ttsservices", "TTSService", subresources=["status"],
            shortnames=["ttss"])


def resource_path(api_version: str, plural: str, namespace: str | None = None,
                  name: str | None = None, subresource: str | None = None) -> str:
    """The API path: ``resource_path("apps/v1", "deployments", "ns", "x", "status")``."""
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace is not None:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{name}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


# --- running it ------------------------------------------------------------------------------

class RunningEmulator(NamedTuple):
    """What :func:`start_emulator` yields; unpacks as ``(emulator, url, kubeconfig)``."""

    emulator: ChorusKubeEmulator
    url: str
    kubeconfig: Path


def write_kubeconfig(path: Path, url: str, *, namespace: str = "default",
                     ca: trustme.CA | None = None) -> Path:
    """A kubeconfig for ``url`` with the emulator's bearer token.

    With ``ca`` (an HTTPS emulator), it trusts that CA through
    ``certificate-authority-data``; without, it skips TLS verification (plain HTTP).
    """
    cluster: dict[str, Any] = {"server": url}
    if ca is None:
        cluster["insecure-skip-tls-verify"] = True
    else:
        cluster["certificate-authority-data"] = base64.b64encode(ca.cert_pem.bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": cluster}],
        "users": [{"name": "emulator", "user": {"token": KUBECONFIG_TOKEN}}],
        "contexts": [{"name": "emulator", "context": {
            "cluster": "emulator", "user": "emulator", "namespace": namespace}}],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """The HTTPS side of an emulator: a certificate of ``ca`` for 127.0.0.1/localhost, and
    client certificates of ``ca`` verified when presented (optional, as tokens also do)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


class _TLSServer(aiohttp.test_utils.RawTestServer):
    """kmock's server class serving HTTPS with a given context."""

    context: ssl.SSLContext | None = None

    async def start_server(self, **kwargs: Any) -> None:  # type: ignore[override]
        await super().start_server(ssl=self.context, **kwargs)


@contextlib.asynccontextmanager
async def start_emulator(kubeconfig: Path | None = None, *, tls: trustme.CA | None = None,
                         tokens: Iterable[str] = (KUBECONFIG_TOKEN,),
                         ) -> AsyncIterator[RunningEmulator]:
    """Serve a fresh emulator with all resources declared on 127.0.0.1, on a free port.

    Writes the kubeconfig to ``kubeconfig`` (default: a temporary file removed afterwards)::

        async with start_emulator(tmp_path / "kubeconfig") as (emulator, url, kubeconfig):
            ...

    With ``tls`` (a ``trustme.CA``) it serves HTTPS with a certificate of that CA and
    authenticates every request (``accepted_tokens=tokens`` or a client certificate of
    the CA); plain HTTP otherwise, with no authentication.
    """
    emulator = ChorusKubeEmulator(accepted_tokens=None if tls is None else frozenset(tokens))
    declare_resources(emulator)
    server_cls: type[aiohttp.test_utils.RawTestServer] = aiohttp.test_utils.RawTestServer
    if tls is not None:
        server_cls = type("TLSServer", (_TLSServer,), {"context": server_tls(tls)})
    with contextlib.ExitStack() as stack:
        if kubeconfig is None:
            tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="kube-emulator-"))
            kubeconfig = Path(tmpdir) / "kubeconfig"
        async with emulator, kmock.Server(emulator, server_cls=server_cls) as server:
            url = str(server.url).rstrip("/")
            write_kubeconfig(kubeconfig, url, ca=tls)
            try:
                yield RunningEmulator(emulator, url, kubeconfig)
            finally:
                emulator.stop_watches()
                await asyncio.sleep(0)


class ThreadedEmulator:
    """The emulator served from a thread with its own event loop, for synchronous tests.

    E.g. when the operator runs as a subprocess (``KUBECONFIG=emu.kubeconfig``)::

        with ThreadedEmulator(tmp_path / "kubeconfig") as emu:
            status, body = emu.request("POST", resource_path("v1", "configmaps", "default"),
                                       {"metadata": {"name": "x"}})
            emu.call(some_coroutine_using(emu.emulator))  # runs in the emulator's loop
    """

    def __init__(self, kubeconfig: Path | None = None, *, timeout: float = 10.0) -> None:
        self._kubeconfig = kubeconfig
        self._timeout = timeout
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="kube-emulator", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._running: RunningEmulator | None = None
        self._failure: BaseException | None = None

    def _main(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with start_emulator(self._kubeconfig) as running:
                self._running = running
                self._ready.set()
                await self._stop.wait()

        try:
            asyncio.run(serve())
        except BaseException as exc:  # noqa: BLE001  # reported in the test's thread
            self._failure = exc
        finally:
            self._ready.set()

    def __enter__(self) -> ThreadedEmulator:
        self._thread.start()
        if not self._ready.wait(self._timeout) or self._running is None:
            raise RuntimeError("the emulator did not start") from self._failure
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self._timeout)

    @property
    def running(self) -> RunningEmulator:
        if self._running is None:
            raise RuntimeError("the emulator is not running")
        return self._running

    @property
    def emulator(self) -> ChorusKubeEmulator:
        return self.running.emulator

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def kubeconfig(self) -> Path:
        return self.running.kubeconfig

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine in the emulator's event loop and wait for its result."""
        if self._loop is None:
            raise RuntimeError("the emulator is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout)

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json") -> tuple[int, Any]:
        """A plain synchronous HTTP call; returns the status and the decoded JSON body."""
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=self._timeout)
        try:
            payload = None if body is None else json.dumps(body)
            headers = {"Content-Type": content_type} if body is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            connection.close()


__all__ = [
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "ChorusKubeEmulator",
    "RunningEmulator",
    "ThreadedEmulator",
    "WatchEvent",
    "declare_resources",
    "merge_patch",
    "parse_field_selector",
    "parse_label_selector",
    "resource_path",
    "server_tls",
    "start_emulator",
    "write_kubeconfig",
]
