"""Reading Wyoming events with limits, and listening on a Wyoming URI.

``wyoming.event.async_read_event`` trusts the peer: it reads whatever
``data_length``/``payload_length`` a header claims and raises on a header that is not
a JSON object. A speech server on a home network must not let one bad client hold
gigabytes or kill its handler, so events are read here with bounds and every
malformation becomes :class:`ProtocolError`, which closes that one connection.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from wyoming.event import Event

from .connections import LISTEN_BACKLOG

__all__ = ["MAX_DATA_BYTES", "MAX_LINE_BYTES", "MAX_PAYLOAD_BYTES", "ProtocolError",
           "listen", "read_event"]

MAX_LINE_BYTES = 64 * 1024
MAX_DATA_BYTES = 1024 * 1024
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024

Callback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ProtocolError(Exception):
    """The peer sent something that is not a Wyoming event within our limits."""


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key) or 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{key} must be a non-negative integer")
    if value > limit:
        raise ProtocolError(f"{key} {value} exceeds the limit of {limit} bytes")
    return value


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A ``\\uD800``-``\\uDFFF`` escape: JSON allows it unpaired, UTF-8 cannot carry that."""


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        # Decoded here, strictly: json.loads(bytes) lets a raw lone surrogate through
        # ("surrogatepass"), and the first answer or log line that carries it fails.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ProtocolError(f"{what} is not UTF-8") from err
    try:
        value = json.loads(text)
    except ValueError as err:
        raise ProtocolError(f"{what} is not valid JSON") from err
    except RecursionError as err:
        raise ProtocolError(f"{what} is nested too deeply") from err
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    if _SURROGATE_ESCAPE.search(raw):
        _check_encodable(value, what)
    return value


def _check_encodable(value: dict[str, Any], what: str) -> None:
    """A lone surrogate decodes fine but breaks every answer that echoes or logs it."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        raise ProtocolError(f"{what} contains an unpaired UTF-16 surrogate") from err
    except RecursionError as err:
        raise ProtocolError(f"{what} is nested too deeply") from err


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """Next event, ``None`` at a clean end of stream, :class:`ProtocolError` otherwise."""
    try:
        line = await reader.readline()
    except (ValueError, asyncio.LimitOverrunError) as err:
        raise ProtocolError(f"event header longer than {MAX_LINE_BYTES} bytes") from err
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise ProtocolError("connection closed in the middle of an event header")
    header = _json_object(line, "event header")
    event_type = header.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise ProtocolError("event header has no type")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError("event data is not a JSON object")
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    try:
        if data_length:
            data = {**data, **_json_object(await reader.readexactly(data_length), "event data")}
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError as err:
        raise ProtocolError("connection closed in the middle of an event") from err
    return Event(type=event_type, data=data, payload=payload)


def _remove_stale_socket(path: Path) -> None:
    """A socket left by a previous run blocks binding; a regular file is never removed."""
    if path.is_socket():
        path.unlink()


async def listen(uri: str, callback: Callback) -> asyncio.Server:
    """Start serving ``tcp://HOST:PORT`` or ``unix://PATH`` (returns once listening)."""
    parsed = urlparse(uri)
    if parsed.scheme == "tcp":
        if parsed.hostname is None or parsed.port is None:
            raise ValueError(f"{uri!r}: a tcp:// URI needs a host and a port")
        return await asyncio.start_server(callback, parsed.hostname, parsed.port,
                                          limit=MAX_LINE_BYTES, backlog=LISTEN_BACKLOG)
    if parsed.scheme == "unix":
        if not parsed.path:
            raise ValueError(f"{uri!r}: a unix:// URI needs a path")
        _remove_stale_socket(Path(parsed.path))
        return await asyncio.start_unix_server(callback, parsed.path, limit=MAX_LINE_BYTES,
                                               backlog=LISTEN_BACKLOG)
    raise ValueError(f"{uri!r}: only tcp:// and unix:// URIs are supported")
