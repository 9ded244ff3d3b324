"""One level-based reconcile of a TTSService, and the status of its voices.

Every path (create/update/resume of a service, a changed TTSVoice, a Deployment event,
the periodic resync) ends in :meth:`Reconciler.sync_service`, which reads the current
objects from the API, renders, applies, observes and writes status. It is safe to run
at any time and any number of times; a lock per service keeps two runs from
interleaving their writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from chorus.common.manifest import license_refusal

from .apply import NotOwnedError, apply_child, delete_child
from .kube import ApiError, KubeClient
from .models import GROUP, VERSION, SpecError, VoiceResource, parse_service, parse_voice
from .render import (
    SERVICE_LABEL,
    RenderSettings,
    Selection,
    build_children,
    check_service_name,
    child_names,
    select_voices,
)
from .status import (
    PodMonitorState,
    PodReport,
    ServiceObservation,
    service_status,
    voice_status,
)
from .voice_reports import poll_pods

__all__ = ["InvalidSpecError", "OperatorConfig", "Reconciler"]

_LOGGER = logging.getLogger(__name__)

API = f"{GROUP}/{VERSION}"
_CHILD_KINDS = {"configmap": ("v1", "ConfigMap"), "pvc": ("v1", "PersistentVolumeClaim"),
                "deployment": ("apps/v1", "Deployment"), "service": ("v1", "Service"),
                "hpa": ("autoscaling/v2", "HorizontalPodAutoscaler"),
                "pdb": ("policy/v1", "PodDisruptionBudget"),
                "podmonitor": ("monitoring.coreos.com/v1", "PodMonitor")}
_OPTIONAL_KINDS = frozenset({"podmonitor"})
"""Children whose kind only a CRD of someone else's makes servable (the Prometheus
Operator's): a 404 for the kind says "not installed", which is reported, not retried."""


@dataclass(frozen=True)
class ApplyOutcome:
    """What one pass of applying the children found."""

    errors: tuple[tuple[str, str], ...] = ()
    """(reason, message) of each child the API refused or that belongs to someone else."""
    unavailable: tuple[str, ...] = ()
    """Roles whose kind the cluster does not serve (no such CRD installed)."""


class InvalidSpecError(Exception):
    """The TTSService spec cannot be rendered; its status already says why."""


