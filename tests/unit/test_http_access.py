"""Who a request comes from behind proxies: X-Forwarded-For only from trusted peers."""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import jsonschema
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from chorus.common.server_options import PUBLIC_ROUTE_GROUPS, parse_networks, parse_route_groups
from chorus.server import sse
from chorus.server.client_address import TrustedProxies
from chorus.server.errors import VoiceUnavailable
from chorus.server.http_api import HttpApi
from chorus.server.http_errors import error_body, error_type
from chorus.server.metrics import Metrics
from chorus.server.openapi import PUBLIC_ROUTES, build_openapi
from chorus.server.synthesis import Synthesizer

PROXIES = TrustedProxies([ipaddress.ip_network("10.0.0.0/8"),
                          ipaddress.ip_network("fd00::/8")])


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert PROXIES.client("203.0.113.9", ["198.51.100.1"]) == "203.0.113.9"
    assert TrustedProxies().client("10.0.0.2", ["198.51.100.1"]) == "10.0.0.2"
    assert PROXIES.client(None, ["198.51.100.1"]) == "unknown"


def test_a_trusted_peer_names_the_client() -> None:
    assert PROXIES.client("10.0.0.2", ["198.51.100.1"]) == "198.51.100.1"
    assert PROXIES.client("::ffff:10.0.0.2", ["198.51.100.1"]) == "198.51.100.1"
    assert PROXIES.client("fd00::5", ["2001:db8::7"]) == "2001:db8::7"
    # no header: the proxy itself
    assert PROXIES.client("10.0.0.2", []) == "10.0.0.2"


def test_the_list_is_read_from_the_right_past_trusted_hops() -> None:
    # the client claimed 1.1.1.1; the outer proxy 10.1.1.1 saw 198.51.100.1
    assert PROXIES.client("10.0.0.2", ["1.1.1.1, 198.51.100.1, 10.1.1.1"]) == "198.51.100.1"
    # several headers are one list, in order
    assert PROXIES.client("10.0.0.2", ["1.1.1.1", "198.51.100.1"]) == "198.51.100.1"
    # only proxies: the leftmost of them
    assert PROXIES.client("10.0.0.2", ["10.9.9.9, 10.1.1.1"]) == "10.9.9.9"


def test_garbage_stops_at_the_hop_that_wrote_it() -> None:
    assert PROXIES.client("10.0.0.2", ["198.51.100.1, not-an-ip"]) == "10.0.0.2"
    assert PROXIES.client("10.0.0.2", ["unknown, 10.1.1.1"]) == "10.1.1.1"
    assert PROXIES.client("10.0.0.2", ["[2001:db8::7]"]) == "2001:db8::7"


def test_option_parsers() -> None:
    assert parse_networks("10.0.0.0/8, 192.0.2.7,fd00::/8") == (
        ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("fd00::/8"))
    assert parse_networks("['10.0.0.0/8']") == (ipaddress.ip_network("10.0.0.0/8"),)
    with pytest.raises(argparse.ArgumentTypeError, match="CIDRs"):
        parse_networks("10.0.0.0/33")
    assert parse_route_groups("voices,models,voices") == ("voices", "models")
    assert parse_route_groups("") == ()
    assert parse_route_groups("metrics") == ("metrics",)
    for refused in ("synthesize", "speech", "cache"):
        with pytest.raises(argparse.ArgumentTypeError, match="synthesis always needs"):
            parse_route_groups(f"voices,{refused}")


def test_public_groups_name_only_read_only_routes() -> None:
    assert set(PUBLIC_ROUTES) == set(PUBLIC_ROUTE_GROUPS)
    document = build_openapi(100)
    for routes in PUBLIC_ROUTES.values():
        for route in routes:
            # nothing that speaks or writes: DELETE /voices/{name} shares a listed path,
            # and only GET (with HEAD) is ever opened
            assert set(document["paths"][route]) - {"delete"} == {"get"}, route
    opened = build_openapi(100, public=PUBLIC_ROUTES["voices"])
    assert "401" in opened["paths"]["/voices/{name}"]["delete"]["responses"]
    assert "security" not in opened["paths"]["/voices/{name}"]["delete"]
    assert opened["paths"]["/voices"]["get"]["security"] == []
    assert "401" not in opened["paths"]["/voices"]["get"]["responses"]
    assert "security" not in opened["paths"]["/v1/models"]["get"]
    assert "401" in opened["paths"]["/v1/audio/speech"]["post"]["responses"]


