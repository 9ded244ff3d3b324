"""What LLM text holds that a voice should not read as written: emoji, web and mail
addresses, runs of punctuation and leftover markup characters.

Each rewrite touches only what its pattern finds, so ordinary sentences pass unchanged.
The ``emoji`` library is imported when a text first holds something that may be one
(see :func:`~.frontend.warm_libraries`).
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache
from typing import Any

__all__ = ["EmojiMode", "clean"]


class EmojiMode(StrEnum):
    """What happens to emoji: a voice reads them as nothing or as noise."""

    DROP = "drop"
    DESCRIBE = "describe"
    """Their name in the text's language when the ``emoji`` library has it ("thumbs up")."""
    KEEP = "keep"


# A scheme or "www." up to whitespace or a closing bracket; trailing punctuation belongs
# to the sentence, not the address.
_URL = re.compile(r"(?<![\w@])(?:(?:https?|ftp)://|www\.)[^\s<>\"'()\[\]{}]+",
                  re.IGNORECASE)
_TRAILING = ".,;:!?"
_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-]+)@([\w-]+(?:\.[\w-]+)+)(?!\w)")
_REPEATED = [
    (re.compile(r"[!?]*\?[!?]*\?[!?]*|[!?]*\?!+[!?]*|[!?]*!\?[!?]*"), "?"),
    (re.compile(r"!{2,}"), "!"),
    (re.compile(r"\.{4,}"), "..."),
    (re.compile(r"…{2,}"), "…"),
    (re.compile(r"([,;:])\1+"), r"\1"),
    # separator lines and markup the parser left (a lone "***", "___", "~~~", "####")
    (re.compile(r"(?<!\S)([-=_*#~])\1{2,}(?!\S)|\*{2,}|_{2,}|~{2,}|#{2,}"), ""),
]
_ANY_REPEATED = re.compile(r"[!?][!?]|\.{4}|……|([,;:])\1|([-=_*#~])\2")
_SPACES = re.compile(r"[ \t]{2,}")
# Every emoji has a character in one of these blocks (or is (c), (r) or a keycap).
_MAYBE_EMOJI = re.compile("[\u00a9\u00ae\u203c-\u3299\ufe0f\U0001f000-\U0001faff]")
_SPACE_BEFORE_PUNCTUATION = re.compile(r" +([!?.,;:])")


def clean(text: str, *, emoji_mode: EmojiMode = EmojiMode.DESCRIBE,
          language: str | None = None) -> str:
    """``text`` as a voice should read it; unchanged when there is nothing to clean."""
    before = text
    if "://" in text or "www." in text.lower():
        text = _URL.sub(_url, text)
    if "@" in text:
        text = _EMAIL.sub(lambda m: f"{m.group(1)} @ {m.group(2)}", text)
    if emoji_mode is not EmojiMode.KEEP:
        text = _emoji(text, emoji_mode, language)
    if _ANY_REPEATED.search(text):
        for pattern, replacement in _REPEATED:
            text = pattern.sub(replacement, text)
    if text != before:
        text = _SPACES.sub(" ", text)
    return text


def _url(match: re.Match[str]) -> str:
    """An address read as its site ("example.com"): the path and query are noise when
    heard; the trailing punctuation stays with the sentence."""
    address = match.group(0)
    tail = ""
    while address and address[-1] in _TRAILING:
        tail = address[-1] + tail
        address = address[:-1]
    host = re.sub(r"^(?:(?:https?|ftp)://)?(?:www\.)?", "", address, flags=re.IGNORECASE)
    host = re.split(r"[/?#]", host, maxsplit=1)[0].split("@")[-1].split(":")[0]
    return host + tail


def _emoji(text: str, mode: EmojiMode, language: str | None) -> str:
    if not _MAYBE_EMOJI.search(text):
        return text  # the library's own scan costs far more than this one
    import emoji

    if mode is EmojiMode.DROP:
        return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", str(emoji.replace_emoji(text, replace="")))
    lang = (language or "en").replace("-", "_").split("_")[0].lower()
    if not _load_emoji_language(lang):
        return str(emoji.replace_emoji(text, replace=""))

    def describe(chars: str, data: dict[str, Any]) -> str:
        name = data.get(lang) or ""  # no description in this language: dropped
        return " " + str(name).strip(":").replace("_", " ") + " "

    described = str(emoji.replace_emoji(text, replace=describe))
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", described)


@lru_cache(maxsize=32)
def _load_emoji_language(lang: str) -> bool:
    """The library reads each language's names on first use; False: it has none."""
    if lang == "en":
        return True
    import emoji

    try:
        emoji.config.load_language(lang)
    except NotImplementedError:
        return False
    return True
