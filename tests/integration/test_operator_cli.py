"""``chorus operator`` as a real process: liveness, the examples, namespaces, SIGTERM.

The emulator runs in a thread of the test process; the operator finds it through
``$KUBECONFIG``, as it would find a cluster from a laptop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulators.kube import ThreadedEmulator, resource_path
from tests.conftest import CHORUS, REPO, free_port

TTS = "tts.chorus.dev/v1alpha1"
PLURALS = {"TTSVoice": "ttsvoices", "TTSService": "ttsservices"}


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[ThreadedEmulator]:
    with ThreadedEmulator(tmp_path / "kubeconfig") as emu:
        yield emu


def start_operator(emu: ThreadedEmulator, tmp_path: Path,
                   *args: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    log = tmp_path / f"operator-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CHORUS, "operator", "--liveness", f"http://127.0.0.1:{port}/healthz",
             "--resync-interval", "1", *args],
            env={**os.environ, "KUBECONFIG": str(emu.running.kubeconfig)},
            stdout=out, stderr=subprocess.STDOUT)
    return proc, port, log


def wait_until(check: Callable[[], bool], what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return int(resp.status)
    except (urllib.error.URLError, ConnectionError):
        return 0


def apply(emu: ThreadedEmulator, path: Path, namespace: str = "default") -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        status, body = emu.request("POST", resource_path(TTS, PLURALS[doc["kind"]], namespace),
                                   doc)
        assert status == 201, body
    return docs


def exists(emu: ThreadedEmulator, api: str, plural: str, ns: str, name: str) -> bool:
    return emu.request("GET", resource_path(api, plural, ns, name))[0] == 200


def test_operator_process_serves_liveness_reconciles_the_example_and_stops_on_sigterm(
        emulator: ThreadedEmulator, tmp_path: Path) -> None:
    proc, port, log = start_operator(emulator, tmp_path)
    try:
        wait_until(lambda: healthz(port) == 200, "/healthz")
        apply(emulator, REPO / "examples" / "service-multilingual.yaml")
        wait_until(lambda: exists(emulator, "autoscaling/v2", "horizontalpodautoscalers",
                                  "default", "household"), "the example's HPA")
        for api, plural, name in (("v1", "configmaps", "household-config"),
                                  ("apps/v1", "deployments", "household"),
                                  ("v1", "services", "household"),
                                  ("policy/v1", "poddisruptionbudgets", "household")):
            assert exists(emulator, api, plural, "default", name), plural
        _, cm = emulator.request("GET", resource_path("v1", "configmaps", "default",
                                                      "household-config"))
        names = [v["name"] for v in json.loads(cm["data"]["manifest.json"])["voices"]]
        assert names == ["de_DE-thorsten-medium", "en_US-joe-medium", "fr_FR-siwis-medium"]
        assert not exists(emulator, "v1", "persistentvolumeclaims", "default",
                          "household-voices")  # EmptyDir storage
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


def test_operator_watches_only_the_namespaces_it_is_given(emulator: ThreadedEmulator,
                                                          tmp_path: Path) -> None:
    proc, port, log = start_operator(emulator, tmp_path, "--namespace", "speech")
    try:
        wait_until(lambda: healthz(port) == 200, "/healthz")
        apply(emulator, REPO / "examples" / "service-multilingual.yaml", namespace="other")
        apply(emulator, REPO / "examples" / "service-multilingual.yaml", namespace="speech")
        wait_until(lambda: exists(emulator, "apps/v1", "deployments", "speech", "household"),
                   "the watched namespace's Deployment")
        time.sleep(2.5)  # two resync passes
        assert not exists(emulator, "apps/v1", "deployments", "other", "household")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]


def test_bad_operator_options_are_refused_before_anything_starts(tmp_path: Path) -> None:
    result = subprocess.run([*CHORUS, "operator", "--resync-interval", "0"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--resync-interval" in result.stderr
    no_cluster = subprocess.run(
        [*CHORUS, "operator", "--liveness", ""], capture_output=True, text=True, timeout=60,
        check=False, env={**os.environ, "KUBECONFIG": str(tmp_path / "missing"),
                          "HOME": str(tmp_path)})
    assert no_cluster.returncode != 0
    assert "Traceback" not in no_cluster.stderr
    assert "cannot reach a cluster" in no_cluster.stderr
