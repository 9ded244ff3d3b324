"""The shipped Grafana dashboard queries only metrics a running server exposes.

Renaming a metric without updating the dashboard would leave its panels silently empty
("No data" looks like an idle server); this test makes the drift a failure instead.
"""

from __future__ import annotations

import json
import re

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, ServerProcess
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
    return {_base(name) for expr in exprs for name in re.findall(r"chorus_[a-z_]+", expr)}


async def test_dashboard_uses_only_exposed_metrics(server: ServerProcess) -> None:
    async with aiohttp.ClientSession(server.http_url) as session:
        # Labelled series appear once used: one success and one error fill them in.
        status, _, _ = await post(session, "/synthesize", {"text": SENTENCE})
        assert status == 200
        status, _, _ = await post(session, "/synthesize", {"text": "Hi.", "voice": "nobody"})
        assert status == 404
        async with session.get("/metrics") as response:
            text = await response.text()
    exposed = {_base(sample.name) for family in text_string_to_metric_families(text)
               for sample in family.samples}
    exposed |= {_base(family.name) for family in text_string_to_metric_families(text)}
    used = dashboard_metrics()
    missing = sorted(used - exposed)
    assert not missing, f"dashboard queries metrics /metrics does not expose: {missing}"
    # The panels the dashboard promises are all there.
    for name in ("chorus_requests_total", "chorus_request_errors_total",
                 "chorus_synthesis_seconds", "chorus_time_to_first_audio_seconds",
                 "chorus_real_time_factor", "chorus_queued_units", "chorus_busy_workers",
                 "chorus_active_requests", "chorus_resident_voices",
                 "chorus_voice_memory_bytes", "chorus_cache_hits_total",
                 "chorus_cache_misses_total", "chorus_cache_bytes", "chorus_cache_entries"):
        assert name in used, name
