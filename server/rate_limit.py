"""Per-client concurrency limit for the HTTP door.

``--max-requests`` bounds the whole server; without a per-client bound one script
looping over ``/synthesize`` could take every slot and starve everybody else. Counting
requests *in progress* (not requests per minute) needs no tuning to the hardware: a
fast server lets a client go faster, and a client that waits for its answers is never
refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ClientLimiter", "TooManyRequests", "client_id"]


class TooManyRequests(Exception):
    """The client already has its allowance of requests in progress."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"this client already has {limit} request(s) in progress; "
                         "wait for one to finish")
        self.limit = limit


def client_id(address: str) -> str:
    """Who a request counts against: its client's address (see ``client_address``).

    Not the API key: there is one key, shared by everyone who holds it, so counting by
    key would make every caller one client.
    """
    return "addr:" + address


class ClientLimiter:
    """Counts requests in progress per client; :meth:`hold` refuses the N+1th."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._active: dict[str, int] = {}

    def active(self, client: str) -> int:
        return self._active.get(client, 0)

    @contextmanager
    def hold(self, client: str) -> Iterator[None]:
        """A slot for ``client`` for the ``with`` block; raises :class:`TooManyRequests`.

        Runs on the event loop only, so the check and the increment cannot interleave.
        """
        count = self._active.get(client, 0)
        if count >= self.limit:
            raise TooManyRequests(self.limit)
        self._active[client] = count + 1
        try:
            yield
        finally:
            left = self._active[client] - 1
            if left:
                self._active[client] = left
            else:
                del self._active[client]  # no entry per client ever seen: bounded memory
