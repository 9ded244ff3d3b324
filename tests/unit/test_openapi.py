"""The OpenAPI document: valid OpenAPI 3.1, one operation per registered route and no
more, the bearer scheme on exactly the routes the auth middleware guards, and bounds
that agree with the request parser."""

from __future__ import annotations

import copy
import re
from types import SimpleNamespace
from typing import Any, cast

import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from chorus.server.errors import BadRequest
from chorus.server.http_api import HttpApi
from chorus.server.http_requests import parse_native, parse_openai
from chorus.server.metrics import Metrics
from chorus.server.openapi import build_openapi
from chorus.server.synthesis import _CONTROL, Synthesizer

METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
KEY = "unit-key"


def api(api_key: str | None = None) -> HttpApi:
    """An HttpApi whose handlers are never reached except the public, store-free ones."""
    synthesizer = cast(Synthesizer, SimpleNamespace(max_chars=100))
    return HttpApi(synthesizer, Metrics(), ready=lambda: None, api_key=api_key)


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): item[method]
            for path, item in document["paths"].items()
            for method in METHODS if method in item}


def registered(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route; HEAD routes are GET's twins (aiohttp adds them)."""
    routes = set()
    for route in app.router.routes():
        assert route.resource is not None
        routes.add((route.method, route.resource.canonical))
    return {(m, p) for m, p in routes if not (m == "HEAD" and ("GET", p) in routes)}


def test_document_is_valid_openapi_3_1() -> None:
    document = build_openapi(100)
    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(document).validate()
    broken = copy.deepcopy(document)
    broken["paths"]["/voices"]["get"]["responses"] = "none"
    with pytest.raises(Exception, match="none"):  # the validation really runs
        schemathesis.openapi.from_dict(broken).validate()


def test_every_route_is_documented_and_nothing_else() -> None:
    app = api().app
    assert registered(app) == set(operations(build_openapi(100)))


async def test_security_matches_the_auth_middleware() -> None:
    """Without a key, documented-public operations answer and the others answer 401."""
    document = build_openapi(100)
    fill = {"{name}": "en_US-joe-medium", "{filename}": "style.css"}
    async with TestClient(TestServer(api(KEY).app)) as client:
        for (method, path), operation in operations(document).items():
            url = path
            for param, value in fill.items():
                url = url.replace(param, value)
            body = {"text": "hi", "input": "hi"} if method == "POST" else None
            async with client.request(method, url, json=body) as response:
                public = operation.get("security", document["security"]) == []
                assert (response.status != 401) == public, (method, path, response.status)
                if not public:
                    assert response.headers["WWW-Authenticate"] == "Bearer"
                    assert "401" in operation["responses"]
                    continue
                assert str(response.status) in operation["responses"], (method, path)


async def test_docs_page_and_document_are_served() -> None:
    async with TestClient(TestServer(api(KEY).app)) as client:
        async with client.get("/openapi.json") as response:
            assert response.status == 200
            assert await response.json() == build_openapi(100)
        async with client.get("/docs") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
    assert 'fetch("../openapi.json")' in page
    assert "://" not in page.replace("http://www.w3.org", "")  # nothing from elsewhere


def _auth_mentions(document: dict[str, Any]) -> list[str]:
    """Where a document asks for credentials: requirements, schemes, 401 answers."""
    found = ["security"] if "security" in document else []
    found += list(document["components"].get("securitySchemes", {}))
    found += [f"{method} {path}" for (method, path), operation in operations(document).items()
              if "security" in operation or "401" in operation["responses"]]
    return found


@pytest.mark.parametrize("key", [None, KEY])
async def test_bearer_auth_is_declared_only_with_an_api_key(key: str | None) -> None:
    async with TestClient(TestServer(api(key).app)) as client, \
            client.get("/openapi.json") as response:
        document = await response.json()
    assert document == build_openapi(100, auth=key is not None)
    schemathesis.openapi.from_dict(document).validate()
    mentions = _auth_mentions(document)
    if key is None:
        assert mentions == []
    else:
        assert document["security"] == [{"bearer": []}]
        assert "POST /synthesize" in mentions and "bearer" in mentions


def schema_of(document: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


@pytest.mark.parametrize("field", ["speed", "noise_scale", "noise_w_scale", "sample_rate"])
def test_native_bounds_agree_with_the_parser(field: str) -> None:
    prop = schema_of(build_openapi(100), "SynthesizeRequest")["properties"][field]
    low, high = prop["minimum"], prop["maximum"]
    for value in (low, high):
        parse_native({"text": "x", "format": "wav", field: value})
    step = 1 if field == "sample_rate" else 0.01
    for value in (low - step, high + step):
        with pytest.raises(BadRequest, match=field):
            parse_native({"text": "x", "format": "wav", field: value})


def test_enums_agree_with_the_parser() -> None:
    document = build_openapi(100)
    native = schema_of(document, "SynthesizeRequest")["properties"]
    for fmt in filter(None, native["format"]["enum"]):
        assert parse_native({"text": "x", "format": fmt}).format.name == fmt
    with pytest.raises(BadRequest, match="format"):
        parse_native({"text": "x", "format": "ogg"})
    with pytest.raises(BadRequest, match="unknown field"):
        parse_native({"text": "x", "bogus": 1})
    assert schema_of(document, "SynthesizeRequest")["additionalProperties"] is False
    openai = schema_of(document, "OpenAISpeechRequest")["properties"]
    for fmt in filter(None, openai["response_format"]["enum"]):
        assert parse_openai({"input": "x", "response_format": fmt}).speech.format.name == fmt
    # Rates a codec refuses are spelled out per format, as the parser refuses them.
    for rule in schema_of(document, "SynthesizeRequest")["allOf"]:
        fmt = rule["if"]["properties"]["format"]["const"]
        allowed = [r for r in rule["then"]["properties"]["sample_rate"]["enum"] if r]
        for rate in allowed:
            parse_native({"text": "x", "format": fmt, "sample_rate": rate})
        with pytest.raises(BadRequest, match="sample_rate"):
            parse_native({"text": "x", "format": fmt, "sample_rate": max(allowed) - 1})


def test_text_limit_is_the_servers() -> None:
    document = build_openapi(321)
    assert schema_of(document, "SynthesizeRequest")["properties"]["text"]["maxLength"] == 321
    assert schema_of(document, "OpenAISpeechRequest")["properties"]["input"]["maxLength"] == 321


def test_text_pattern_is_exactly_what_check_text_accepts() -> None:
    """Every code point: the pattern matches iff the server does not call it empty."""
    pattern = re.compile(schema_of(build_openapi(100), "SynthesizeRequest")
                         ["properties"]["text"]["pattern"])
    for code in range(0x110000):
        char = chr(code)
        assert bool(pattern.search(char)) == bool(_CONTROL.sub("", char).strip()), hex(code)
