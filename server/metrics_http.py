"""The metrics door: ``/metrics`` alone, without the API key, on a port of its own.

Prometheus' annotation-based discovery (``prometheus.io/scrape``) and many scrapers
cannot send a bearer token, while the HTTP API's key must keep guarding synthesis and
the listings. ``--metrics-port`` therefore opens a second aiohttp listener, on the same
event loop and the same :class:`~chorus.server.metrics.Metrics`, that answers the scrape
and nothing else (every other path is a 404). It can be reached by the monitoring network
without reaching the API, and the API's ``/metrics`` stays behind the key.

The door is unauthenticated, so it is bounded like the others: a small connection cap
(:class:`~chorus.server.http_connections.HttpConnections`, door ``metrics``) and the HTTP
keep-alive timeout, so a flood of idle sockets cannot take file descriptors the speech
doors need.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .connections import LISTEN_BACKLOG, MAX_METRICS_CONNECTIONS
from .http_connections import HttpConnections
from .http_logging import ProtocolLog
from .metrics import CONTENT_TYPE, Metrics

__all__ = ["MAX_METRICS_CONNECTIONS", "MetricsDoor"]

class MetricsDoor:
    """A listener serving only ``GET /metrics`` (and ``HEAD``), with no key."""

    def __init__(self, metrics: Metrics, *, keepalive_timeout: float = 15.0) -> None:
        self.metrics = metrics
        self.connections = HttpConnections(MAX_METRICS_CONNECTIONS, metrics, door="metrics")
        app = web.Application(middlewares=[self.connections.middleware])
        app.router.add_get("/metrics", self._scrape)
        self._runner = web.AppRunner(app, keepalive_timeout=keepalive_timeout,
                                     handler_cancellation=True, access_log=None,
                                     logger=ProtocolLog(logging.getLogger("aiohttp.server")))
        self._listener: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (0 picks a free port; see :attr:`port`)."""
        await self._runner.setup()
        self.connections.server = self._runner.server
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                self.connections.protocol, host, port, reuse_address=True,
                backlog=LISTEN_BACKLOG)
        except OSError as err:
            await self._runner.cleanup()
            raise OSError(err.errno, f"--metrics-port: cannot listen on {host}:{port}: "
                          f"{err.strerror or err}") from err

    @property
    def port(self) -> int | None:
        """The port listened on (the one chosen when asked for 0), or ``None``."""
        if self._listener is None or not self._listener.sockets:
            return None
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner.server is not None:
            await self._runner.cleanup()

    async def _scrape(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
