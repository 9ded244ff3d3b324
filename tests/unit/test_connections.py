"""The connection cap's choice of whom to close, and the open-file limit at start."""

from __future__ import annotations

import logging
import resource
import subprocess
import sys
from dataclasses import dataclass

import pytest

from chorus.server.connections import FD_RESERVE, ConnectionCap, raise_open_file_limit
from chorus.server.metrics import Metrics


@dataclass(eq=False)
class FakeConnection:
    """Holds the cap's rules for a connection: idle since a time, or busy."""

    since: float | None
    ended: bool = False
    closed_to_make_room: bool = False

    def idle_since(self) -> float | None:
        return self.since

    def closed(self) -> bool:
        return self.ended

    def close_idle(self) -> None:
        assert self.since is not None, "a busy connection was closed"
        self.closed_to_make_room = True


def _sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name, {"door": "wyoming"})
    assert value is not None
    return value


def test_below_the_cap_nobody_is_closed() -> None:
    cap = ConnectionCap("wyoming", 2, Metrics())
    first = FakeConnection(since=1.0)
    cap.add(first)
    assert cap.make_room()
    assert not first.closed_to_make_room


def test_at_the_cap_the_longest_idle_connection_is_closed() -> None:
    metrics = Metrics()
    cap = ConnectionCap("wyoming", 3, metrics)
    busy, older, newer = (FakeConnection(since=None), FakeConnection(since=5.0),
                          FakeConnection(since=9.0))
    for conn in (busy, older, newer):
        cap.add(conn)
    assert cap.make_room()
    assert older.closed_to_make_room
    assert not newer.closed_to_make_room and not busy.closed_to_make_room
    assert cap.count() == 2
    assert _sample(metrics, "chorus_connections_evicted_total") == 1
    assert metrics.registry.get_sample_value("chorus_open_connections",
                                             {"door": "wyoming"}) == 2


def test_when_all_are_busy_the_newcomer_is_refused() -> None:
    metrics = Metrics()
    cap = ConnectionCap("wyoming", 2, metrics)
    for _ in range(2):
        cap.add(FakeConnection(since=None))
    assert not cap.make_room()
    assert _sample(metrics, "chorus_connections_refused_total") == 1
    assert _sample(metrics, "chorus_connections_evicted_total") == 0


def test_ended_connections_do_not_count() -> None:
    cap = ConnectionCap("wyoming", 2, Metrics())
    gone, busy = FakeConnection(since=None, ended=True), FakeConnection(since=None)
    cap.add(gone)
    cap.add(busy)
    assert cap.make_room()  # the ended one made room, nobody was closed
    assert cap.count() == 1


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard open-file limit {hard} leaves nothing to raise to")
    code = ("import logging, resource; logging.basicConfig(level=logging.INFO); "
            "from chorus.server.connections import raise_open_file_limit; "
            "print(raise_open_file_limit(100)); "
            "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    assert done.stdout.split() == [str(hard), str(hard)], done
    assert f"Raised the open-file limit from 256 to {hard}" in done.stderr


def test_caps_that_do_not_fit_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="chorus.server.connections"):
        soft = raise_open_file_limit(10**9)
    assert soft >= 1
    assert any("cannot hold the connection caps" in r.getMessage() and
               str(FD_RESERVE) in r.getMessage() for r in caplog.records), caplog.text
