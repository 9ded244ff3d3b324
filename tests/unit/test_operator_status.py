"""``operator/status.py``: conditions and phases from what the operator observes.
"""

from __future__ import annotations

from typing import Any

import pytest

from chorus.common.voice_status import VoiceStatus
from chorus.operator.render import (
    Selection,
    select_voices,
)
from chorus.operator.status import (
    PodReport,
    condition,
    human_size,
    service_status,
    voice_status,
)
from tests.unit.operator_specs import (
    AMY,
    JOE,
    OLD,
    SHA_A,
    SHA_B,
    THORSTEN,
    brief,
    conds,
    installed,
    observe,
    report,
    service,
    voices,
)


def test_status_invalid_spec() -> None:
    status = service_status(observe(spec_error="invalid TTSService spec: replicas: bad"))
    assert brief(status) == {"Ready": ("False", "InvalidSpec"),
                             "VoicesReady": ("Unknown", "InvalidSpec"),
                             "Progressing": ("False", "InvalidSpec"),
                             "Degraded": ("True", "InvalidSpec")}
    assert conds(status)["Degraded"]["message"] == "invalid TTSService spec: replicas: bad"
    assert status["observedGeneration"] == 4
    assert all(c["observedGeneration"] == 4 for c in status["conditions"])


def test_status_all_installed_and_ready() -> None:
    status = service_status(observe(reports=(report("p1", **{AMY: installed(), JOE: installed()}),
                                             report("p2", **{AMY: installed(), JOE: installed()}))))
    assert brief(status) == {"Ready": ("True", "Available"),
                             "VoicesReady": ("True", "AllVoicesInstalled"),
                             "Progressing": ("False", "Stable"),
                             "Degraded": ("False", "AsExpected")}
    assert conds(status)["Ready"]["message"] == "2/2 pods ready"
    assert (status["replicas"], status["readyReplicas"], status["replicasReady"],
            status["voicesReady"]) == (2, 2, "2/2", "2/2")
    assert status["endpoint"] == "tcp://speech.tts.svc:10200"
    assert status["httpEndpoint"] == "http://speech.tts.svc:5000"
    assert status["voices"] == [
        {"name": AMY, "resource": "amy", "ready": True, "state": "installed", "pods": "2/2"},
        {"name": JOE, "resource": "joe", "ready": True, "state": "installed", "pods": "2/2"}]


def test_status_without_reports_is_unknown() -> None:
    status = service_status(observe())
    assert brief(status)["VoicesReady"] == ("Unknown", "NoReports")
    assert conds(status)["VoicesReady"]["message"] == "no running pod has reported yet"
    assert [r["state"] for r in status["voices"]] == ["unknown", "unknown"]
    status = service_status(observe(reports=(PodReport("p1", error="connection refused"),)))
    assert brief(status)["VoicesReady"] == ("Unknown", "NoReports")
    assert conds(status)["VoicesReady"]["message"] == "p1: connection refused"


def test_status_failed_voice_is_degraded() -> None:
    failed = VoiceStatus("failed", required=False, error="404 from the hub")
    status = service_status(observe(reports=(report("p1", **{AMY: installed(), JOE: failed}),)))
    assert brief(status)["VoicesReady"] == ("False", "VoiceFailed")
    assert conds(status)["VoicesReady"]["message"] == f"{JOE}: 404 from the hub"
    assert brief(status)["Degraded"] == ("True", "Problems")
    assert "404 from the hub" in conds(status)["Degraded"]["message"]
    assert status["voices"][1] == {"name": JOE, "resource": "joe", "ready": False,
                                   "state": "failed", "pods": "0/1",
                                   "message": "404 from the hub"}
    assert status["voicesReady"] == "1/2"


def test_status_voices_syncing() -> None:
    status = service_status(observe(reports=(
        report("p1", **{AMY: installed(), JOE: VoiceStatus("downloading")}),
        report("p2", **{AMY: installed()}))))
    assert brief(status)["VoicesReady"] == ("False", "VoicesSyncing")
    assert conds(status)["VoicesReady"]["message"] == (
        f"waiting for {JOE} (downloading, 0/2 pods)")
    assert brief(status)["Degraded"] == ("False", "AsExpected")


