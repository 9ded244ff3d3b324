"""The cap on open connections of a front door, and who makes room when it is reached.

Refusing every newcomer once the cap is full lets a flood of clients that connect and
then send nothing (or send a byte now and then) lock everyone else out until their idle
timeouts run out. So at the cap the connection that has been idle longest (no request
in progress or queued) is closed to admit the new one; only when every open connection
is busy is the newcomer refused (Wyoming ``busy``, HTTP 503). The newest arrival always
gets its turn, and a flood of idle connections costs real clients nothing but the
connections the flood itself opened.
"""

from __future__ import annotations

import logging
import resource
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # a door opened before the metrics (early_door.py) needs the backlog only
    from .metrics import Metrics

__all__ = ["FD_RESERVE", "LISTEN_BACKLOG", "MAX_METRICS_CONNECTIONS", "Connection", "ConnectionCap",
           "raise_open_file_limit"]

_LOGGER = logging.getLogger(__name__)

FD_RESERVE = 128
"""Descriptors kept for everything but client connections: listeners, voice and cache
files, onnxruntime's threads, log files, the event loop's own."""

MAX_METRICS_CONNECTIONS = 16
"""Open connections to the metrics door: a few scrapers, each with one keep-alive socket."""

LISTEN_BACKLOG = 1024
"""Connections the kernel queues for a door's listener before they are accepted.
asyncio's default of 100 overflows in a burst, and a dropped connection attempt is
retried after a second or more: a newcomer arriving with a flood would wait that long."""


class Connection(Protocol):
    """A connection as the cap sees it."""

    def idle_since(self) -> float | None:
        """Loop time since which it has had nothing in progress; ``None`` while busy."""

    def closed(self) -> bool:
        """It has ended (it no longer counts)."""

    def close_idle(self) -> None:
        """End it now to make room; it has nothing in progress."""


class ConnectionCap:
    """At most ``limit`` open connections on one door; see the module docstring."""

    def __init__(self, door: str, limit: int, metrics: Metrics) -> None:
        self.door = door
        self.limit = limit
        self._metrics = metrics
        self._open: set[Connection] = set()
        metrics.watch_connections(door, self.count)

    def count(self) -> int:
        """Open connections now."""
        self._prune()
        return len(self._open)

    def make_room(self) -> bool:
        """Room for one more: at the cap, close the longest-idle connection.

        ``False`` when every open connection is busy; the caller refuses the newcomer.
        """
        if len(self._open) < self.limit:
            return True
        self._prune()
        while len(self._open) >= self.limit:
            idle = [(since, id(conn), conn) for conn in self._open
                    if (since := conn.idle_since()) is not None]
            if not idle:
                self._metrics.refused.labels(self.door).inc()
                _LOGGER.warning("Refusing a %s connection: all %d open connections are "
                                "busy", self.door, len(self._open))
                return False
            _, _, oldest = min(idle, key=lambda item: item[:2])
            self._open.discard(oldest)
            oldest.close_idle()
            self._metrics.evicted.labels(self.door).inc()
            _LOGGER.debug("Closed the longest-idle %s connection to admit a new one "
                          "(limit %d)", self.door, self.limit)
        return True

    def add(self, conn: Connection) -> None:
        self._open.add(conn)

    def discard(self, conn: Connection) -> None:
        self._open.discard(conn)

    def _prune(self) -> None:
        self._open = {conn for conn in self._open if not conn.closed()}


def raise_open_file_limit(connections: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; warn if the caps do not fit.

    Every open connection is a descriptor; a process that runs out of them fails
    ``accept`` (the listener stops serving anyone) and file opens alike. Returns the soft
    limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard
        if hard == resource.RLIM_INFINITY:
            try:
                with open("/proc/sys/fs/nr_open") as nr_open:
                    target = int(nr_open.read())
            except (OSError, ValueError):
                target = 1 << 20
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (OSError, ValueError) as err:
                _LOGGER.warning("Could not raise the open-file limit from %d to %d: %s",
                                soft, target, err)
            else:
                _LOGGER.info("Raised the open-file limit from %d to %d", soft, target)
                soft = target
    needed = connections + FD_RESERVE
    if needed > soft:
        _LOGGER.warning(
            "The open-file limit (%d) cannot hold the connection caps: %d connections "
            "plus %d for the server itself; lower --max-connections or "
            "--max-http-connections, or raise the limit (ulimit -n)",
            soft, connections, FD_RESERVE)
    return soft
