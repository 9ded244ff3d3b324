"""Download progress in the log, for the init container and the sidecar.

In a pod there is no terminal and so no progress bar: the log is all a user sees while a
63 MB voice arrives over a slow link. Each file says when it starts (with its size when the
source tells it), how far it has come every ``interval`` seconds, and when it is done,
with the average rate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from chorus.common.sizes import human_size

from .sources import ProgressFactory

__all__ = ["LoggedProgress", "logged_progress"]

_LOGGER = logging.getLogger(__name__)


class LoggedProgress:
    """A :class:`~chorus.voice_manager.install.Progress` that writes INFO lines."""

    def __init__(self, label: str, total: int | None, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._interval = interval
        self._clock = clock
        self._start = self._last = clock()
        size = f" ({human_size(total)})" if total is not None else ""
        _LOGGER.info("downloading %s%s", label, size)

    def _so_far(self) -> str:
        text = human_size(self.done)
        if self.total:
            text += f" of {human_size(self.total)} ({100 * self.done // self.total} %)"
        return text

    def _rate(self, now: float) -> str:
        elapsed = now - self._start
        return f"{human_size(round(self.done / elapsed))}/s" if elapsed > 0 else "-"

    def update(self, n: int) -> None:
        self.done += n
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            _LOGGER.info("downloading %s: %s, %s", self.label, self._so_far(), self._rate(now))

    def close(self) -> None:
        now = self._clock()
        _LOGGER.info("%s: %s transferred in %.1f s, %s", self.label, human_size(self.done),
                 now - self._start, self._rate(now))


def logged_progress(interval: float) -> ProgressFactory:
    """A progress factory for :class:`~chorus.voice_manager.sources.FetchSettings`."""
    def factory(label: str, total: int | None) -> LoggedProgress:
        return LoggedProgress(label, total, interval)

    return factory
