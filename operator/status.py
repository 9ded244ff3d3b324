"""Status of TTSServices and TTSVoices, computed from what was observed (pure).

Inputs are facts: the parsed spec (or why it failed), the voice selection, the
Deployment as the API last showed it and the voice managers' own reports (polled from
each pod's status port). Nothing is assumed: a voice is ready when a pod reported it
installed, a service is ready when its Deployment has a ready pod. Conditions keep
their ``lastTransitionTime`` while their status stays the same, as Kubernetes expects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from chorus.common.sizes import human_size
from chorus.common.voice_status import VolumeStatus, utc_now

from .render import Selection

__all__ = [
    "PodMonitorState",
    "PodReport",
    "ServiceObservation",
    "condition",
    "human_size",
    "service_status",
    "voice_status",
]


@dataclass(frozen=True)
class PodReport:
    """One pod's voice-manager status, or why it could not be read."""

    pod: str
    status: VolumeStatus | None = None
    error: str | None = None


PodMonitorState = Literal["applied", "unavailable", "pending"] | None
"""What became of a PodMonitor the spec asks for (``None``: it asks for none)."""


@dataclass(frozen=True)
class ServiceObservation:
    """Everything the operator knows about one TTSService at one moment."""

    name: str
    namespace: str
    generation: int
    spec_error: str | None = None
    default_voice: str | None = None
    wyoming_port: int = 10200
    http_port: int | None = None
    selection: Selection = field(default_factory=Selection)
    deployment: Mapping[str, Any] | None = None
    reports: tuple[PodReport, ...] = ()
    desired_replicas: int | None = None
    apply_errors: tuple[tuple[str, str], ...] = ()
    """(reason, message) of each child the API refused or that belongs to someone else:
    while there are any, this generation has not converged."""
    pod_monitor: PodMonitorState = None


def condition(previous: Iterable[Mapping[str, Any]], type_: str, status: bool | None,
              reason: str, message: str, generation: int | None = None) -> dict[str, Any]:
    """A condition whose ``lastTransitionTime`` moves only when ``status`` changes."""
    text = "Unknown" if status is None else ("True" if status else "False")
    before = next((c for c in previous if c.get("type") == type_), None)
    since = (before.get("lastTransitionTime") if before and before.get("status") == text
             else None) or utc_now()
    cond: dict[str, Any] = {"type": type_, "status": text, "reason": reason,
                            "message": message, "lastTransitionTime": since}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def _voice_rows(obs: ServiceObservation) -> list[dict[str, Any]]:
    rows = []
    polled = [r for r in obs.reports if r.status is not None]
    for voice in obs.selection.voices:
        key = voice.spec.voice
        states = [r.status.voices.get(key) for r in polled if r.status is not None]
        installed = sum(1 for s in states if s is not None and s.state == "installed")
        errors = sorted({s.error for s in states if s is not None and s.error})
        if not polled:
            state = "unknown"
        elif installed == len(polled):
            state = "installed"
        elif any(s is not None and s.state == "failed" for s in states):
            state = "failed"
        elif any(s is not None and s.state == "downloading" for s in states):
            state = "downloading"
        else:
            state = "pending"
        row: dict[str, Any] = {"name": key, "resource": voice.name,
                               "ready": bool(polled) and installed == len(polled),
                               "state": state, "pods": f"{installed}/{len(polled)}"}
        if errors:
            row["message"] = "; ".join(errors)
        rows.append(row)
    return rows


def _selection_problems(obs: ServiceObservation) -> list[tuple[str, str]]:
    sel = obs.selection
    problems = []
    if sel.missing:
        problems.append(("VoiceNotFound", "no TTSVoice named " + ", ".join(sel.missing)))
    if sel.invalid:
        problems.append(("VoiceInvalid", "; ".join(f"{n}: {why}"
                                                   for n, why in sorted(sel.invalid.items()))))
    if sel.conflicts:
        problems.append(("VoiceConflict", "TTSVoices with different specs claim voice "
                         + ", ".join(sel.conflicts)))
    if obs.default_voice is not None and obs.default_voice not in sel.keys:
        problems.append(("DefaultVoiceNotSelected",
                         f"defaultVoice {obs.default_voice!r} is not among the selected voices"
                         + (f" ({', '.join(sel.keys)})" if sel.keys else "")))
    return problems


