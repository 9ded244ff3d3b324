"""How far text may run ahead of the speech: the one gate behind streaming backpressure.

A stream has no total length, so what bounds its memory is the text accepted but not yet
spoken. Two places hold such text (the connection's hand-over to its response, and the
utterance's sentences on their way to the scheduler); both count it here, and the
connection's reader waits on :meth:`TextBudget.room` before it reads more, which leaves
the client to TCP backpressure instead of a growing buffer.
"""

from __future__ import annotations

import asyncio

__all__ = ["TextBudget"]


class TextBudget:
    """Characters held against ``limit``; :meth:`room` waits while they reach it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._room = asyncio.Event()
        self._room.set()
        self._released = False

    def hold(self, chars: int) -> None:
        self.held += chars
        if self.held >= self.limit and not self._released:
            self._room.clear()

    def free(self, chars: int) -> None:
        self.held -= chars
        if self.held < self.limit:
            self._room.set()

    def release(self) -> None:
        """Nothing held will be freed any more (the consumer is gone): never wait again,
        or a reader would wait for good on text nobody takes."""
        self._released = True
        self._room.set()

    async def room(self) -> None:
        await self._room.wait()
