"""Downloads cut short with nothing to verify them, and failed updates of a served voice.

The server here is a raw socket server on 127.0.0.1, because the fault that matters
is one a well-behaved HTTP library will not produce: a body with no ``Content-Length``
(delimited by the end of the connection, as HTTP/1.0 servers and many proxies send
it) that ends early, so the client sees a clean end of a shorter file.
"""

from __future__ import annotations

import hashlib
import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from chorus.common.layout import TEMP_PREFIX, find_voice_files
from chorus.common.manifest import Manifest, parse_manifest
from chorus.common.voice_status import STATUS_FILE
from chorus.voice_manager.sources import FetchSettings
from chorus.voice_manager.sync import SyncSettings, VolumeSyncer
from tests.integration.voice_servers import CONFIG_BYTES, MODEL_BYTES

Mode = Literal["whole", "close-early", "short-length", "chunked-cut"]
"""``whole``: the full body, no length, closed after it; ``close-early``: half of it the
same way; ``short-length``: a full ``Content-Length`` and half the body; ``chunked-cut``:
chunked encoding that stops mid-chunk."""


@dataclass
class RawServer:
    """Serves ``/model`` and ``/config`` with the fault in ``modes`` (by path)."""

    modes: dict[str, Mode] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=lambda: {
        "/model": MODEL_BYTES, "/config": CONFIG_BYTES})
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str) -> bytes:
        data = self.files.get(path)
        if data is None:
            return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        mode = self.modes.get(path, "whole")
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        if mode == "whole":
            return head + b"Connection: close\r\n\r\n" + data
        if mode == "close-early":
            return head + b"Connection: close\r\n\r\n" + data[: len(data) // 2]
        if mode == "short-length":
            return (head + f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data[: len(data) // 2])
        half = data[: len(data) // 2]
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(data):x}\r\n".encode() + half


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    server = RawServer()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request_line = self.rfile.readline().decode()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            self.wfile.write(server.answer(request_line.split()[1]))
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)

    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


NAME = "en_US-joe-medium"
V2_MODEL = MODEL_BYTES + b"\x72\x00"


def _manifest(server: RawServer, *, verified: bool,
              model: str = "/model", config: str = "/config") -> Manifest:
    voice: dict[str, Any] = {"name": NAME, "source": {"url": {
        "model": server.url(model), "config": server.url(config),
        "allowUnverified": not verified}}}
    if verified:
        voice["sha256"] = {"model": hashlib.sha256(server.files[model]).hexdigest(),
                           "config": hashlib.sha256(server.files[config]).hexdigest()}
    return parse_manifest({"version": 1, "voices": [voice]})


def _syncer(dest: Path, retries: int = 0) -> tuple[VolumeSyncer, list[float]]:
    sleeps: list[float] = []
    settings = SyncSettings(retries=retries, backoff_s=0.5,
                            fetch=FetchSettings(timeout_s=5.0))
    return VolumeSyncer(dest, settings, sleep=sleeps.append), sleeps


def _entry(dest: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((dest / STATUS_FILE).read_text())
    return data["voices"][NAME]  # type: ignore[no-any-return]


def _temp_files(dest: Path) -> list[str]:
    return [p.name for p in dest.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_unverified_whole_download_without_length_installs(
        tmp_path: Path, raw_server: RawServer) -> None:
    syncer, _ = _syncer(tmp_path)
    assert syncer.converge(_manifest(raw_server, verified=False)).failed == []
    (voice,) = find_voice_files(tmp_path)
    assert voice.model.read_bytes() == MODEL_BYTES
    assert voice.config.read_bytes() == CONFIG_BYTES
    assert _entry(tmp_path)["state"] == "installed"


@pytest.mark.parametrize(("path", "mode", "message"), [
    ("/model", "close-early", "the download is incomplete"),
    ("/config", "close-early", "the download is incomplete"),
    ("/model", "short-length", "transfer ended after"),
    ("/config", "short-length", "transfer ended after"),
    ("/model", "chunked-cut", "broke off"),
])
def test_unverified_download_cut_short_is_not_installed(
        tmp_path: Path, raw_server: RawServer, path: str, mode: Mode, message: str) -> None:
    raw_server.modes[path] = mode
    syncer, sleeps = _syncer(tmp_path, retries=1)
    report = syncer.converge(_manifest(raw_server, verified=False))
    assert report.failed == [NAME]
    assert find_voice_files(tmp_path) == []
    assert _temp_files(tmp_path) == []
    entry = _entry(tmp_path)
    assert entry["state"] == "failed"
    assert message in entry["error"]
    assert entry["installedAt"] is None and entry["servingPrevious"] is False
    assert sleeps == [0.5]  # a cut is worth one more try
    assert entry["attempts"] == 2


@pytest.mark.parametrize("verified", [True, False])
def test_failed_update_says_the_previous_copy_is_still_served(
        tmp_path: Path, raw_server: RawServer, verified: bool) -> None:
    syncer, _ = _syncer(tmp_path)
    assert syncer.converge(_manifest(raw_server, verified=verified)).failed == []
    installed = _entry(tmp_path)

    # The manifest moves to a new model (one more, empty, metadata_props entry: still a
    # whole ONNX model) that arrives cut short.
    raw_server.files["/model-v2"] = V2_MODEL
    raw_server.modes["/model-v2"] = "close-early"
    report = syncer.converge(_manifest(raw_server, verified=verified, model="/model-v2"))
    assert report.failed == [NAME]
    entry = _entry(tmp_path)
    assert entry["state"] == "failed"
    assert entry["servingPrevious"] is True
    assert entry["error"].endswith(f"; the copy installed at {installed['installedAt']} "
                                   "stays installed and is still served")
    assert (entry["installedAt"], entry["bytes"], entry["sha256"]) == (
        installed["installedAt"], installed["bytes"], installed["sha256"])
    (voice,) = find_voice_files(tmp_path)
    assert voice.model.read_bytes() == MODEL_BYTES  # the old copy, whole
    assert _temp_files(tmp_path) == []

    # Once the source is whole again the update goes through and the note goes.
    raw_server.modes["/model-v2"] = "whole"
    assert syncer.converge(_manifest(raw_server, verified=verified,
                                     model="/model-v2")).failed == []
    entry = _entry(tmp_path)
    assert (entry["state"], entry["servingPrevious"], entry["error"]) == (
        "installed", False, None)
    assert voice.model.read_bytes() == V2_MODEL


def test_failed_update_with_the_old_copy_gone_does_not_claim_it(
        tmp_path: Path, raw_server: RawServer) -> None:
    syncer, _ = _syncer(tmp_path)
    assert syncer.converge(_manifest(raw_server, verified=True)).failed == []
    (voice,) = find_voice_files(tmp_path)
    voice.model.unlink()  # removed by hand
    raw_server.modes["/model"] = "short-length"
    assert syncer.converge(_manifest(raw_server, verified=True)).failed == [NAME]
    entry = _entry(tmp_path)
    assert entry["servingPrevious"] is False
    assert "still served" not in entry["error"]