def _deployment_facts(obs: ServiceObservation) -> tuple[int, int, bool, str | None]:
    """(desired, ready, rolling out, failure message) of the Deployment."""
    dep = obs.deployment or {}
    status = dep.get("status") or {}
    desired = (dep.get("spec") or {}).get("replicas")
    if desired is None:
        desired = obs.desired_replicas if obs.desired_replicas is not None else 1
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    generation = (dep.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    rolling = bool(dep) and (updated < desired or ready < desired
                             or (generation is not None and observed != generation))
    failure = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            failure = cond.get("message") or "rollout exceeded its progress deadline"
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            failure = cond.get("message") or "replica failure"
    return int(desired), ready, rolling, failure


def service_status(obs: ServiceObservation,
                   previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole ``TTSService.status``."""
    prev = list((previous or {}).get("conditions") or [])
    gen = obs.generation
    if obs.spec_error is not None:
        message = obs.spec_error
        return {"observedGeneration": gen, "conditions": [
            condition(prev, "Ready", False, "InvalidSpec", message, gen),
            condition(prev, "VoicesReady", None, "InvalidSpec", message, gen),
            condition(prev, "Progressing", False, "InvalidSpec", message, gen),
            condition(prev, "Degraded", True, "InvalidSpec", message, gen)]}

    rows = _voice_rows(obs)
    problems = _selection_problems(obs)
    failed = [r for r in rows if r["state"] == "failed"]
    unreadable = [r for r in obs.reports if r.error]
    desired, ready, rolling, failure = _deployment_facts(obs)

    if problems:
        voices_cond = condition(prev, "VoicesReady", False, problems[0][0],
                                "; ".join(m for _, m in problems), gen)
    elif failed:
        voices_cond = condition(prev, "VoicesReady", False, "VoiceFailed", "; ".join(
            f"{r['name']}: {r.get('message', 'failed')}" for r in failed), gen)
    elif not rows:
        voices_cond = condition(prev, "VoicesReady", False, "NoVoices",
                                "no TTSVoice is selected", gen)
    elif not any(r.status is not None for r in obs.reports):
        why = ("; ".join(f"{r.pod}: {r.error}" for r in unreadable) if unreadable
               else "no running pod has reported yet")
        voices_cond = condition(prev, "VoicesReady", None, "NoReports", why, gen)
    elif all(r["ready"] for r in rows):
        voices_cond = condition(prev, "VoicesReady", True, "AllVoicesInstalled",
                                f"{len(rows)} voice(s) installed on every running pod", gen)
    else:
        waiting = [f"{r['name']} ({r['state']}, {r['pods']} pods)" for r in rows
                   if not r["ready"]]
        voices_cond = condition(prev, "VoicesReady", False, "VoicesSyncing",
                                "waiting for " + ", ".join(waiting), gen)

    if obs.deployment is None:
        ready_cond = condition(prev, "Ready", False, "NotDeployed",
                               "the Deployment does not exist yet", gen)
    elif desired == 0:
        ready_cond = condition(prev, "Ready", False, "ScaledToZero", "replicas is 0", gen)
    elif ready > 0:
        ready_cond = condition(prev, "Ready", True, "Available",
                               f"{ready}/{desired} pods ready", gen)
    else:
        ready_cond = condition(prev, "Ready", False, "NoReadyPods",
                               "no pod is ready yet (voices installing, or the server "
                               "starting)", gen)

    progressing = condition(prev, "Progressing", rolling,
                            "RollingOut" if rolling else "Stable",
                            f"{ready}/{desired} pods ready" if rolling
                            else "the Deployment is up to date", gen)
    degraded_reasons = [m for _, m in problems] + [
        f"voice {r['name']} failed: {r.get('message', '')}" for r in failed]
    if failure:
        degraded_reasons.append(failure)
    degraded_reasons[:0] = [m for _, m in obs.apply_errors]
    reason = (obs.apply_errors[0][0] if obs.apply_errors
              else "Problems" if degraded_reasons else "AsExpected")
    degraded = condition(prev, "Degraded", bool(degraded_reasons), reason,
                         "; ".join(degraded_reasons) or "no known problem", gen)

    conditions = [ready_cond, voices_cond, progressing, degraded]
    if obs.pod_monitor is not None:
        conditions.append(_pod_monitor_condition(obs, prev))

    # observedGeneration says the operator made the cluster match that generation; a
    # refused write means it did not, so the last converged one stays.
    observed = (gen if not obs.apply_errors
                else (previous or {}).get("observedGeneration"))
    status: dict[str, Any] = {
        "observedGeneration": observed, "replicas": desired, "readyReplicas": ready,
        "replicasReady": f"{ready}/{desired}",
        "voicesReady": f"{sum(1 for r in rows if r['ready'])}/{len(rows)}",
        "endpoint": f"tcp://{obs.name}.{obs.namespace}.svc:{obs.wyoming_port}",
        "voices": rows,
        "conditions": conditions,
    }
    if obs.http_port is not None:
        status["httpEndpoint"] = f"http://{obs.name}.{obs.namespace}.svc:{obs.http_port}"
    return status


def _pod_monitor_condition(obs: ServiceObservation,
                           prev: list[Mapping[str, Any]]) -> dict[str, Any]:
    """``PodMonitorReady``: only for a spec that asks for one. Not having it is not
    ``Degraded``: the service serves, and the prometheus.io annotations still work."""
    gen = obs.generation
    if obs.pod_monitor == "applied":
        return condition(prev, "PodMonitorReady", True, "Applied",
                         f"PodMonitor {obs.name} scrapes the pods' metrics port", gen)
    if obs.pod_monitor == "unavailable":
        return condition(prev, "PodMonitorReady", False, "MonitoringUnavailable",
                         "the cluster does not serve monitoring.coreos.com/v1 PodMonitor "
                         "(the Prometheus Operator's CRDs are not installed); it is created "
                         "once they are. Until then the pods' prometheus.io annotations "
                         "(monitoring.scrapeAnnotations) are the way to scrape them", gen)
    return condition(prev, "PodMonitorReady", None, "NotApplied",
                     "the children are not applied until the default voice is selected", gen)


def voice_status(key: str, generation: int, services: list[str],
                 reports: list[PodReport], spec_error: str | None = None,
                 previous: Mapping[str, Any] | None = None,
                 license_refusal: str | None = None) -> dict[str, Any]:
    """``TTSVoice.status`` from the reports of every pod of every service using it.

    ``license_refusal`` (:func:`chorus.common.manifest.license_refusal`) says why no
    voice manager will fetch the voice's files: the voice fails with that reason at
    once, wherever it is used, rather than after each pod has tried.
    """
    prev = list((previous or {}).get("conditions") or [])
    base: dict[str, Any] = {"observedGeneration": generation, "services": sorted(services)}
    if spec_error is not None:
        return {**base, "phase": "Failed", "message": spec_error, "conditions": [
            condition(prev, "Ready", False, "InvalidSpec", spec_error, generation)]}
    if license_refusal is not None:
        return {**base, "phase": "Failed", "message": license_refusal, "conditions": [
            condition(prev, "Ready", False, "LicenseNotAccepted", license_refusal,
                      generation)]}
    if not services:
        message = "no TTSService selects this voice"
        return {**base, "phase": "Unused", "message": message, "conditions": [
            condition(prev, "Ready", False, "Unused", message, generation)]}
    states = [(r.pod, r.status.voices.get(key)) for r in reports if r.status is not None]
    installed = [s for _, s in states if s is not None and s.state == "installed"]
    failed = [(pod, s) for pod, s in states if s is not None and s.state == "failed"]
    if installed:
        first = installed[0]
        if first.bytes is not None:
            base["bytes"] = first.bytes
            base["size"] = human_size(first.bytes)
        if first.sha256_model:
            base["sha256"] = {"model": first.sha256_model, "config": first.sha256_config or ""}
    if failed:
        # The voice manager's error already says when the previous copy is still served.
        message = "; ".join(f"{pod}: {s.error}" for pod, s in failed)
        serving = all(s.serving_previous for _, s in failed)
        phase, ready, reason = "Failed", False, "UpdateFailed" if serving else "SyncFailed"
    elif states and len(installed) == len(states):
        message = f"installed on {len(installed)} pod(s)"
        phase, ready, reason = "Ready", True, "Installed"
    elif states:
        message = f"installed on {len(installed)}/{len(states)} pod(s)"
        phase, ready, reason = "Syncing", False, "Syncing"
    else:
        message = "waiting for a voice manager to report"
        phase, ready, reason = "Pending", False, "NoReports"
    return {**base, "phase": phase, "message": message, "conditions": [
        condition(prev, "Ready", ready, reason, message, generation)]}
