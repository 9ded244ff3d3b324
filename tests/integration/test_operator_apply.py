"""The reconciler's apply against the API emulator: removals remove, no-op passes write
nothing, a refused or foreign-owned child shows in status, and the claim round trip works
on an API server that validates Deployment strategies.

These drive :class:`Reconciler` directly (the same code every kopf handler calls) over
real HTTP, so each pass is one deterministic reconcile.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest

from chorus.operator.apply import LAST_APPLIED
from chorus.operator.kube import KubeClient
from chorus.operator.models import parse_service
from chorus.operator.reconciler import OperatorConfig, Reconciler
from chorus.operator.render import build_children, child_names
from emulators.kube import canonicalize_and_validate
from tests.conftest import JOE
from tests.integration.operator_fixtures import POD_MONITOR_CRD, EmulatedCluster

pytest_plugins = ["tests.integration.operator_fixtures"]

TTS = "tts.chorus.dev/v1alpha1"
NS = "default"
PLURALS = {"configmap": ("v1", "configmaps"), "pvc": ("v1", "persistentvolumeclaims"),
           "deployment": ("apps/v1", "deployments"), "service": ("v1", "services"),
           "hpa": ("autoscaling/v2", "horizontalpodautoscalers"),
           "pdb": ("policy/v1", "poddisruptionbudgets"),
           "podmonitor": ("monitoring.coreos.com/v1", "podmonitors")}
BASE: dict[str, Any] = {"defaultVoice": JOE, "voices": {"names": ["joe"]},
                        "storage": {"type": "EmptyDir"}}


@pytest.fixture
async def rec(kube_emulator: EmulatedCluster) -> AsyncIterator[Reconciler]:
    info = kopf.ConnectionInfo(server=kube_emulator.url, insecure=True, scheme="Bearer",
                               token="x")  # noqa: S106 - the emulator's test client
    async with KubeClient(info) as client:
        await kube_emulator.create({
            "apiVersion": TTS, "kind": "TTSVoice",
            "metadata": {"name": "joe", "namespace": NS},
            "spec": {"voice": JOE, "source": {"huggingFace": {}}}})
        yield Reconciler(client, OperatorConfig())


async def put_service(kube: EmulatedCluster, spec: dict[str, Any]) -> dict[str, Any]:
    body = {"apiVersion": TTS, "kind": "TTSService",
            "metadata": {"name": "tts", "namespace": NS}, "spec": spec}
    if await kube.exists(TTS, "ttsservices", NS, "tts"):
        return await kube.replace(TTS, "ttsservices", NS, "tts", body)
    return await kube.create(body)


async def assert_children_match_render(kube: EmulatedCluster, rec: Reconciler) -> None:
    """Every child equals the current spec's render, modulo what the server sets."""
    body = await kube.get(TTS, "ttsservices", NS, "tts")
    selection = await rec.sync_service(NS, "tts")
    assert selection is not None
    rendered = build_children("tts", NS, parse_service(body), selection, rec.config.render)
    for role, want in rendered.items():
        api, plural = PLURALS[role]
        if want is None:
            assert not await kube.exists(api, plural, NS, child_names("tts")[role]), role
            continue
        live = await kube.get(api, plural, NS, want["metadata"]["name"])
        want = copy.deepcopy(want)
        canonicalize_and_validate(want["kind"], want)  # the server's defaults and quantities
        if role == "service":  # allocated by the server, never rendered
            live = copy.deepcopy(live)
            for field in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                live["spec"].pop(field, None)
            for port in live["spec"]["ports"]:
                port.pop("nodePort", None)
        if role == "pvc":  # immutable but for its size: compared where it is ours
            assert live["spec"]["resources"] == want["spec"]["resources"]
        else:
            body_of = {k: v for k, v in want.items() if k != "metadata"}
            assert {k: live.get(k) for k in body_of} == body_of, role
        annotations = dict(live["metadata"].get("annotations") or {})
        annotations.pop(LAST_APPLIED)
        assert annotations == (want["metadata"].get("annotations") or {}), role
        assert live["metadata"].get("labels") == want["metadata"].get("labels"), role


