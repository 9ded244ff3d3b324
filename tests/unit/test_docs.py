"""Generated documentation stays in step with its sources."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_the_crd_reference_is_generated_from_the_current_crds() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "crd-reference"),
                             "--check"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
