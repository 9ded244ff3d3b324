"""The operator against the API emulator: how fast services get their children, at scale.

Run by hand from the repository root::

    .venv/bin/python -m bench.operator_bench [--services 50] [--voices 20] [--singles 20]

The real ``chorus operator`` runs as a subprocess (so its memory is its own) against the
Kubernetes API emulator of the test suite (``emulators.kube``), served on 127.0.0.1
from a thread of this process. Two measurements, in the same run:

* **Latency**: ``--singles`` TTSServices created one at a time (each with its voice
  already present); for each, the time from the POST until its ConfigMap, claim,
  Deployment and Service all exist. Target: p95 <= 1 s.
* **Scale**: ``--services`` services created at once, each selecting its own
  ``--voices`` TTSVoices by label; the time until every ConfigMap lists all its voices
  and every Deployment exists, then the operator's RSS (psutil) once it has settled.

The emulator shares this process's CPU with the clients and is a single asyncio loop in
Python, so its own speed is part of what is measured; a real API server is faster.
Results go to the console and to ``bench/results/operator-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from emulators.kube import ThreadedEmulator, resource_path

TTS = "tts.chorus.dev/v1alpha1"
NS = "default"
P95_TARGET_S = 1.0
POLL_S = 0.01


def _voice(name: str, key: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": TTS, "kind": "TTSVoice",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"voice": key, "source": {"huggingFace": {}}}}


def _service(name: str, default: str, selector: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": TTS, "kind": "TTSService",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"defaultVoice": default, "voices": selector}}


def _post(emu: ThreadedEmulator, plural: str, obj: dict[str, Any]) -> None:
    api = obj["apiVersion"]
    status, body = emu.request("POST", resource_path(api, plural, NS), obj)
    if status >= 300:
        raise RuntimeError(f"create {plural}: {status} {body}")


def _exists(emu: ThreadedEmulator, api: str, plural: str, name: str) -> bool:
    status, _ = emu.request("GET", resource_path(api, plural, NS, name))
    return status == 200


def _children_present(emu: ThreadedEmulator, name: str) -> bool:
    return all(_exists(emu, api, plural, child) for api, plural, child in (
        ("v1", "configmaps", f"{name}-config"), ("v1", "persistentvolumeclaims",
                                                 f"{name}-voices"),
        ("apps/v1", "deployments", name), ("v1", "services", name)))


def _manifest_size(emu: ThreadedEmulator, name: str) -> int:
    status, body = emu.request("GET", resource_path("v1", "configmaps", NS, f"{name}-config"))
    if status != 200:
        return -1
    return len(json.loads(body["data"]["manifest.json"])["voices"])


def _wait(check: Any, deadline_s: float) -> float:
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > deadline_s:
            raise TimeoutError("the operator did not converge in time")
        time.sleep(POLL_S)
    return time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(services: int, voices: int, singles: int, workdir: Path) -> dict[str, Any]:
    with ThreadedEmulator(workdir / "kubeconfig") as emu:
        log = (workdir / "operator.log").open("wb")
        env = {**os.environ, "KUBECONFIG": str(emu.running.kubeconfig)}
        chorus = str(Path(sys.executable).with_name("chorus"))
        operator = subprocess.Popen([chorus, "operator", "--liveness", "",
                                     "--log-level", "WARNING"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
        proc = psutil.Process(operator.pid)
        try:
            time.sleep(2.0)  # kopf starts its watches
            latencies = []
            for i in range(singles):
                _post(emu, "ttsvoices", _voice(f"single-{i}", f"en_US-single{i}-medium", {}))
                start = time.perf_counter()
                _post(emu, "ttsservices", _service(
                    f"single-{i}", f"en_US-single{i}-medium", {"names": [f"single-{i}"]}))
                _wait(lambda i=i: _children_present(emu, f"single-{i}"), 30)
                latencies.append(time.perf_counter() - start)

            start = time.perf_counter()
            for s in range(services):
                for v in range(voices):
                    _post(emu, "ttsvoices", _voice(f"s{s}-v{v}", f"en_US-s{s}v{v}-medium",
                                                   {"set": f"s{s}"}))
            created_voices = time.perf_counter() - start
            start = time.perf_counter()
            for s in range(services):
                _post(emu, "ttsservices", _service(f"s{s}", f"en_US-s{s}v0-medium",
                                                   {"selector": {"matchLabels": {
                                                       "set": f"s{s}"}}}))
            scale_s = _wait(lambda: all(
                _manifest_size(emu, f"s{s}") == voices and _exists(emu, "apps/v1",
                                                                   "deployments", f"s{s}")
                for s in range(services)), 600)
            time.sleep(3.0)  # let it settle (a resync pass included) before reading memory
            rss_mib = proc.memory_info().rss / 2**20
            alive = operator.poll() is None
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            log.close()
    p50, p95 = statistics.median(latencies), _percentile(latencies, 0.95)
    return {"singles": singles, "latency_p50_s": p50, "latency_p95_s": p95,
            "latency_p95_vs_target": p95 / P95_TARGET_S, "latency_max_s": max(latencies),
            "services": services, "voices_per_service": voices,
            "voices_created_s": created_voices, "scale_converged_s": scale_s,
            "operator_rss_mib": rss_mib, "operator_alive": alive,
            "cpus": os.cpu_count(), "load_avg": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--voices", type=int, default=20)
    parser.add_argument("--singles", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="operator-bench-") as tmp:
        result = run(args.services, args.voices, args.singles, Path(tmp))
    print(f"create -> children present ({result['singles']} services, one at a time): "
          f"p50 {result['latency_p50_s'] * 1000:.0f} ms, "
          f"p95 {result['latency_p95_s'] * 1000:.0f} ms "
          f"({result['latency_p95_vs_target']:.2f}x the 1 s target), "
          f"max {result['latency_max_s'] * 1000:.0f} ms")
    print(f"{result['services']} services x {result['voices_per_service']} voices: "
          f"voices created in {result['voices_created_s']:.1f} s, all manifests complete "
          f"{result['scale_converged_s']:.1f} s after the services were created; "
          f"operator RSS {result['operator_rss_mib']:.0f} MiB")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (results / f"operator-{stamp}.json").write_text(json.dumps(result, indent=2))
    return 0 if result["operator_alive"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