def test_status_default_voice_not_selected() -> None:
    spec = service({"defaultVoice": THORSTEN})
    status = service_status(observe(default_voice=THORSTEN,
                                    selection=select_voices(spec, voices())))
    assert brief(status)["VoicesReady"] == ("False", "DefaultVoiceNotSelected")
    assert THORSTEN in conds(status)["VoicesReady"]["message"]
    assert brief(status)["Degraded"] == ("True", "Problems")


def test_status_selection_problems() -> None:
    selection = Selection(tuple(select_voices(service(), voices()).voices),
                          missing=("ghost",), conflicts=("x",), invalid={"bad": "why"})
    status = service_status(observe(selection=selection))
    assert brief(status)["VoicesReady"] == ("False", "VoiceNotFound")
    message = conds(status)["VoicesReady"]["message"]
    assert "no TTSVoice named ghost" in message
    assert "bad: why" in message
    assert "different specs claim voice x" in message
    status = service_status(observe(selection=Selection(), default_voice=None))
    assert brief(status)["VoicesReady"] == ("False", "NoVoices")


@pytest.mark.parametrize(("deployment", "ready", "progressing"), [
    (None, ("False", "NotDeployed"), ("False", "Stable")),
    ({"spec": {"replicas": 0}, "status": {}}, ("False", "ScaledToZero"), ("False", "Stable")),
    ({"metadata": {"generation": 1}, "spec": {"replicas": 2},
      "status": {"observedGeneration": 1, "readyReplicas": 0, "updatedReplicas": 2}},
     ("False", "NoReadyPods"), ("True", "RollingOut")),
    ({"metadata": {"generation": 3}, "spec": {"replicas": 2},
      "status": {"observedGeneration": 3, "readyReplicas": 1, "updatedReplicas": 1}},
     ("True", "Available"), ("True", "RollingOut")),
    ({"metadata": {"generation": 3}, "spec": {"replicas": 2},
      "status": {"observedGeneration": 2, "readyReplicas": 2, "updatedReplicas": 2}},
     ("True", "Available"), ("True", "RollingOut")),
])
def test_status_follows_the_deployment(deployment: dict[str, Any] | None,
                                       ready: tuple[str, str],
                                       progressing: tuple[str, str]) -> None:
    status = service_status(observe(deployment=deployment))
    assert brief(status)["Ready"] == ready
    assert brief(status)["Progressing"] == progressing


def test_status_with_hpa_reads_the_deployment_replicas() -> None:
    deployment = {"spec": {}, "status": {"readyReplicas": 1, "updatedReplicas": 1}}
    status = service_status(observe(deployment=deployment, desired_replicas=3))
    assert status["replicasReady"] == "1/3"


