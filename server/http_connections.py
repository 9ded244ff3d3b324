"""The HTTP door's connection cap (:mod:`chorus.server.connections`) on aiohttp.

aiohttp has no cap of its own on open connections, and its keep-alive timer only frees
a connection after it has sat idle for the whole timeout. The listener therefore gets
its protocols from :meth:`HttpConnections.protocol`: each aiohttp
:class:`~aiohttp.web.RequestHandler` is wrapped in a protocol that sees it open and
close (an exact count), and a middleware marks the requests in progress. At the cap
the longest-idle connection (a keep-alive connection between requests, one still
sending its headers, one that never sent anything) is closed the way aiohttp's own
keep-alive timer closes it; when all are busy the newcomer reads a 503 and is closed
without ever reaching aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

from .connections import ConnectionCap
from .metrics import Metrics

__all__ = ["HttpConnections"]

_LOGGER = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REFUSAL_WAIT = 1.0
"""Seconds a refused client gets to send its request head before the 503 goes anyway."""


class _Counted(asyncio.Protocol):
    """An aiohttp request handler as the cap counts it: every callback is passed on."""

    def __init__(self, handler: web.RequestHandler, owner: HttpConnections) -> None:
        self.handler = handler
        self._owner = owner
        self.request: web.Request | None = None
        """The request being handled, if any (aiohttp handles one at a time)."""
        self.last_active = asyncio.get_running_loop().time()
        self._made = False
        self._evicted = False
        """Chosen to make room before its transport reached it (a burst of accepts)."""
        self._lost = False

    def idle_since(self) -> float | None:
        """A request still waiting for its body costs nothing yet: it counts as idle
        from its start, so slow bodies cannot hold every slot either."""
        request = self.request
        if request is None:
            return self.last_active
        if request.body_exists and not request.content.is_eof():
            return self.last_active
        return None

    def closed(self) -> bool:
        return self._lost

    def close_idle(self) -> None:
        if self._made:
            self.handler.force_close()  # what aiohttp's keep-alive timer does on expiry
        else:
            self._evicted = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._evicted:
            transport.close()  # aiohttp never sees it
            return
        self._made = True
        self.handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._owner.forget(self)
        if self._made:
            self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        self.handler.eof_received()
        return None

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class _Refusal(asyncio.Protocol):
    """Reads the request head (briefly), answers 503 ``busy`` and closes.

    Answering after the head, then half-closing and reading what is left, keeps the
    kernel from resetting the connection before the client has read the answer.
    """

    def __init__(self, limit: int) -> None:
        body = json.dumps({"error": {
            "code": "busy",
            "message": f"all {limit} connections are busy (the limit); retry shortly"}})
        self._answer = ("HTTP/1.1 503 Service Unavailable\r\n"
                        "Content-Type: application/json; charset=utf-8\r\n"
                        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\n"
                        f"Connection: close\r\n\r\n{body}").encode()
        self._head = b""
        self._answered = False
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(_REFUSAL_WAIT, self._answer_now)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return  # the rest of a body: read and dropped
        self._head = (self._head + data)[-65536:]
        if b"\r\n\r\n" in self._head:
            self._answer_now()

    def eof_received(self) -> bool | None:
        self._answer_now()
        if self._transport is not None:
            self._transport.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def _answer_now(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._answered:  # the second timer: the client kept its half open
            transport.close()
            return
        self._answered = True
        transport.write(self._answer)
        if transport.can_write_eof():
            transport.write_eof()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(_REFUSAL_WAIT, self._answer_now)


class HttpConnections:
    """Counts the HTTP door's connections and enforces ``--max-http-connections``
    (``door`` names another aiohttp door counted the same way, such as the metrics one)."""

    def __init__(self, limit: int, metrics: Metrics, door: str = "http") -> None:
        self.cap = ConnectionCap(door, limit, metrics)
        self.server: web.Server | None = None
        """aiohttp's low-level server, set once the app runner is set up."""
        self._by_handler: dict[web.RequestHandler, _Counted] = {}

    def protocol(self) -> asyncio.Protocol:
        """The listener's protocol factory: a counted aiohttp handler, or a refusal."""
        if self.server is None:
            raise RuntimeError("HTTP connections accepted before the app runner was set up")
        if not self.cap.make_room():
            return _Refusal(self.cap.limit)
        counted = _Counted(self.server(), self)
        self.cap.add(counted)
        self._by_handler[counted.handler] = counted
        return counted

    def forget(self, counted: _Counted) -> None:
        self.cap.discard(counted)
        self._by_handler.pop(counted.handler, None)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the request's connection busy while the request is handled.

        A connection closed while its request body was still arriving (closed to make
        room, or by the client) ends that request quietly: there is no one to answer,
        and aiohttp would log the lost body as a server error with a traceback.
        """
        counted = self._by_handler.get(request.protocol)
        if counted is None:
            return await handler(request)
        counted.request = request
        try:
            return await handler(request)
        except ConnectionResetError:
            if request.transport is not None:
                raise
            _LOGGER.debug("HTTP connection closed before its request body arrived")
            return web.Response(status=408, text="connection closed before the request "
                                "body arrived")
        finally:
            counted.request = None
            counted.last_active = asyncio.get_running_loop().time()
