"""Fuzz the HTTP API from its own OpenAPI document with schemathesis, against a real
``chorus serve`` on 127.0.0.1.

Every operation of ``/openapi.json`` gets generated requests, valid and invalid; each
response must be no 5xx and must conform to the document (status, content type,
headers, JSON body), and the bearer key (configured here) must be asked for exactly
where the document says. The server runs with a short text limit (``--max-text-chars``,
which the document carries as ``maxLength``) so that generated texts synthesize fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.schemas import OpenApiSchema
from schemathesis.transport.requests import REQUESTS_TRANSPORT

from chorus.server.http_requests import SSML_CONTENT_TYPE
from chorus.server.openapi import build_openapi
from tests.conftest import ServerProcess

MAX_TEXT = 40
KEY = "fuzz-key"
EXAMPLES = int(os.environ.get("CHORUS_FUZZ_EXAMPLES", "12"))
"""Per operation; set ``CHORUS_FUZZ_EXAMPLES=200`` for a longer, random (not
derandomized) hunt."""
DERANDOMIZE = "CHORUS_FUZZ_EXAMPLES" not in os.environ


@contextlib.contextmanager
def fuzzed_server(log: Path, max_text: int = MAX_TEXT, args: tuple[str, ...] = (),
                  env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """A server to fuzz; on the way out it must stop cleanly, with no error logged.

    Only the offending lines are shown: a long run's log holds an access line per request.
    """
    proc = ServerProcess(["--max-text-chars", str(max_text), *args], log,
                         env={"CHORUS_API_KEY": KEY, **(env or {})})
    yield proc
    code = proc.terminate()
    lines = proc.output().splitlines()
    bad = [n for n, line in enumerate(lines) if "Traceback" in line or " ERROR " in line]
    assert code == 0, "\n".join(lines[-50:])
    assert not bad, "\n".join(lines[bad[0]:bad[0] + 60])


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with fuzzed_server(tmp_path_factory.mktemp("fuzz") / "server.log") as proc:
        yield proc




def _send_ssml_as_text() -> None:
    """An SSML body is the document's text itself, but schemathesis sends any ``+xml``
    type with its XML serializer (the string wrapped in an element named after its
    schema). The first registered match wins: the SSML type goes ahead of the XML ones."""
    schemathesis.serializer.alias(SSML_CONTENT_TYPE, "text/plain")
    registered = REQUESTS_TRANSPORT._serializers
    for media_type in [m for m in registered if m.endswith("xml") and m != SSML_CONTENT_TYPE]:
        registered[media_type] = registered.pop(media_type)


_send_ssml_as_text()

DOCUMENT = build_openapi(MAX_TEXT)
REJECTED = [400, 401, 404, 405, 413, 422]
"""Statuses that refuse a request; 413 is what a text over ``maxLength`` gets."""


def fuzz_schema(seed: int | None = None, max_text: int = MAX_TEXT) -> OpenApiSchema:
    """The served document as schemathesis sees it, with the statuses that refuse.

    Built here, not loaded from the server (pytest 9 breaks schemathesis's lazy fixture
    loader); the first test checks that the server serves this very document.
    """
    config: dict[str, Any] = {
        "checks": {"negative_data_rejection": {"expected-statuses": REJECTED}},
        "operations": [{
            # No schema can say which bytes are audio: generated clips are refused as
            # not audio (415) or unusable (422); with a real clip, this server (no XTTS
            # engine) answers 501; a generated name may be an installed voice's (409).
            "include-name": "POST /voices/clone",
            "checks": {
                "negative_data_rejection": {"expected-statuses": [*REJECTED, 409, 415]},
                "positive_data_acceptance": {"expected-statuses": [
                    "2xx", 401, 409, 413, 415, 422, 501]},
                "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", 501]},
            }}]}
    if seed is not None:
        config["seed"] = seed
    return schemathesis.openapi.from_dict(build_openapi(max_text),
                                          config=SchemathesisConfig.from_dict(config))


schema = fuzz_schema()


def test_server_serves_the_fuzzed_document(fuzz_server: ServerProcess) -> None:
    with urllib.request.urlopen(fuzz_server.http_url + "/openapi.json") as response:  # noqa: S310
        assert json.load(response) == DOCUMENT


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE,
          suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
def test_api_conforms_to_its_schema(case: Any, fuzz_server: ServerProcess) -> None:
    case.call_and_validate(base_url=fuzz_server.http_url, timeout=30,
                           headers={"Authorization": f"Bearer {KEY}"})
