"""The mixed-load soak (:mod:`tests.reliability.soak`): a short run in every suite, the
30-minute run in the reliability tier.

The soak runs in a process of its own so that its clients do not share the test
runner's event loop, and so that the long run can be launched by hand with the same
code (``python -m tests.reliability.soak --minutes 30``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

EXECUTOR_THREADS = min(32, (os.cpu_count() or 1) + 4)
"""The bound of asyncio's default executor (ThreadPoolExecutor's default max_workers)."""


def _soak(work: Path, *args: str, timeout: float) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "tests.reliability.soak", "--work",
                           str(work), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    figures: dict[str, Any] = json.loads(done.stdout)
    print(json.dumps({k: v for k, v in figures.items() if k != "samples"}))
    return figures


def _assert_clean(figures: dict[str, Any]) -> None:
    """No failed exchange, a clean stop, and nothing left open once clients are gone."""
    assert figures["errors"] == 0, figures["error_samples"]
    assert figures["server_exit_code"] == 0, figures["server_log_tail"]
    for kind in ("wyoming_stream", "wyoming_plain", "http_synthesize", "http_openai"):
        assert figures["requests"].get(kind, 0) > 0, figures["requests"]
    assert figures["fds_idle_end"] <= figures["fds_idle_start"], figures
    # asyncio's default executor (codecs, cache files) starts threads as work overlaps,
    # up to its fixed bound, and keeps them: growth within that bound is not a leak.
    assert figures["threads_idle_end"] <= figures["threads_idle_start"] + EXECUTOR_THREADS, \
        figures


@pytest.mark.timeout(300)
def test_short_mixed_load_leaves_no_errors_and_no_open_fds(tmp_path: Path) -> None:
    """About a minute of every kind of client: correctness and leaks, not memory."""
    figures = _soak(tmp_path, "--minutes", "0.75", "--wyoming-clients", "4",
                    "--http-clients", "2", "--warmup", "10", "--sample-every", "3",
                    timeout=280)
    _assert_clean(figures)


@pytest.mark.reliability
@pytest.mark.skipif(os.environ.get("CHORUS_RELIABILITY") != "1",
                    reason="reliability tier: set CHORUS_RELIABILITY=1 to run it")
@pytest.mark.timeout(2700)
def test_thirty_minutes_of_mixed_load_keep_memory_flat(tmp_path: Path) -> None:
    """Target: RSS at the end within +-10 % of the RSS after 2 minutes of load."""
    figures = _soak(tmp_path, "--minutes", "30", timeout=2600)
    _assert_clean(figures)
    baseline = figures["rss_mib_at_baseline"]
    assert baseline is not None
    assert abs(figures["rss_mib_end"] - baseline) <= 0.10 * baseline, figures
