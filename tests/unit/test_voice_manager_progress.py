"""The log lines of a download in progress, on a clock the test moves."""

from __future__ import annotations

import logging

import pytest

from chorus.voice_manager.progress import LoggedProgress


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_at_the_interval_with_share_and_rate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "chorus.voice_manager.progress")
    clock = _Clock()
    progress = LoggedProgress("a.onnx", 10_000_000, interval=5.0, clock=clock)
    clock.now += 1
    progress.update(1_000_000)  # within the interval: no line
    clock.now += 4
    progress.update(1_500_000)
    clock.now += 5
    progress.update(7_500_000)
    progress.close()
    assert caplog.messages == [
        "downloading a.onnx (10.0 MB)",
        "downloading a.onnx: 2.5 MB of 10.0 MB (25 %), 500.0 kB/s",
        "downloading a.onnx: 10.0 MB of 10.0 MB (100 %), 1.0 MB/s",
        "a.onnx: 10.0 MB transferred in 10.0 s, 1.0 MB/s",
    ]


def test_unknown_size(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "chorus.voice_manager.progress")
    clock = _Clock()
    progress = LoggedProgress("b.onnx.json", None, interval=1.0, clock=clock)
    clock.now += 2
    progress.update(4_000)
    assert caplog.messages == ["downloading b.onnx.json",
                               "downloading b.onnx.json: 4.0 kB, 2.0 kB/s"]
