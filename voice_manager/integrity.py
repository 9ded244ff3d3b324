"""Completeness checks for voice files that come without a hash to compare.

A download verified by sha256 needs nothing more. An unverified one (a URL source with
``allowUnverified``, a local folder without sha256) can only be judged by its length,
and a server that sends no ``Content-Length`` and closes early (an HTTP/1.0-style
body ends where the connection ends) delivers a shorter file that looks just as
finished. So before such files are installed they must at least be whole:

* the config must parse as a JSON object (a cut-off JSON document never does);
* the model must be a well-formed ONNX ``ModelProto`` at its top level: every field's
  key and length fit in the file, the last one ends exactly at its end, and
  ``ir_version``, ``graph`` and ``opset_import`` are there. A cut inside the graph,
  which is nearly all of a model's bytes, always fails this; only a cut that falls
  exactly between two top-level fields after the graph could pass, and then the
  model is still loadable.

This reads protobuf's wire format directly (varint keys, four wire types) rather than
bringing ``onnx`` into the voice manager's image for a structural walk of a few fields.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path

from .errors import VoiceInstallError

__all__ = ["check_config", "check_model"]

_IR_VERSION, _GRAPH, _OPSET_IMPORT = 1, 7, 8
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class _Truncated(ValueError):
    """The bytes end inside a field."""


def _varint(data: mmap.mmap | bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise _Truncated("a number runs past the end of the file")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("a number is longer than 10 bytes")


def _top_level_fields(data: mmap.mmap | bytes) -> set[int]:
    """Field numbers of a protobuf message that must fill ``data`` exactly."""
    seen: set[int] = set()
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == _VARINT:
            _, pos = _varint(data, pos)
        elif wire == _FIXED64:
            pos += 8
        elif wire == _FIXED32:
            pos += 4
        elif wire == _LENGTH_DELIMITED:
            length, pos = _varint(data, pos)
            pos += length
        else:
            raise ValueError(f"wire type {wire} is not used by ONNX")
        if pos > len(data):
            raise _Truncated(f"field {number} runs {pos - len(data)} bytes past the end")
        seen.add(number)
    return seen


def check_model(path: Path, label: str) -> None:
    """Refuse a model file that is not a whole ONNX model (see module docstring)."""
    try:
        with path.open("rb") as f:
            if path.stat().st_size == 0:
                raise _Truncated("the file is empty")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                fields = _top_level_fields(data)
        missing = [name for number, name in ((_IR_VERSION, "ir_version"),
                                             (_GRAPH, "graph"),
                                             (_OPSET_IMPORT, "opset_import"))
                   if number not in fields]
        if missing:
            raise _Truncated(f"no {', '.join(missing)}")
    except _Truncated as err:
        raise VoiceInstallError(f"{label}: the download is incomplete (no hash to check, "
                                f"and it is not a whole ONNX model: {err})",
                                transient=True) from err
    except ValueError as err:
        raise VoiceInstallError(f"{label}: not an ONNX model: {err}") from err


def check_config(path: Path, label: str) -> None:
    """Refuse a config file that is not one whole JSON object."""
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise VoiceInstallError(f"{label}: the download is incomplete or not a voice config "
                                f"(no hash to check, and it is not whole JSON: {err})",
                                transient=True) from err
    if not isinstance(document, dict):
        raise VoiceInstallError(f"{label}: a voice config must be a JSON object")
