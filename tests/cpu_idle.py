"""A server process's CPU time, read from ``/proc/PID/stat``, and waiting for it to rest.

Used by the tests that check a departed client costs nothing after it left: the server's
gauges may read 0 while model calls still run on its worker threads, so the CPU time
the kernel counts for the process is the witness.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

__all__ = ["cpu_seconds", "seconds_until_idle"]

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of all the process's threads so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _TICKS


async def seconds_until_idle(pid: int, within: float, window: float = 0.3,
                             busy_share: float = 0.1) -> float:
    """Seconds from now until the process uses under ``busy_share`` of a CPU over a
    whole ``window``; fails if it is still busy ``within + 10`` s from now."""
    started = time.monotonic()
    while True:
        begin, cpu = time.monotonic(), cpu_seconds(pid)
        await asyncio.sleep(window)
        used = cpu_seconds(pid) - cpu
        if used < busy_share * (time.monotonic() - begin):
            return begin - started
        assert begin - started < within + 10, "the server never went idle"
