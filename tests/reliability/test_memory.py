"""Memory that stays flat: voice churn under a memory budget, and long texts.

Each probe runs in a process of its own (:mod:`tests.reliability.memory_probe`) so the
RSS it samples is the store's and its voices', not the test runner's. Minutes of CPU
each: opt-in with ``CHORUS_RELIABILITY=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(os.environ.get("CHORUS_RELIABILITY") != "1",
                       reason="reliability tier: set CHORUS_RELIABILITY=1 to run it"),
    pytest.mark.timeout(900),
]


def _probe(kind: str, work: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-m", "tests.reliability.memory_probe", kind,
                           str(work)], cwd=REPO, capture_output=True, text=True,
                          timeout=850, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    figures: dict[str, float] = json.loads(done.stdout)
    print(json.dumps(figures))
    return figures


def test_evicted_voices_give_their_memory_back(tmp_path: Path) -> None:
    """Target: RSS after 20 evictions within +15 % of the two-voice steady state."""
    figures = _probe("churn", tmp_path)
    assert figures["resident_voices"] == 2
    steady = figures["two_voices"]
    assert figures["eviction_20"] <= steady * 1.15, figures


def test_a_long_text_does_not_raise_memory_for_good(tmp_path: Path) -> None:
    """Short sentences after long ones run at the RSS of short sentences (+15 %)."""
    figures = _probe("long", tmp_path)
    assert figures["short_again"] <= figures["short_sentences"] * 1.15, figures
