"""The Wyoming door opened before the rest of the server is imported.

Home Assistant (and the start-up benchmark) first ask ``describe``. Answering it takes
the voice list, but the voice store reads voices through the engines, whose imports are
most of a start. When the last start with the same settings left a snapshot that is
still true (:mod:`.describe_snapshot`), the door opens at once and answers ``describe``
from it while the runtime is imported in a thread and built; any other event (and a
``describe`` that arrives once the runtime is there) is handed, with the connection,
to the runtime's own handler, which answers it as if the connection had been its own
from the start. A connection waits in here for no longer than the runtime takes to be
built: the runtime takes over every connection the moment it is ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from wyoming.event import Event, async_write_event

from . import describe_snapshot
from .connections import raise_open_file_limit
from .settings import ServerSettings
from .wyoming_protocol import listen, read_event

__all__ = ["DESCRIBE", "INFO", "EarlyDoor", "TakeOver"]

_LOGGER = logging.getLogger(__name__)

TakeOver = Callable[[asyncio.StreamReader, asyncio.StreamWriter,
                     "asyncio.Future[Event | None] | None"], Awaitable[None]]
"""The runtime's connection handler: the connection, and the read of its next event
already under way (``None``: none)."""

DESCRIBE = "describe"
INFO = "info"
"""Event types as wyoming.info names them (importing it costs ~10 ms of the start)."""


class EarlyDoor:
    """The Wyoming listener, answering ``describe`` from a snapshot until the runtime
    takes over."""

    def __init__(self, info: dict[str, Any], write_timeout: float = 30.0) -> None:
        self._info = info
        self._write_timeout = write_timeout
        """A client that reads nothing for this long is dropped (``--client-timeout``)."""
        self._take_over: TakeOver | None = None
        self._ready = asyncio.Event()
        self._waiting: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None

    @classmethod
    async def open(cls, settings: ServerSettings) -> EarlyDoor | None:
        """Listen on ``--wyoming-uri`` if a snapshot for these settings still holds;
        ``None`` (nothing opened) otherwise, or when voices are offered for download
        (their list comes from the voice manager, which is not read here)."""
        if settings.download_voices:
            return None
        info = describe_snapshot.load(settings)
        if info is None:
            return None
        door = cls(info, settings.client_timeout)
        raise_open_file_limit(settings.connection_caps)  # connections pile up here too
        door.server = await listen(settings.wyoming_uri, door._on_connection)
        _LOGGER.info("Wyoming on %s open; describe is answered from the last start's "
                     "voice list while the server starts", settings.wyoming_uri)
        return door

    def hand_over(self, take_over: TakeOver) -> asyncio.Server:
        """From now on every connection, waiting or new, is the runtime's; returns the
        listener, which the runtime closes when it stops."""
        if self.server is None:
            raise RuntimeError("the early door was never opened")
        self._take_over = take_over
        self._ready.set()
        return self.server

    async def close(self) -> None:
        """The runtime never took over (it failed to start, or a signal came first):
        close the listener and the connections still waiting."""
        if self._take_over is None and self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self._waiting):
            task.cancel()
        await asyncio.gather(*self._waiting, return_exceptions=True)

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        read: asyncio.Future[Event | None] | None = None
        if self._take_over is None:
            task = asyncio.current_task()
            if task is None:
                raise RuntimeError("connection callback outside a task")
            self._waiting.add(task)
            try:
                read = await self._answer_describes(reader, writer)
            except (ConnectionError, TimeoutError, asyncio.CancelledError):
                writer.close()  # a cancellation is the server stopping: the task ends here
                return
            finally:
                self._waiting.discard(task)
        if self._take_over is None:  # cannot happen: _answer_describes returns once set
            raise RuntimeError("the early door handed over a connection to nobody")
        await self._take_over(reader, writer, read)

    async def _answer_describes(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter,
                                ) -> asyncio.Future[Event | None]:
        """Answer ``describe`` events until another event comes (returned as a finished
        read) or the runtime is ready (the read still under way is returned)."""
        ready = asyncio.ensure_future(self._ready.wait())
        read: asyncio.Future[Event | None] | None = None
        try:
            while True:
                read = asyncio.ensure_future(read_event(reader))
                await asyncio.wait({read, ready}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    return read  # the runtime is there: it goes on with this read
                if (self._ready.is_set() or read.exception() is not None
                        or (event := read.result()) is None or event.type != DESCRIBE):
                    await ready
                    return read
                async with asyncio.timeout(self._write_timeout):
                    await async_write_event(Event(INFO, self._info), writer)
        except BaseException:
            if read is not None and not read.done():
                read.cancel()
                await asyncio.gather(read, return_exceptions=True)
            raise
        finally:
            if not ready.done():
                ready.cancel()
                await asyncio.gather(ready, return_exceptions=True)