def test_status_rollout_failure_is_degraded() -> None:
    deployment = {"spec": {"replicas": 1}, "status": {"readyReplicas": 0, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": "ReplicaSet speech-abc has timed out progressing."}]}}
    status = service_status(observe(deployment=deployment))
    assert brief(status)["Degraded"] == ("True", "Problems")
    assert "timed out progressing" in conds(status)["Degraded"]["message"]


def test_status_without_http_has_no_http_endpoint() -> None:
    status = service_status(observe(http_port=None, wyoming_port=10300))
    assert "httpEndpoint" not in status
    assert status["endpoint"] == "tcp://speech.tts.svc:10300"


def test_last_transition_time_moves_only_with_the_status() -> None:
    reports = (report("p1", **{AMY: installed(), JOE: installed()}),)
    first = service_status(observe(reports=reports))
    previous = {"conditions": [{**c, "lastTransitionTime": OLD} for c in first["conditions"]]}
    same = service_status(observe(reports=reports), previous)
    assert all(c["lastTransitionTime"] == OLD for c in same["conditions"])
    changed = service_status(observe(reports=reports, deployment=None), previous)
    times = {c["type"]: c["lastTransitionTime"] for c in changed["conditions"]}
    assert times["Ready"] != OLD  # True -> False
    assert times["VoicesReady"] == OLD  # still True
    assert condition(previous["conditions"], "Ready", True, "r", "m")["lastTransitionTime"] == OLD
    assert "observedGeneration" not in condition([], "Ready", True, "r", "m")


def test_voice_status_phases() -> None:
    ready = voice_status(AMY, 2, ["speech", "other"], [report("p1", **{AMY: installed()}),
                                                       report("p2", **{AMY: installed()})])
    assert (ready["phase"], ready["bytes"], ready["size"]) == ("Ready", 63_200_000, "63.2 MB")
    assert ready["sha256"] == {"model": SHA_A, "config": SHA_B}
    assert ready["services"] == ["other", "speech"]
    assert ready["observedGeneration"] == 2
    assert brief(ready) == {"Ready": ("True", "Installed")}

    syncing = voice_status(AMY, 2, ["speech"], [report("p1", **{AMY: installed()}),
                                                report("p2", **{AMY: VoiceStatus("pending")})])
    assert (syncing["phase"], syncing["message"]) == ("Syncing", "installed on 1/2 pod(s)")

    failed = voice_status(AMY, 2, ["speech"], [
        report("p1", **{AMY: VoiceStatus("failed", error="sha256 mismatch")})])
    assert (failed["phase"], failed["message"]) == ("Failed", "p1: sha256 mismatch")
    assert brief(failed) == {"Ready": ("False", "SyncFailed")}

    kept = ("HTTP 500; the copy installed at 2026-01-01T00:00:00Z stays installed and is "
            "still served")
    update = voice_status(AMY, 2, ["speech"], [
        report("p1", **{AMY: VoiceStatus("failed", error=kept, serving_previous=True)})])
    assert (update["phase"], update["message"]) == ("Failed", f"p1: {kept}")
    assert brief(update) == {"Ready": ("False", "UpdateFailed")}

    pending = voice_status(AMY, 2, ["speech"], [PodReport("p1", error="timeout")])
    assert (pending["phase"], brief(pending)) == ("Pending", {"Ready": ("False", "NoReports")})

    unused = voice_status(AMY, 2, [], [])
    assert (unused["phase"], brief(unused)) == ("Unused", {"Ready": ("False", "Unused")})

    invalid = voice_status(AMY, 2, ["speech"], [], spec_error="invalid TTSVoice spec: x")
    assert (invalid["phase"], invalid["message"]) == ("Failed", "invalid TTSVoice spec: x")
    assert brief(invalid) == {"Ready": ("False", "InvalidSpec")}

    refused = "the XTTS checkpoint is licensed under the CPML (https://coqui.ai/cpml)"
    licence = voice_status("narrator", 2, ["speech"], [
        report("p1", narrator=VoiceStatus("failed", error=f"narrator: {refused}"))],
        license_refusal=refused)
    assert (licence["phase"], licence["message"]) == ("Failed", refused)
    assert brief(licence) == {"Ready": ("False", "LicenseNotAccepted")}
    assert licence["services"] == ["speech"]

    again = voice_status(AMY, 3, ["speech"], [report("p1", **{AMY: installed()})],
                         previous={"conditions": [{**ready["conditions"][0],
                                                   "lastTransitionTime": OLD}]})
    assert again["conditions"][0]["lastTransitionTime"] == OLD


@pytest.mark.parametrize(("size", "text"), [(0, "0.0 kB"), (999_999, "1000.0 kB"),
                                            (1_000_000, "1.0 MB"), (63_201_294, "63.2 MB")])
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text



def test_status_apply_failure_holds_observed_generation_back() -> None:
    refused = ("ApplyFailed", "Deployment speech: 422 Invalid: quantities must match")
    status = service_status(observe(apply_errors=(refused,)), {"observedGeneration": 3})
    assert status["observedGeneration"] == 3
    degraded = conds(status)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "ApplyFailed")
    assert refused[1] in degraded["message"]
    assert service_status(observe(), {"observedGeneration": 3})["observedGeneration"] == 4


@pytest.mark.parametrize(("state", "expected"), [
    (None, None),
    ("applied", ("True", "Applied")),
    ("unavailable", ("False", "MonitoringUnavailable")),
    ("pending", ("Unknown", "NotApplied")),
])
def test_a_pod_monitor_is_reported_only_when_asked_for(state: Any,
                                                       expected: tuple[str, str] | None) -> None:
    status = service_status(observe(pod_monitor=state))
    assert brief(status).get("PodMonitorReady") == expected
    # a missing Prometheus Operator is no reason to call the service degraded or unconverged
    assert brief(status)["Degraded"] == ("False", "AsExpected")
    assert status["observedGeneration"] == 4
    if state == "unavailable":
        message = conds(status)["PodMonitorReady"]["message"]
        assert "monitoring.coreos.com/v1 PodMonitor" in message
        assert "prometheus.io annotations" in message
