"""The sidecar's small HTTP port: ``/healthz``, ``/readyz``, ``/status`` and ``/metrics``.

Standard library only (``http.server``), since the voice manager's extra brings no web
framework and the traffic is a probe every few seconds. Everything served is read from
the watcher and syncer in memory, the same data as the status file:

* ``/healthz``: 200 while the watch loop runs (a long download counts as healthy);
* ``/readyz``: 200 once every required voice of the current manifest is installed;
* ``/status``: the status file's JSON;
* ``/metrics``: Prometheus text format, one gauge family per fact.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .watch import ManifestWatcher

__all__ = ["StatusServer", "render_metrics"]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(watcher: ManifestWatcher) -> str:
    """Prometheus exposition text for the watcher's volume."""
    status = watcher.syncer.status
    desired = {v.name for v in watcher.manifest.voices} if watcher.manifest else set()
    lines = [
        "# HELP chorus_voice_installed 1 when the voice's desired version is installed.",
        "# TYPE chorus_voice_installed gauge",
    ]
    for name, voice in sorted(status.voices.items()):
        if name in desired:
            lines.append(f'chorus_voice_installed{{voice="{_label(name)}",'
                         f'required="{str(voice.required).lower()}",state="{voice.state}"}} '
                         f"{1 if voice.state == 'installed' else 0}")
    lines += ["# HELP chorus_voice_bytes Size of the installed voice files.",
              "# TYPE chorus_voice_bytes gauge"]
    for name, voice in sorted(status.voices.items()):
        if name in desired and voice.bytes is not None:
            lines.append(f'chorus_voice_bytes{{voice="{_label(name)}"}} {voice.bytes}')
    lines += ["# HELP chorus_voice_attempts Download attempts in the voice's last sync.",
              "# TYPE chorus_voice_attempts gauge"]
    for name, voice in sorted(status.voices.items()):
        if name in desired:
            lines.append(f'chorus_voice_attempts{{voice="{_label(name)}"}} {voice.attempts}')
    lines += ["# HELP chorus_voice_manifest_error 1 when the manifest file cannot be used.",
              "# TYPE chorus_voice_manifest_error gauge",
              f"chorus_voice_manifest_error {1 if status.manifest_error else 0}",
              "# HELP chorus_voice_sync_passes_total Sync passes run since start.",
              "# TYPE chorus_voice_sync_passes_total counter",
              f"chorus_voice_sync_passes_total {watcher.passes}"]
    return "\n".join(lines) + "\n"


def _not_ready(watcher: ManifestWatcher) -> list[str]:
    if watcher.manifest is None:
        return ["no manifest loaded yet"]
    voices = watcher.syncer.status.voices
    return [v.name for v in watcher.manifest.voices
            if v.required and (v.name not in voices or voices[v.name].state != "installed")]


class StatusServer:
    """Serves the watcher's state on ``host:port`` from a daemon thread."""

    def __init__(self, watcher: ManifestWatcher, host: str, port: int) -> None:
        self.watcher = watcher
        handler = self._handler_class()
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="voice-status-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        watcher = self.watcher

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    # A long download is healthy; only a dead watch loop is not.
                    alive = watcher.running
                    self._send(200 if alive else 503, "text/plain",
                               "ok\n" if alive else "watch loop stopped\n")
                elif self.path == "/readyz":
                    missing = _not_ready(watcher)
                    self._send(503 if missing else 200, "text/plain",
                               f"waiting for: {', '.join(missing)}\n" if missing else "ready\n")
                elif self.path == "/status":
                    self._send(200, "application/json", watcher.syncer.status.to_json())
                elif self.path == "/metrics":
                    self._send(200, "text/plain; version=0.0.4", render_metrics(watcher))
                else:
                    self._send(404, "text/plain", "not found\n")

            def _send(self, code: int, content_type: str, body: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", f"{content_type}; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                """Probes every few seconds would flood the log; stay quiet."""

        return Handler
