"""Sizes as people read them, the same in a TTSVoice's status and a voice manager's log."""

from __future__ import annotations

__all__ = ["human_size"]


def human_size(size: int) -> str:
    """Decimal megabytes like the hub lists them (``63.2 MB``)."""
    if size < 1_000_000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"
