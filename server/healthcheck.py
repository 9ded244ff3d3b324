"""A real Wyoming round trip for container health checks: describe, expect ``info``.

``python -m chorus.server.healthcheck [URI]`` exits 0 when the server answers within
five seconds, 1 otherwise. Without a URI it uses ``CHORUS_HEALTHCHECK_URI``, else the
``--wyoming-uri`` of the container's main process (PID 1), else ``CHORUS_WYOMING_URI``,
else ``tcp://127.0.0.1:10200``; a wildcard host (``0.0.0.0``) is probed on loopback.
It imports wyoming only, never the engine, so a probe costs milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from wyoming.client import AsyncClient, AsyncTcpClient, AsyncUnixClient
from wyoming.info import Describe, Info

__all__ = ["check", "main", "probe_uri"]


def probe_uri(environ: dict[str, str] | None = None,
              cmdline: Path = Path("/proc/1/cmdline")) -> str:
    """Where to probe, following the order in the module docstring."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get("CHORUS_HEALTHCHECK_URI"):
        return environ["CHORUS_HEALTHCHECK_URI"]
    try:
        argv = cmdline.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        argv = []
    for index, arg in enumerate(argv):
        if arg == "--wyoming-uri" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--wyoming-uri="):
            return arg.split("=", 1)[1]
    return environ.get("CHORUS_WYOMING_URI") or "tcp://127.0.0.1:10200"


def _client(uri: str) -> AsyncClient:
    parts = urlsplit(uri)
    if parts.scheme == "unix":
        return AsyncUnixClient(parts.path)
    host = parts.hostname if parts.hostname not in (None, "", "0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    return AsyncTcpClient(host or "127.0.0.1", parts.port or 10200)


async def check(uri: str, timeout: float = 5.0) -> bool:  # noqa: ASYNC109 - a probe's deadline
    """True when the server at ``uri`` answers a describe with an info event in time."""

    async def round_trip() -> bool:
        async with _client(uri) as client:
            await client.write_event(Describe().event())
            while (event := await client.read_event()) is not None:
                if Info.is_type(event.type):
                    return True
        return False

    return await asyncio.wait_for(round_trip(), timeout)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    uri = args[0] if args else probe_uri()
    try:
        healthy = asyncio.run(check(uri))
    except (OSError, TimeoutError, ValueError) as err:
        print(f"unhealthy: {uri}: {err!r}", file=sys.stderr)
        return 1
    if not healthy:
        print(f"unhealthy: {uri}: no info event", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