REMOVABLE: dict[str, dict[str, Any]] = {
    "nodeSelector": {"pod": {"nodeSelector": {"disk": "ssd"}}},
    "tolerations": {"pod": {"tolerations": [{"key": "gpu", "operator": "Exists",
                                             "effect": "NoSchedule"}]}},
    "affinity": {"pod": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}},
    "pod annotations": {"pod": {"annotations": {"team": "voice"}}},
    "pod labels": {"pod": {"labels": {"team": "voice"}}},
    "priorityClassName": {"pod": {"priorityClassName": "high"}},
    "topologySpreadConstraints": {"pod": {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}]}},
    "imagePullSecrets": {"pod": {"imagePullSecrets": [{"name": "registry"}]}},
    "resource limit": {"server": {"resources": {"requests": {"cpu": "250m"},
                                                "limits": {"memory": "1Gi"}}}},
    "imagePullPolicy": {"server": {"imagePullPolicy": "Always"},
                        "voiceManager": {"imagePullPolicy": "Never"}},
    "Service annotations": {"service": {"annotations": {"lb.example/internal": "true"}}},
}


@pytest.mark.parametrize("setting", sorted(REMOVABLE))
async def test_a_removed_setting_leaves_the_children(kube_emulator: EmulatedCluster,
                                                     rec: Reconciler, setting: str) -> None:
    with_it = {**BASE, **REMOVABLE[setting]}
    if setting == "resource limit":  # the limit goes, the request stays
        without: dict[str, Any] = {**BASE, "server": {"resources": {
            "requests": {"cpu": "250m"}}}}
    else:
        without = BASE
    await put_service(kube_emulator, with_it)
    await assert_children_match_render(kube_emulator, rec)
    before = [await kube_emulator.get(api, plural, NS, "tts") for api, plural in
              (PLURALS["deployment"], PLURALS["service"])]
    await put_service(kube_emulator, without)
    await assert_children_match_render(kube_emulator, rec)
    after = [await kube_emulator.get(api, plural, NS, "tts") for api, plural in
             (PLURALS["deployment"], PLURALS["service"])]
    assert [o["spec"] for o in after] != [o["spec"] for o in before] or [
        o["metadata"].get("annotations") for o in after] != [
        o["metadata"].get("annotations") for o in before]  # the setting was there to remove


