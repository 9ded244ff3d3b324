"""Bounded reading of Wyoming events."""

from __future__ import annotations

import asyncio
import json

import pytest

from chorus.server.wyoming_protocol import MAX_LINE_BYTES, ProtocolError, read_event


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_reads_header_data_and_payload() -> None:
    data = json.dumps({"text": "hi"}).encode()
    header = {"type": "synthesize", "data": {"a": 1}, "data_length": len(data),
              "payload_length": 3}
    event = await read_event(_reader(json.dumps(header).encode() + b"\n" + data + b"abc"))
    assert event is not None
    assert event.type == "synthesize"
    assert event.data == {"a": 1, "text": "hi"}
    assert event.payload == b"abc"


async def test_clean_end_of_stream() -> None:
    assert await read_event(_reader(b"")) is None


@pytest.mark.parametrize("raw", [
    b"garbage\n",
    b'"a string"\n',
    b'{"type": 5}\n',
    b'{"type": "x", "data": [1]}\n',
    b'{"type": "x", "data_length": 2000000}\n',
    b'{"type": "x", "payload_length": true}\n',
    b'{"type": "x", "payload_length": 10}\nshort',
    b'{"type": "x"',
    b"y" * (MAX_LINE_BYTES + 10) + b"\n",
    b'{"type": "ping", "data": {"text": "\xed\xa0\x80"}}\n',  # a raw lone surrogate
    b'{"type": "ping", "data": {"text": "\xff"}}\n',
])
async def test_malformed_input_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        await read_event(_reader(raw))
