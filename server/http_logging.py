"""aiohttp's protocol log, with a malformed request taken for what it is: the client's fault.

aiohttp answers a request it cannot parse (a bad chunk size, an invalid header, a request
line too long) with a 400 of its own, and then logs it as an ERROR with a traceback,
as if the server had failed. Any client can send such bytes, so the log would fill with
tracebacks that need no one's attention. Handed to aiohttp as its protocol logger, this
adapter turns those into one INFO line saying why; everything else passes unchanged.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["ProtocolLog"]

_MAX_REASON = 200
"""The reason quotes the offending bytes, up to a whole request line: enough to see why."""


class ProtocolLog(logging.LoggerAdapter[logging.Logger]):
    """The logger aiohttp's request handlers write to."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def exception(self, msg: object, *args: object, exc_info: Any = True,
                  **kwargs: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(error, HttpProcessingError):
            reason = " ".join(str(error.message).split())[:_MAX_REASON]
            said = str(msg) % args if args else str(msg)  # the reason may hold a '%'
            self.info("%s: answered %s, %s", said, error.code or 400, reason)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)