def test_error_bodies_have_openais_shape_and_our_code() -> None:
    assert error_body(422, "bad-request", "speed: must be", "speed") == {"error": {
        "code": "bad-request", "message": "speed: must be",
        "type": "invalid_request_error", "param": "speed"}}
    assert [error_type(s) for s in (400, 401, 404, 413, 429, 500, 503)] == [
        "invalid_request_error", "authentication_error", "not_found_error",
        "invalid_request_error", "rate_limit_error", "server_error", "server_error"]


def test_sse_frames_match_the_documented_events() -> None:
    content = build_openapi(100)["paths"]["/v1/audio/speech"]["post"]["responses"]["200"][
        "content"]
    schema = content[sse.CONTENT_TYPE]["schema"]["properties"]["data"]["contentSchema"]
    frames = [sse.audio_delta(b"\x00\xff audio"), sse.audio_done(),
              sse.error_event(error_body(503, "busy", "try again")["error"])]
    for frame in frames:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        assert b"\n" not in frame[:-2]  # one line per event: no event: or id: lines
        jsonschema.validate(json.loads(frame[6:]), schema)
    assert base64.b64decode(json.loads(frames[0][6:])["audio"]) == b"\x00\xff audio"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "speech.audio.delta"}, schema)


class _FailingUtterance:
    """Synthesis that renders one piece of audio and then fails, as a worker error
    would, with the interface of ``synthesis.Utterance``."""

    spec = SimpleNamespace(name="v", sample_rate=22050)

    def __init__(self) -> None:
        self.closed = False

    def add_text(self, text: str) -> None:
        pass

    def end_text(self) -> None:
        pass

    async def audio(self) -> AsyncIterator[np.ndarray]:
        yield np.zeros(2205, dtype=np.int16)
        raise VoiceUnavailable("the voice's files could not be read")

    async def close(self) -> None:
        self.closed = True


def _failing_api() -> tuple[HttpApi, list[_FailingUtterance]]:
    opened: list[_FailingUtterance] = []

    async def open_utterance(voice: Any, params: Any, **_: Any) -> _FailingUtterance:
        opened.append(_FailingUtterance())
        return opened[-1]

    synthesizer = SimpleNamespace(max_chars=100, check_text=lambda text: None,
                                  open=open_utterance)
    return HttpApi(cast(Synthesizer, synthesizer), Metrics(), ready=lambda: None), opened


async def test_a_failure_after_the_first_event_is_an_error_event() -> None:
    api, opened = _failing_api()
    async with TestClient(TestServer(api.app)) as client:
        async with client.post("/v1/audio/speech", json={
                "input": "Hi.", "response_format": "pcm", "stream_format": "sse"}) as response:
            assert response.status == 200
            body = await response.read()  # ends cleanly: no truncated chunked body
        events = [json.loads(line[6:]) for line in body.split(b"\n\n") if line]
        assert [e["type"] for e in events] == ["speech.audio.delta", "error"]
        piece = base64.b64decode(events[0]["audio"])  # 0.1 s resampled to 24 kHz s16le,
        assert len(piece) % 2 == 0 and 2 * 2200 < len(piece) <= 2 * 2400  # less its delay
        assert events[1]["error"] == {
            "code": "voice-unavailable", "message": "the voice's files could not be read",
            "type": "server_error", "param": None}
        # the same failure streaming the bytes themselves: cut short, never a clean end
        async with client.post("/v1/audio/speech", json={
                "input": "Hi.", "response_format": "pcm"}) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    assert len(opened) == 2 and all(u.closed for u in opened)
