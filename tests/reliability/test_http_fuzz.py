"""The long schemathesis hunt: ≥ 50,000 generated HTTP requests against one server.

The same checks as :mod:`tests.integration.test_openapi_fuzz` (no 5xx, every answer
conforms to ``/openapi.json``, no traceback in the server log, a clean stop, a 30 s
bound on each answer), with a random seed and enough examples per operation that the
requests actually sent add up to the target; the last test counts them. The text limit
is short (``MAX_TEXT``): a speakable text costs a synthesis of up to a second on a busy
two-core machine, and the hunt is for the server's handling of requests, not for speech.

Opt-in with ``CHORUS_RELIABILITY=1``; ``CHORUS_HTTP_FUZZ_EXAMPLES`` (per operation),
``CHORUS_HTTP_FUZZ_SPEECH_EXAMPLES`` (per operation that synthesizes),
``CHORUS_HTTP_FUZZ_SEED`` and ``CHORUS_HTTP_FUZZ_REPORT`` (a JSON file of the figures,
rewritten as the run goes) change the run. The operations that synthesize run first
(the costly part, so a cut-short run has covered them); 14 others x 3,000 and 3 that
synthesize x 4,000 make about 54,000 requests; the count is of what was sent, with the
statuses answered per operation (a 200 from a synthesizing route is speech rendered,
or served from the cache, which is on here, in a directory of its own).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from tests.conftest import ServerProcess
from tests.integration.conftest import CACHE_ON
from tests.integration.test_openapi_fuzz import KEY, fuzz_schema, fuzzed_server

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(os.environ.get("CHORUS_RELIABILITY") != "1",
                       reason="reliability tier: set CHORUS_RELIABILITY=1 to run it"),
]

TARGET_CASES = 50_000
MAX_TEXT = 8
SPEECH = "synthesize|speech"
"""Operations that synthesize: about a second each here, so they get fewer examples."""
EXAMPLES = int(os.environ.get("CHORUS_HTTP_FUZZ_EXAMPLES", "3000"))
SPEECH_EXAMPLES = int(os.environ.get("CHORUS_HTTP_FUZZ_SPEECH_EXAMPLES", "4000"))
SEED = int(os.environ.get("CHORUS_HTTP_FUZZ_SEED") or random.SystemRandom().getrandbits(32))
REPORT = os.environ.get("CHORUS_HTTP_FUZZ_REPORT")
schema = fuzz_schema(SEED, MAX_TEXT)
_SENT: dict[str, int] = {}
_STATUSES: dict[str, Counter[str]] = {}
"""Per operation: the statuses answered, and ``no answer`` for a request that got none."""
_STARTED = time.monotonic()


def _group(key: str) -> str:
    return "speech" if re.search(SPEECH, key.split(" ", 1)[1]) else "other"


def _figures() -> dict[str, Any]:
    groups: dict[str, Counter[str]] = {"speech": Counter(), "other": Counter()}
    for key, sent in _SENT.items():
        groups[_group(key)]["cases"] += sent
        groups[_group(key)].update(_STATUSES.get(key, {}))
    statuses = Counter[str]()
    for counts in _STATUSES.values():
        statuses.update(counts)
    return {"seed": SEED, "examples_per_operation": EXAMPLES,
            "examples_per_speech_operation": SPEECH_EXAMPLES, "max_text_chars": MAX_TEXT,
            "cases": sum(_SENT.values()),
            "5xx": sum(n for status, n in statuses.items() if status.startswith("5")),
            "no_answer": statuses["no answer"],
            "seconds": round(time.monotonic() - _STARTED, 1),
            "per_group": {name: dict(sorted(counts.items()))
                          for name, counts in groups.items()},
            "per_operation": {key: {"cases": sent, **dict(sorted(_STATUSES[key].items()))}
                              for key, sent in _SENT.items()}}


def _report() -> None:
    if REPORT:
        Path(REPORT).write_text(json.dumps(_figures(), indent=1))


@pytest.fixture(scope="module")
def long_fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``--length-scale 0.1``: a tenth of the audio, so a synthesis costs less. The audio
    cache is on (its keys and writes meet the fuzzed parameters too), in a directory
    of its own."""
    root = tmp_path_factory.mktemp("fuzz")
    with fuzzed_server(root / "server.log", MAX_TEXT,
                       ("--length-scale", "0.1", "--cache-dir", str(root / "cache")),
                       env=CACHE_ON) as proc:
        yield proc


def _send(case: Any, server: ServerProcess) -> None:
    """``call_and_validate``, split so that the status is counted before the checks."""
    key = f"{case.method} {case.path}"
    _SENT[key] = _SENT.get(key, 0) + 1
    statuses = _STATUSES.setdefault(key, Counter())
    if sum(_SENT.values()) % 500 == 0:
        _report()
    transport = {"base_url": server.http_url, "timeout": 30,
                 "headers": {"Authorization": f"Bearer {KEY}"}}
    try:
        response = case.call(**transport)
    except BaseException:
        statuses["no answer"] += 1  # a hang (the 30 s timeout) or a dropped connection
        raise
    statuses[str(response.status_code)] += 1
    case.validate_response(response, headers=transport["headers"],
                           transport_kwargs=transport)


_SETTINGS: dict[str, Any] = {
    "deadline": None, "database": None, "suppress_health_check": list(HealthCheck),
    "phases": [Phase.explicit, Phase.generate]}


@schema.include(path_regex=SPEECH).parametrize()
@settings(max_examples=SPEECH_EXAMPLES, **_SETTINGS)
@pytest.mark.timeout(4 * 3600)
def test_speech_conforms_to_its_schema_long(case: Any,
                                            long_fuzz_server: ServerProcess) -> None:
    _send(case, long_fuzz_server)


@schema.exclude(path_regex=SPEECH).parametrize()
@settings(max_examples=EXAMPLES, **_SETTINGS)
@pytest.mark.timeout(4 * 3600)
def test_api_conforms_to_its_schema_long(case: Any, long_fuzz_server: ServerProcess) -> None:
    _send(case, long_fuzz_server)


def test_enough_requests_were_sent(long_fuzz_server: ServerProcess) -> None:
    """Runs after the hunt (file order): the figures, and the target they must reach."""
    _report()
    figures = _figures()
    print(json.dumps(figures, indent=1))
    assert long_fuzz_server.proc.poll() is None, "the server died"
    assert figures["cases"] >= TARGET_CASES, f"only {figures['cases']} requests sent"
