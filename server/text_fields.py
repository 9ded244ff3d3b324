"""How a request says its text is read: the front end's switches, as both doors take them.

An HTTP body and a Wyoming ``synthesize`` / ``synthesize-start`` event carry the same
optional fields (``text_format``, ``markdown``, ``cleanup``, ``normalize``, ``emoji``,
``code_blocks``); an absent field keeps the server's setting. Read in one place so the
two doors accept exactly the same values and refuse the others with the same message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import BadRequest
from .text import CodeMode, EmojiMode, TextFormat, TextRequest

__all__ = ["TEXT_FIELDS", "choice", "text_request"]

TEXT_FIELDS = frozenset({"text_format", "markdown", "cleanup", "normalize", "emoji",
                         "code_blocks"})


def choice(data: Mapping[str, Any], key: str, choices: tuple[str, ...] | list[str],
           default: str) -> str:
    """``data[key]``, one of ``choices`` in any case; ``default`` when absent."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or value.lower() not in choices:
        raise BadRequest(f"{key}: must be one of {', '.join(choices)}", param=key)
    return value.lower()


def _switch(data: Mapping[str, Any], key: str) -> bool | None:
    value = data.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{key}: must be true or false", param=key)
    return value


def text_request(data: Mapping[str, Any]) -> TextRequest:
    """The front-end fields of a request; absent ones keep the server's settings."""
    emoji = data.get("emoji")
    code = data.get("code_blocks")
    return TextRequest(
        format=TextFormat(choice(data, "text_format", tuple(f.value for f in TextFormat),
                                 TextFormat.AUTO.value)),
        markdown=_switch(data, "markdown"), cleanup=_switch(data, "cleanup"),
        normalize=_switch(data, "normalize"),
        emoji=None if emoji is None else EmojiMode(
            choice(data, "emoji", tuple(m.value for m in EmojiMode), "")),
        code=None if code is None else CodeMode(
            choice(data, "code_blocks", tuple(m.value for m in CodeMode), "")))
