"""The Wyoming fuzzer (:mod:`tests.reliability.wyoming_fuzz`) against a real server.

A fast subset (``CHORUS_WYOMING_FUZZ_CASES``, 3,000 seeded framing and event cases by
default, over 8 connections at once; the speaking cases synthesize, which is slow here)
runs in the normal suite, unmarked; the long run (>= 100,000 cases, random seed, printed
so that a failing case can be replayed with ``--replay INDEX``) is opt-in with
``CHORUS_RELIABILITY=1``. The cases the fuzzer found are kept here as examples that must
stay fixed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import struct
from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess
from tests.reliability.wyoming_fuzz import (
    Case,
    Summary,
    _exchange,
    _judge,
    case,
    health_check,
    run,
    serve_for_fuzzing,
)

FAST_CASES = int(os.environ.get("CHORUS_WYOMING_FUZZ_CASES", "3000"))
LONG_CASES = 100_000


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own: after the cases it must stop cleanly, with no traceback."""
    server = serve_for_fuzzing(tmp_path_factory.mktemp("fuzz") / "server.log")
    yield server
    output = server.output()
    assert server.terminate() == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]


def _check(summary: Summary, cases: int) -> None:
    print(json.dumps(summary.as_dict(), indent=1))
    assert summary.cases == cases
    assert summary.crashes == 0 and summary.hangs == 0, summary.failures
    assert summary.violations == 0, summary.failures
    assert summary.health_failures == 0 and summary.health_checks >= cases // 200
    assert summary.tracebacks == 0, summary.failures
    assert summary.errors_answered > cases // 10  # the cases do reach the checks


@pytest.mark.timeout(600)
def test_fuzz_fast_subset(fuzzed: ServerProcess) -> None:
    _check(run(fuzzed, FAST_CASES, seed=13, speaking=False), FAST_CASES)


def test_a_case_depends_on_its_seed_and_index_only() -> None:
    """What makes ``--replay INDEX`` send the very case that failed in a long run."""
    again = [case(7, index) for index in (5, 1, 3)]
    assert again == [case(7, index) for index in (5, 1, 3)]
    assert len({case(7, index).data for index in range(50)}) > 45
    assert case(7, 3).data != case(8, 3).data
    assert {case(7, index).kind.split("/")[0] for index in range(200)} == {
        "events", "framing", "speak"}
    assert all(not case(7, index, speaking=False).kind.startswith("speak")
               for index in range(200))


@pytest.mark.reliability
@pytest.mark.skipif(os.environ.get("CHORUS_RELIABILITY") != "1",
                    reason="reliability tier: set CHORUS_RELIABILITY=1 to run it")
@pytest.mark.timeout(6 * 3600)
def test_fuzz_long_run(fuzzed: ServerProcess) -> None:
    seed = random.SystemRandom().getrandbits(32)
    print(f"seed {seed}")
    _check(run(fuzzed, LONG_CASES, seed), LONG_CASES)


FOUND = [
    pytest.param(Case("events", b'{"type": "synthesize-start"}\n'
                                b'{"type": "synthesize-stop"}\n'), id="empty-stream-then-eof"),
    pytest.param(Case("events", b'{"type": "describe"}\n{"type": "synthesize-start"}\n'
                                b'{"type": "synthesize-stop"}\n', answers=("info",)),
                 id="describe-empty-stream-then-eof"),
    pytest.param(Case("events", b'{"type": "synthesize-start"}\n'
                                b'{"type": "synthesize-chunk", "data": {"text": "Hi."}}\n'
                                b'{"type": "synthesize-stop"}\n'), id="stream-then-eof"),
]


@pytest.mark.parametrize("case", FOUND)
async def test_found_departed_stream_client_is_closed(fuzzed: ServerProcess,
                                                      case: Case) -> None:
    """A stream's response was cancelled while it cleaned up; the cleanup swallowed the
    cancellation and the connection stayed open for good (a slot and an fd each)."""
    summary = Summary()
    for _ in range(3):
        found, outcome = await _exchange(fuzzed.port, case)
        _judge(case, found, outcome, summary)
    assert summary.hangs == 0 and summary.violations == 0, summary.failures
    assert await health_check(fuzzed.port) is None


async def test_an_error_split_from_its_data_is_read_whole(fuzzed: ServerProcess) -> None:
    """A fuzzer fault: it stopped reading once ``"type": "error"`` appeared in the raw
    bytes, often before the event's data had arrived, and judged the cut event as no
    answer ("speak case ended without audio-stop: {}", about half the time)."""
    empty = Case("speak/plain", b'{"type": "synthesize", "data": {"text": ""}}\n',
                 wait_for="audio-stop")
    summary = Summary()
    for _ in range(20):
        found, outcome = await _exchange(fuzzed.port, empty)
        assert [(e.type, e.data.get("code")) for e in found] == [("error", "empty-text")]
        _judge(empty, found, outcome, summary)
    assert summary.violations == 0, summary.failures


async def test_found_reset_after_a_failed_request_logs_no_traceback(
        fuzzed: ServerProcess) -> None:
    """A client that resets right after a failing plain request: the half-close that
    ends the exchange met ENOTCONN and the connection task died with a traceback."""
    for _ in range(40):
        sock = socket.create_connection(("127.0.0.1", fuzzed.port))
        sock.sendall(b'{"type": "synthesize", "data": {"text": "   "}}\n'
                     b'{"type": "synthesize", "data": {"text": 7}}\n')
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset, not a close
        await asyncio.sleep(0.01)
    assert await health_check(fuzzed.port) is None
    await asyncio.sleep(0.5)
    assert "Traceback" not in fuzzed.output()
