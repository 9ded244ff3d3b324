"""The XDG cache home, the one base of every cache Chorus keeps on disk.

The server's audio and graph caches and the voice catalog live under it; computing it in
one place keeps them under the same root when ``XDG_CACHE_HOME`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_home"]


def cache_home() -> Path:
    """``$XDG_CACHE_HOME``, else ``~/.cache`` (XDG's default).

    Raises :class:`RuntimeError` (or :class:`KeyError`) when neither is set and the user
    has no home directory, which callers turn into their own clear error.
    """
    base = os.environ.get("XDG_CACHE_HOME")
    return Path(base) if base else Path.home() / ".cache"