async def test_a_pass_with_nothing_to_change_writes_nothing(kube_emulator: EmulatedCluster,
                                                            rec: Reconciler) -> None:
    """Quantities in a non-canonical spelling included: the server stores ``500m`` and
    ``1Gi`` for ``0.5`` and ``1024Mi``, and that is no difference."""
    await put_service(kube_emulator, {**BASE, "server": {"resources": {
        "requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"memory": "2048Mi"}}}})
    await rec.sync_service(NS, "tts")
    await rec.sync_service(NS, "tts")  # status settles
    live = await kube_emulator.get("apps/v1", "deployments", NS, "tts")
    server = live["spec"]["template"]["spec"]["containers"][0]
    assert server["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
    before = list(kube_emulator.emulator.writes)
    await rec.sync_service(NS, "tts")
    await rec.sync_service(NS, "tts", poll=True)
    assert kube_emulator.emulator.writes == before
    # while a hand edit is a difference, undone by one write
    await kube_emulator.patch("apps/v1", "deployments", NS, "tts",
                              {"spec": {"revisionHistoryLimit": 9}})
    before = list(kube_emulator.emulator.writes)
    await rec.sync_service(NS, "tts")
    assert kube_emulator.emulator.writes == [
        *before, f"PATCH /apis/apps/v1/namespaces/{NS}/deployments/tts"]
    live = await kube_emulator.get("apps/v1", "deployments", NS, "tts")
    assert live["spec"]["revisionHistoryLimit"] == 3


async def test_emptydir_to_claim_and_back_passes_strategy_validation(
        kube_emulator: EmulatedCluster, rec: Reconciler) -> None:
    await put_service(kube_emulator, BASE)
    await assert_children_match_render(kube_emulator, rec)
    await put_service(kube_emulator, {**BASE, "storage": {"type": "PersistentVolumeClaim",
                                                          "accessModes": ["ReadWriteOnce"]}})
    await assert_children_match_render(kube_emulator, rec)
    live = await kube_emulator.get("apps/v1", "deployments", NS, "tts")
    assert live["spec"]["strategy"] == {"type": "Recreate"}
    await put_service(kube_emulator, BASE)
    await assert_children_match_render(kube_emulator, rec)
    status = (await kube_emulator.get(TTS, "ttsservices", NS, "tts"))["status"]
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] != "ApplyFailed"


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == type_)


async def test_a_refused_apply_is_degraded_and_not_observed(kube_emulator: EmulatedCluster,
                                                            rec: Reconciler) -> None:
    """The CRD takes any string as a quantity; the API server refuses the Deployment."""
    first = await put_service(kube_emulator, BASE)
    await rec.sync_service(NS, "tts")
    good_generation = first["metadata"]["generation"]
    bad = await put_service(kube_emulator, {**BASE, "server": {"resources": {
        "requests": {"cpu": "lots"}}}})
    assert bad["metadata"]["generation"] > good_generation
    await rec.sync_service(NS, "tts")
    body = await kube_emulator.get(TTS, "ttsservices", NS, "tts")
    degraded = condition(body, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "ApplyFailed"
    assert "quantities must match" in degraded["message"]
    assert "Deployment tts" in degraded["message"]
    assert body["status"]["observedGeneration"] == good_generation
    fixed = await put_service(kube_emulator, BASE)
    await rec.sync_service(NS, "tts")
    body = await kube_emulator.get(TTS, "ttsservices", NS, "tts")
    assert condition(body, "Degraded")["reason"] != "ApplyFailed"
    assert body["status"]["observedGeneration"] == fixed["metadata"]["generation"]


async def test_a_pod_monitor_waits_for_the_prometheus_operator(kube_emulator: EmulatedCluster,
                                                               rec: Reconciler) -> None:
    """Without the PodMonitor CRD the rest converges and status says why there is no
    PodMonitor; once the CRD is installed the next pass creates it; off removes it."""
    monitored = {**BASE, "monitoring": {"podMonitor": True, "labels": {"release": "prom"}}}
    created = await put_service(kube_emulator, monitored)
    await rec.sync_service(NS, "tts")
    body = await kube_emulator.get(TTS, "ttsservices", NS, "tts")
    monitor = condition(body, "PodMonitorReady")
    assert (monitor["status"], monitor["reason"]) == ("False", "MonitoringUnavailable")
    assert condition(body, "Degraded")["status"] == "False"
    assert body["status"]["observedGeneration"] == created["metadata"]["generation"]
    deployment = await kube_emulator.get("apps/v1", "deployments", NS, "tts")
    template = deployment["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    assert ports["metrics"] == 9464
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "9464"

    await kube_emulator.create(POD_MONITOR_CRD)
    await assert_children_match_render(kube_emulator, rec)
    live = await kube_emulator.get("monitoring.coreos.com/v1", "podmonitors", NS, "tts")
    assert live["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert live["metadata"]["labels"]["release"] == "prom"
    assert live["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    body = await kube_emulator.get(TTS, "ttsservices", NS, "tts")
    monitor = condition(body, "PodMonitorReady")
    assert (monitor["status"], monitor["reason"]) == ("True", "Applied")

    await put_service(kube_emulator, {**BASE, "monitoring": {"podMonitor": False}})
    await assert_children_match_render(kube_emulator, rec)  # the PodMonitor is gone
    body = await kube_emulator.get(TTS, "ttsservices", NS, "tts")
    assert "PodMonitorReady" not in {c["type"] for c in body["status"]["conditions"]}


async def test_a_name_held_by_the_users_object_is_not_adopted(kube_emulator: EmulatedCluster,
                                                              rec: Reconciler) -> None:
    mine = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "tts", "namespace": NS, "labels": {"owner": "me"}},
            "spec": {"type": "ClusterIP", "selector": {"app": "mine"},
                     "ports": [{"name": "web", "port": 80, "protocol": "TCP"}]}}
    created = await kube_emulator.create(mine)
    await put_service(kube_emulator, BASE)
    await rec.sync_service(NS, "tts")
    live = await kube_emulator.get("v1", "services", NS, "tts")
    assert live == created  # untouched: same resourceVersion, no owner reference
    assert await kube_emulator.exists("apps/v1", "deployments", NS, "tts")  # the rest goes on
    body = await kube_emulator.get(TTS, "ttsservices", NS, "tts")
    degraded = condition(body, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "NameTaken"
    assert "Service 'tts'" in degraded["message"]
    await kube_emulator.delete(TTS, "ttsservices", NS, "tts")
    assert not await kube_emulator.exists("apps/v1", "deployments", NS, "tts")
    assert await kube_emulator.get("v1", "services", NS, "tts") == created


async def test_hand_edits_of_security_fields_are_undone_in_one_pass(
        kube_emulator: EmulatedCluster, rec: Reconciler) -> None:
    await put_service(kube_emulator, BASE)
    await rec.sync_service(NS, "tts")
    live = await kube_emulator.get("apps/v1", "deployments", NS, "tts")
    pod = live["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["privileged"] = True
    await kube_emulator.patch("apps/v1", "deployments", NS, "tts", {"spec": {"template": {
        "spec": {"hostNetwork": True, "automountServiceAccountToken": True,
                 "serviceAccountName": "admin", "containers": pod["containers"]}}}})
    await rec.sync_service(NS, "tts")
    pod = (await kube_emulator.get("apps/v1", "deployments", NS, "tts"))["spec"]["template"][
        "spec"]
    assert pod["hostNetwork"] is False and pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "default"
    assert pod["containers"][0]["securityContext"]["privileged"] is False


async def test_turning_autoscaling_on_hands_the_replica_count_over(
        kube_emulator: EmulatedCluster, rec: Reconciler) -> None:
    await put_service(kube_emulator, {**BASE, "replicas": 3})
    await rec.sync_service(NS, "tts")
    await put_service(kube_emulator, {**BASE, "autoscaling": {"minReplicas": 2,
                                                             "maxReplicas": 5}})
    await rec.sync_service(NS, "tts")
    live = await kube_emulator.get("apps/v1", "deployments", NS, "tts")
    assert live["spec"]["replicas"] == 3  # not nulled: the HPA takes it from here
    await kube_emulator.patch("apps/v1", "deployments", NS, "tts", {"spec": {"replicas": 4}})
    await rec.sync_service(NS, "tts")
    assert (await kube_emulator.get("apps/v1", "deployments", NS, "tts"))["spec"][
        "replicas"] == 4


async def test_hand_additions_to_fields_only_the_operator_writes_are_removed(
        kube_emulator: EmulatedCluster, rec: Reconciler) -> None:
    await put_service(kube_emulator, BASE)
    await rec.sync_service(NS, "tts")
    await kube_emulator.patch("v1", "services", NS, "tts", {"spec": {
        "selector": {"extra": "key"}, "externalIPs": ["203.0.113.7"]}})
    await kube_emulator.patch("v1", "configmaps", NS, "tts-config",
                              {"data": {"extra.json": "{}"}})
    await rec.sync_service(NS, "tts")
    await assert_children_match_render(kube_emulator, rec)
    svc = await kube_emulator.get("v1", "services", NS, "tts")
    assert "extra" not in svc["spec"]["selector"] and "externalIPs" not in svc["spec"]
    cm = await kube_emulator.get("v1", "configmaps", NS, "tts-config")
    assert "extra.json" not in cm["data"]


async def test_recreate_on_a_deployment_without_last_applied_state(
        kube_emulator: EmulatedCluster, rec: Reconciler) -> None:
    """A Deployment written before the operator kept its last-applied annotation (or with
    it stripped by hand) has the server's defaulted ``rollingUpdate``, which the three-way
    merge knows nothing of: switching to a claim must still pass strategy validation."""
    await put_service(kube_emulator, BASE)
    await rec.sync_service(NS, "tts")
    await kube_emulator.patch("apps/v1", "deployments", NS, "tts", {
        "metadata": {"annotations": {LAST_APPLIED: None}},
        "spec": {"strategy": {"rollingUpdate": None}}})  # type stays RollingUpdate: defaulted
    live = await kube_emulator.get("apps/v1", "deployments", NS, "tts")
    assert live["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%",
                                                         "maxUnavailable": "25%"}
    await put_service(kube_emulator, {**BASE, "storage": {"type": "PersistentVolumeClaim",
                                                          "accessModes": ["ReadWriteOnce"]}})
    await assert_children_match_render(kube_emulator, rec)
    live = await kube_emulator.get("apps/v1", "deployments", NS, "tts")
    assert live["spec"]["strategy"] == {"type": "Recreate"}


async def test_service_type_round_trip_keeps_the_cluster_ip(
        kube_emulator: EmulatedCluster, rec: Reconciler) -> None:
    """ClusterIP -> NodePort -> ClusterIP through the operator on an API server that
    allocates cluster IPs and node ports: no write touches the immutable ``clusterIP``,
    node ports come and go with the type, and each pass converges to the render."""
    await put_service(kube_emulator, BASE)
    await assert_children_match_render(kube_emulator, rec)
    first = await kube_emulator.get("v1", "services", NS, "tts")
    await put_service(kube_emulator, {**BASE, "service": {"type": "NodePort"}})
    await assert_children_match_render(kube_emulator, rec)
    node = await kube_emulator.get("v1", "services", NS, "tts")
    assert all(30000 <= port["nodePort"] <= 32767 for port in node["spec"]["ports"])
    await put_service(kube_emulator, BASE)
    await assert_children_match_render(kube_emulator, rec)
    back = await kube_emulator.get("v1", "services", NS, "tts")
    assert back["spec"]["clusterIP"] == first["spec"]["clusterIP"]
    assert all("nodePort" not in port for port in back["spec"]["ports"])
    body = await kube_emulator.get(TTS, "ttsservices", NS, "tts")
    assert condition(body, "Degraded")["reason"] != "ApplyFailed", body["status"]
