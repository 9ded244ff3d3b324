"""Scraping without the API key: the metrics door (``--metrics-port``) and
``--public-routes metrics``, over real loopback HTTP."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import cast

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from chorus.server.http_api import HttpApi
from chorus.server.metrics import Metrics
from chorus.server.metrics_http import MAX_METRICS_CONNECTIONS, MetricsDoor
from chorus.server.settings import ServerSettings
from chorus.server.synthesis import Synthesizer

KEY = "s3cret"


def _names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


async def test_the_door_serves_the_scrape_and_nothing_else() -> None:
    metrics = Metrics()
    metrics.error("http", "bad-request")
    door = MetricsDoor(metrics)
    await door.start("127.0.0.1", 0)
    try:
        assert door.port is not None
        async with aiohttp.ClientSession(f"http://127.0.0.1:{door.port}") as session:
            async with session.get("/metrics") as response:
                assert response.status == 200
                assert response.content_type == "text/plain"
                names = _names(await response.text())
            assert {"chorus_request_errors", "process_resident_memory_bytes",
                    "chorus_open_connections"} <= names
            async with session.head("/metrics") as response:
                assert response.status == 200
            for path in ("/voices", "/synthesize", "/health/ready", "/", "/docs"):
                async with session.get(path) as response:
                    assert response.status == 404, path
            async with session.post("/metrics", data=b"x") as response:
                assert response.status == 405
            async with session.get("/metrics") as response:
                text = await response.text()
        assert 'chorus_open_connections{door="metrics"} 1.0' in text  # this scrape
    finally:
        await door.close()
    assert door.port is None


async def test_a_taken_port_is_named_in_the_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        door = MetricsDoor(Metrics())
        with pytest.raises(OSError, match=f"--metrics-port: cannot listen on 127.0.0.1:{port}"):
            await door.start("127.0.0.1", port)
        await door.close()


async def test_the_door_caps_its_connections() -> None:
    door = MetricsDoor(Metrics())
    await door.start("127.0.0.1", 0)
    assert door.port is not None
    idle = [socket.create_connection(("127.0.0.1", door.port))
            for _ in range(MAX_METRICS_CONNECTIONS + 4)]
    try:
        url = f"http://127.0.0.1:{door.port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200  # the longest-idle connection made room
        assert door.connections.cap.count() <= MAX_METRICS_CONNECTIONS
    finally:
        for sock in idle:
            sock.close()
        await door.close()


@pytest.mark.parametrize(("settings", "message"), [
    (ServerSettings(metrics_port=5000), "is also --http-port"),
    (ServerSettings(metrics_port=10200), "is also the port of --wyoming-uri"),
])
def test_a_port_another_door_takes_is_refused(settings: ServerSettings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings.check_ports()


def test_ports_that_do_not_clash() -> None:
    ServerSettings(metrics_port=9464).check_ports()
    ServerSettings(metrics_port=5000, http=False).check_ports()  # no HTTP door to clash
    ServerSettings(metrics_port=10200, wyoming_uri="unix:///tmp/w.sock").check_ports()
    ServerSettings().check_ports()


def _api(public: tuple[str, ...]) -> HttpApi:
    synthesizer = SimpleNamespace(max_chars=100)
    return HttpApi(cast(Synthesizer, synthesizer), Metrics(), ready=lambda: None,
                   api_key=KEY, public_routes=public)


@pytest.mark.parametrize(("public", "open_paths", "closed_paths"), [
    ((), (), ("/metrics", "/voices")),
    (("metrics",), ("/metrics",), ("/voices", "/v1/models", "/cache/stats")),
])
async def test_public_routes_can_open_the_scrape_alone(
        public: tuple[str, ...], open_paths: tuple[str, ...],
        closed_paths: tuple[str, ...]) -> None:
    async with TestClient(TestServer(_api(public).app)) as client:
        for path in open_paths:
            async with client.get(path) as response:
                assert response.status == 200, path
                assert "chorus_request_errors" in _names(await response.text())
        for path in closed_paths:
            async with client.get(path) as response:
                assert response.status == 401, path
        async with client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}) as r:
            assert r.status == 200