@dataclass(frozen=True)
class OperatorConfig:
    """``chorus operator`` settings that shape reconciling."""

    render: RenderSettings = field(default_factory=RenderSettings)
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means the whole cluster."""
    resync_interval: float = 15.0
    poll_timeout: float = 3.0


def status_patch(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any] | None:
    """A merge patch turning ``old`` status into ``new`` (``None`` when equal)."""
    old = old or {}
    if old == new:
        return None
    patch: dict[str, Any] = dict(new)
    for key in old.keys() - new.keys():
        patch[key] = None
    return patch


def _pod_monitor_state(wanted: bool, outcome: ApplyOutcome | None) -> PodMonitorState:
    if not wanted:
        return None
    if outcome is None:
        return "pending"
    return "unavailable" if "podmonitor" in outcome.unavailable else "applied"


class Reconciler:
    """The operator's state between events: the API client and the last observations."""

    def __init__(self, client: KubeClient, config: OperatorConfig) -> None:
        self.client = client
        self.config = config
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self.reports: dict[tuple[str, str], tuple[PodReport, ...]] = {}
        self.selections: dict[tuple[str, str], frozenset[str]] = {}
        """(namespace, service) -> names of the TTSVoices it selected last time."""

    # -- reads ---------------------------------------------------------------------------

    async def _voices(self, namespace: str) -> tuple[list[VoiceResource], dict[str, str]]:
        voices, invalid = [], {}
        for body in await self.client.list(API, "TTSVoice", namespace):
            try:
                voices.append(parse_voice(body))
            except SpecError as err:
                invalid[str(body["metadata"]["name"])] = str(err)
        return voices, invalid

    async def _write_status(self, kind: str, namespace: str, name: str,
                            old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        patch = status_patch(old, new)
        if patch is None:
            return
        try:
            await self.client.patch(API, kind, namespace, name, {"status": patch},
                                    subresource="status")
        except ApiError as err:
            if err.status != 404:  # deleted meanwhile: nothing to report on
                raise

    # -- services ------------------------------------------------------------------------

    async def sync_service(self, namespace: str, name: str, *, apply: bool = True,
                           poll: bool = False) -> Selection | None:
        """Render, apply, observe, report; ``None`` when the service is gone.

        Raises :class:`InvalidSpecError` (after writing the reason into status) for a
        spec that cannot be rendered; children of an earlier valid spec stay as they
        are, so a bad edit does not take a working service down.
        """
        async with self._locks[(namespace, name)]:
            body = await self.client.get(API, "TTSService", namespace, name)
            if body is None:
                self.forget_service(namespace, name)
                return None
            meta = body.get("metadata") or {}
            generation = int(meta.get("generation") or 0)
            try:
                check_service_name(name)
                spec = parse_service(body)
            except (SpecError, ValueError) as err:
                obs = ServiceObservation(name, namespace, generation, spec_error=str(err))
                await self._write_status("TTSService", namespace, name, body.get("status"),
                                         service_status(obs, body.get("status")))
                raise InvalidSpecError(str(err)) from None

            voices, invalid = await self._voices(namespace)
            selection = select_voices(spec, voices, invalid)
            self.selections[(namespace, name)] = frozenset(v.name for v in selection.voices)
            outcome: ApplyOutcome | None = None
            if apply and spec.default_voice in selection.keys:
                # Without its default voice the init container would wait forever; keep
                # what runs and say why in status instead.
                outcome = await self._apply(name, namespace, body, spec, selection)
            deployment = await self.client.get("apps/v1", "Deployment", namespace,
                                               child_names(name)["deployment"])
            if poll:
                pods = await self.client.list("v1", "Pod", namespace,
                                              label_selector=f"{SERVICE_LABEL}={name}")
                self.reports[(namespace, name)] = tuple(
                    await poll_pods(pods, self.config.poll_timeout))
            obs = ServiceObservation(
                name, namespace, generation, default_voice=spec.default_voice,
                wyoming_port=spec.server.wyoming.port,
                http_port=spec.server.http.port if spec.server.http.enabled else None,
                selection=selection, deployment=deployment,
                reports=self.reports.get((namespace, name), ()),
                desired_replicas=spec.replicas if spec.autoscaling is None
                else spec.autoscaling.min_replicas,
                apply_errors=outcome.errors if outcome else (),
                pod_monitor=_pod_monitor_state(spec.monitoring.pod_monitor, outcome))
            await self._write_status("TTSService", namespace, name, body.get("status"),
                                     service_status(obs, body.get("status")))
            return selection

    async def _apply(self, name: str, namespace: str, owner: dict[str, Any], spec: Any,
                     selection: Selection) -> ApplyOutcome:
        """Apply every child; what could not be, and why.

        A refused child does not stop the others (a Service the user owns must not keep
        the Deployment from updating); transient trouble (5xx, network) propagates so
        the caller retries. A PodMonitor whose kind the cluster does not serve (404: the
        Prometheus Operator's CRDs are not installed) is reported as unavailable; the
        periodic resync creates it once the CRD appears.
        """
        children = build_children(name, namespace, spec, selection, self.config.render)
        owner_uid = (owner.get("metadata") or {}).get("uid")
        errors: list[tuple[str, str]] = []
        unavailable: list[str] = []
        for role, desired in children.items():
            api, kind = _CHILD_KINDS[role]
            try:
                if desired is None:
                    await delete_child(self.client, api, kind, namespace,
                                       child_names(name)[role], owner_uid)
                else:
                    await apply_child(self.client, desired, owner)
            except NotOwnedError as err:
                _LOGGER.warning("TTSService %s/%s: %s", namespace, name, err)
                errors.append(("NameTaken", str(err)))
            except ApiError as err:
                if err.status >= 500 or err.status in (409, 429):
                    raise
                if err.status == 404 and role in _OPTIONAL_KINDS:
                    _LOGGER.info("TTSService %s/%s: the cluster does not serve %s %s; not "
                                 "rendered", namespace, name, api, kind)
                    unavailable.append(role)
                    continue
                _LOGGER.warning("TTSService %s/%s: the API refused %s %s: %s", namespace, name,
                            kind, child_names(name)[role], err)
                errors.append(("ApplyFailed", f"{kind} {child_names(name)[role]}: {err}"))
        return ApplyOutcome(tuple(errors), tuple(unavailable))

    def forget_service(self, namespace: str, name: str) -> frozenset[str]:
        """Drop what is known of a deleted service; the TTSVoices it had selected."""
        self.reports.pop((namespace, name), None)
        self._locks.pop((namespace, name), None)
        return self.selections.pop((namespace, name), frozenset())

    async def services_in(self, namespace: str | None) -> list[tuple[str, str]]:
        """(namespace, name) of every TTSService in ``namespace`` (``None``: all watched)."""
        spaces: list[str | None] = ([namespace] if namespace is not None
                                    else list(self.config.namespaces) or [None])
        found = []
        for space in spaces:
            for body in await self.client.list(API, "TTSService", space):
                meta = body["metadata"]
                found.append((str(meta["namespace"]), str(meta["name"])))
        return found

    async def services_affected_by(self, namespace: str, voice: str) -> list[str]:
        """Services that name ``voice``, select by labels, or selected it last time."""
        names = []
        for body in await self.client.list(API, "TTSService", namespace):
            name = str(body["metadata"]["name"])
            voices = (body.get("spec") or {}).get("voices") or {}
            if (voice in (voices.get("names") or []) or voices.get("selector") is not None
                    or voice in self.selections.get((namespace, name), frozenset())):
                names.append(name)
        return names

    # -- voices --------------------------------------------------------------------------

    async def sync_voice(self, namespace: str, name: str) -> None:
        """Write a TTSVoice's status from the reports of the services that use it."""
        body = await self.client.get(API, "TTSVoice", namespace, name)
        if body is None:
            return
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        refusal = None
        try:
            spec = parse_voice(body).spec
            key, error, refusal = spec.voice, None, license_refusal(spec.source)
        except SpecError as err:
            key, error = str((body.get("spec") or {}).get("voice", "")), str(err)
        services = sorted(svc for (ns, svc), sel in self.selections.items()
                          if ns == namespace and name in sel)
        reports = [r for svc in services for r in self.reports.get((namespace, svc), ())]
        await self._write_status("TTSVoice", namespace, name, body.get("status"),
                                 voice_status(key, generation, services, reports, error,
                                              body.get("status"), refusal))

    async def resync_all(self) -> None:
        """The periodic level-based pass: every service (polling its pods), then voices."""
        spaces = set()
        services = await self.services_in(None)
        for gone in set(self.selections) - set(services):
            self.forget_service(*gone)  # deleted while no event reached us
        for namespace, name in services:
            spaces.add(namespace)
            try:
                await self.sync_service(namespace, name, apply=True, poll=True)
            except InvalidSpecError:
                pass  # status says why; nothing to do until the spec changes
            except (ApiError, OSError, TimeoutError) as err:
                _LOGGER.warning("resync of TTSService %s/%s failed: %s", namespace, name, err)
        voice_spaces: list[str | None] = (list(self.config.namespaces) or [None])
        for space in voice_spaces:
            for body in await self.client.list(API, "TTSVoice", space):
                meta = body["metadata"]
                try:
                    await self.sync_voice(str(meta["namespace"]), str(meta["name"]))
                except (ApiError, OSError, TimeoutError) as err:
                    _LOGGER.warning("status of TTSVoice %s/%s not written: %s",
                                meta["namespace"], meta["name"], err)


def voice_fingerprint(body: dict[str, Any]) -> str:
    """What of a TTSVoice can change a service: its labels and spec (not its status)."""
    meta = body.get("metadata") or {}
    return json.dumps({"labels": meta.get("labels") or {}, "spec": body.get("spec") or {}},
                      sort_keys=True)
