"""``chorus voices catalog refresh``: a newer voice catalog from the hub, or none at all.

The hub's ``voices.json`` comes through the same client and checks as voice files
(:func:`.hub.fetch_hub_file`: ``HF_ENDPOINT``/``--hf-endpoint``, the hub token,
``--timeout``, verified against the hub's ETag, pinned to the commit a branch resolved
to), goes through the same converter as the bundled snapshot, and replaces the cached
catalog atomically. Any failure (network, hash, not JSON, no usable voice, disk) leaves
the previous catalog file exactly as it was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from .catalog import HUB_INDEX, Catalog, CatalogError, from_hub_voices_json
from .errors import VoiceInstallError
from .install import StagedFile, discard
from .sources import FetchSettings

__all__ = ["refresh_catalog"]

_LOGGER = logging.getLogger(__name__)


def _download(repo: str, revision: str, dest: Path, settings: FetchSettings, retries: int,
              backoff_s: float, sleep: Callable[[float], None]) -> tuple[StagedFile, str]:
    """The hub index staged in ``dest``, with bounded retries for faults of the moment."""
    from .hub import fetch_hub_file  # brings huggingface_hub

    delay = backoff_s
    attempts = 0
    while True:
        attempts += 1
        try:
            return fetch_hub_file(repo, HUB_INDEX, revision, dest, settings)
        except VoiceInstallError as err:
            if not err.transient or attempts > retries:
                raise CatalogError(f"cannot download {repo} {HUB_INDEX}: {err.message}") from err
            _LOGGER.warning("catalog refresh: attempt %d failed: %s", attempts, err.message)
        sleep(delay)
        delay *= 2


def refresh_catalog(target: Path, repo: str, revision: str, settings: FetchSettings, *,
                    retries: int = 0, backoff_s: float = 2.0,
                    sleep: Callable[[float], None] = time.sleep) -> Catalog:
    """Download ``repo``'s voice index at ``revision``, convert it, write it to ``target``.

    Raises :class:`CatalogError` with a message for people; ``target`` is then untouched.
    """
    from huggingface_hub import hf_hub_url

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CatalogError(f"cannot create {target.parent}: {err.strerror or err}") from err
    staged, commit = _download(repo, revision, target.parent, settings, retries, backoff_s,
                               sleep)
    where = f"{repo} {HUB_INDEX} at {commit}"
    try:
        data = json.loads(staged.path.read_bytes())
    except (OSError, ValueError) as err:
        raise CatalogError(f"{where}: not a readable JSON document: {err}") from err
    finally:
        discard(staged)
    try:
        catalog = from_hub_voices_json(
            data, repo=repo, revision=commit,
            origin=hf_hub_url(repo, HUB_INDEX, revision=commit, endpoint=settings.hf_endpoint))
    except CatalogError as err:
        raise CatalogError(f"{where}: {err}") from err
    try:
        catalog.save(target)
    except OSError as err:
        raise CatalogError(f"cannot write {target}: {err.strerror or err}") from err
    return dataclasses.replace(catalog, location=str(target))
