"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CHORUS_* variable of the developer's shell may leak into option resolution."""
    for key in list(os.environ):
        if key.startswith("CHORUS_"):
            monkeypatch.delenv(key)
