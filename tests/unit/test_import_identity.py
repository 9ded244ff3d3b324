"""Each component module has one identity under test, ``chorus.<folder>.<module>``."""

from __future__ import annotations

import importlib
import sys

import pytest

from chorus.server.errors import ChorusError
from tests.conftest import COMPONENT_FOLDERS


@pytest.mark.parametrize("folder", COMPONENT_FOLDERS)
def test_a_bare_folder_name_does_not_import(folder: str) -> None:
    with pytest.raises(ImportError, match=f"import chorus.{folder}, not the bare folder"):
        importlib.import_module(folder)
    assert folder not in sys.modules


def test_the_stdlib_operator_is_the_operator() -> None:
    """The namespace portion ``operator/`` never shadows the standard library."""
    import operator

    assert operator.add(2, 3) == 5
    assert not hasattr(operator, "__path__")


def test_the_chorus_name_imports() -> None:
    assert importlib.import_module("chorus.server.errors").ChorusError is ChorusError
