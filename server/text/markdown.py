"""LLM markdown as speakable text, from a stream of chunks, without waiting for its end.

The text is cut into pieces where markdown cannot join what comes before with what comes
after: before a line that starts a block (a heading, a list item, a fence, a quote, a
paragraph after a blank line), after a heading or a closing fence, and inside a paragraph
after a sentence end (before a capital letter) when no inline markup (emphasis, a code
span, a link) is open. Each piece is parsed with ``markdown-it-py`` on its own as soon
as it is complete.

Every cut is decided from the text alone, looking at most at the next line's first few
characters or the next word's first letter, never at where a chunk happened to end; the
whole text goes through the same cutter, so a chunked stream gives exactly what the
whole text gives.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING

from .segments import Pause, PauseKind, Segment, Speech

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

__all__ = ["CodeMode", "Leaf", "MarkdownOptions", "MarkdownStream", "Piece", "PieceCutter",
           "parser", "read_piece"]


class CodeMode(StrEnum):
    """What a code block becomes: nobody wants source code read aloud, but the listener
    may want to know that there was some."""

    SKIP = "skip"
    ANNOUNCE = "announce"
    READ = "read"


@dataclass(frozen=True)
class MarkdownOptions:
    code: CodeMode = CodeMode.ANNOUNCE
    code_notice: str = "Code omitted."
    """Said in place of a code block under :attr:`CodeMode.ANNOUNCE`."""
    max_piece_chars: int = 2_000
    """The most text held back waiting for a block to end (see
    :meth:`PieceCutter._cut_for_length`): a stream's reader waits while its text is
    ahead of the speech, so text held here for good would stall it."""


@dataclass(frozen=True)
class Piece:
    """Text the cutter let go of; ``continues`` when it starts inside a paragraph, at a
    sentence cut."""

    text: str
    continues: bool = False
    prefix: str = ""
    """What to parse it after, for the context it was cut from: the quote markers ("> ")
    of its line (the rest of a quoted sentence is still quoted), or the opening fence of
    a code block cut for length (the rest of the code is still code)."""
    in_code: bool = False
    """It starts inside a code block that an earlier piece began."""


# A line that starts a block of its own, at the left margin (what a paragraph cannot
# swallow), and what may still become one while the line is incomplete.
_STARTER = re.compile(r"#{1,6}(?:[ \t]|$)|[-+*][ \t]|\d{1,9}[.)][ \t]|`{3}|~{3}|>")
_STARTER_SO_FAR = re.compile(r"#{1,6}[ \t]|[-+*][ \t]|\d{1,9}[.)][ \t]|`{3}|~{3}|>")
_MAY_START = re.compile(r"#{1,6}|[-+*]|\d{1,9}[.)]?|`{1,2}|~{1,2}")
_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]|$)")
_FENCE = re.compile(r" *(`{3,}|~{3,})")
# Container markers that may open any line: quotes and list items, nested.
_MARKERS = re.compile(r"(?:[ \t]*(?:>|[-+*](?=[ \t])|\d{1,9}[.)](?=[ \t]))[ \t]*)*")
_QUOTES = re.compile(r"(?:[ \t]{0,3}>)+")
_SENTENCE_END = ".!?"
_RUNS = "*_~`"
_OPENERS = "*_[(\"'\u201c\u2018\u00ab"
_CLOSERS = "*_~)\"'\u201d\u2019\u00bb"
_NOTABLE = re.compile(r"[\n.!?`\[\]()*_~]")
_NO_CUT_FIRST = "#`~|< \t"
# Words like "Dr." or "St." end with a full stop but rarely a sentence.
_SHORT_TITLE = re.compile(r"(?:^|\W)(?:[A-Z][a-z]?|Mrs|Prof)$")


class PieceCutter:
    """Cuts markdown text, fed in chunks, into pieces that parse alone as they would in
    the whole; see the module docstring for where."""

    def __init__(self, max_chars: int = 2_000) -> None:
        self._max = max_chars
        self._buf = ""
        self._start = 0  # where the current piece starts
        self._pos = 0  # the next character to look at
        self._line = 0  # where the current line starts
        self._line_decided = False
        self._final = False
        self._fence: str | None = None
        self._prev_blank = False
        self._prev_quote = False
        self._line_quote = ""
        self._prefix = ""
        self._in_code = False
        self._prev_closes = False  # a heading or closing fence: the next line is a new block
        self._content = False  # the piece has a line with something in it
        self._continues = False  # the piece started at a sentence cut
        self._cuttable = True
        self._counts = {"`": 0, "[": 0, "]": 0, "(": 0, ")": 0, "*": 0, "_": 0, "~": 0}

    def feed(self, chunk: str) -> list[Piece]:
        if (self._line_decided and self._pos == len(self._buf)
                and len(self._buf) + len(chunk) < self._start + self._max
                and not _NOTABLE.search(chunk)):
            # Most chunks of a stream (a token or two of a word) decide nothing: what
            # the scan would do with them, without starting it.
            self._buf += chunk
            self._pos = len(self._buf)
            return []
        self._buf += chunk
        return list(self._run())

    def finish(self) -> list[Piece]:
        self._final = True
        pieces = list(self._run())
        rest = self._buf[self._start:]
        if rest.strip():
            pieces.append(Piece(rest, self._continues, self._prefix, self._in_code))
        return pieces

    # -- the scan ---------------------------------------------------------------------

    def _run(self) -> Iterator[Piece]:
        buf = self._buf
        while True:
            if not self._line_decided:
                split = self._decide_line()
                if split is None:
                    break
                self._line_decided = True
                if split and self._content:
                    yield self._cut_at(self._line, self._line, continues=False)
                self._begin_line()
            # Characters that neither end a line, a sentence nor count as markup change
            # nothing: skip them at regex speed, up to the longest a piece may grow.
            limit = self._start + self._max
            found = _NOTABLE.search(buf, self._pos, limit)
            self._pos = found.start() if found else min(len(buf), limit)
            if self._pos >= limit:
                yield self._cut_for_length()
                continue
            if self._pos >= len(buf):
                break
            ch = buf[self._pos]
            if ch == "\n":
                self._end_line(buf[self._line:self._pos])
                self._pos += 1
                self._line = self._pos
                self._line_decided = False
                continue
            if ch in _SENTENCE_END and self._cuttable and self._fence is None:
                rest = self._sentence_cut()
                if rest is None:
                    break  # the next characters decide
                if rest > 0:
                    end = rest
                    while buf[end - 1] in " \t":
                        end -= 1
                    yield self._cut_at(end, rest, continues=True)
                    self._pos = rest
                    continue
            if ch == "_" and self._pos + 1 >= len(buf) and not self._final:
                break  # whether it can be emphasis depends on the next character
            self._count(ch)
            self._pos += 1
        # Compact what has been handed out, so the buffer holds one piece at most.
        if self._start > 0:
            self._buf = self._buf[self._start:]
            self._pos -= self._start
            self._line -= self._start
            self._start = 0

    def _cut_for_length(self) -> Piece:
        """The piece has reached ``max_chars`` with no place markdown allows a cut: cut
        before the current line, or in it at its last space, so that text held back
        waiting for a block to end (a long code block, a line with no sentence end)
        stays bounded. The scan goes on from the cut, so where it falls depends on the
        text alone."""
        if self._line > self._start:
            piece = self._cut_at(self._line, self._line, continues=False)
            self._pos = self._line
            self._begin_line()
            return piece
        space = max(self._buf.rfind(" ", self._start + 1, self._pos),
                    self._buf.rfind("\t", self._start + 1, self._pos))
        end = space if space > self._start else self._pos
        rest = end + 1 if space > self._start else end
        piece = self._cut_at(end, rest, continues=True)
        self._pos = rest
        return piece

    def _cut_at(self, end: int, start: int, *, continues: bool) -> Piece:
        """Hand out the piece ending at ``end``; the next starts at ``start``, inside the
        same paragraph when ``continues``."""
        piece = Piece(self._buf[self._start:end], self._continues, self._prefix,
                      self._in_code)
        self._continues = continues
        self._in_code = self._fence is not None
        self._prefix = f"{self._fence}\n" if self._fence is not None \
            else self._line_quote if continues else ""
        self._start = start
        self._content = continues  # what follows a sentence cut starts with a letter
        self._cuttable = True
        self._counts = dict.fromkeys(self._counts, 0)
        if continues:
            self._line = start
        return piece

    def _decide_line(self) -> bool | None:
        """Whether a piece ends before the line at ``self._line``: None while its first
        characters do not tell yet."""
        newline = self._buf.find("\n", self._line)
        complete = newline >= 0 or self._final
        # The first characters tell (no block marker is longer than 12).
        end = newline if newline >= 0 else len(self._buf)
        line = self._buf[self._line:min(end, self._line + 16)]
        if self._fence is not None:
            return False
        if not line:
            return False if complete else None
        if line[0] in " \t":
            return False
        if self._prev_blank or self._prev_closes:
            return True
        starter = _STARTER if complete else _STARTER_SO_FAR
        if starter.match(line):
            return not (line[0] == ">" and self._prev_quote)
        if not complete and _MAY_START.fullmatch(line):
            return None
        return False

    def _begin_line(self) -> None:
        """A line starts: until a piece has a line with something in it, its first
        character says whether sentence cuts may happen in it at all (not in headings,
        code, tables or HTML)."""
        if not self._content:
            first = self._buf[self._line:self._line + 1]
            self._cuttable = bool(first) and first not in _NO_CUT_FIRST
        quotes = _QUOTES.match(self._buf, self._line)
        self._line_quote = "> " * quotes.group(0).count(">") if quotes else ""

    def _end_line(self, line: str) -> None:
        blank = not line.strip()
        fence = _FENCE.match(line)
        closes = False
        if self._fence is not None:
            if fence and fence.group(1)[0] == self._fence[0] \
                    and len(fence.group(1)) >= len(self._fence) and not line[fence.end():].strip():
                self._fence = None
                closes = True
        elif fence:
            self._fence = fence.group(1)
        if blank and self._content:
            self._cuttable = False  # a blank line inside a piece: indented continuation
        if not blank:
            self._content = True
        if "|" in line:
            self._cuttable = False
        self._prev_blank = blank
        self._prev_quote = bool(self._line_quote)  # from the line's start, before any cut in it
        self._prev_closes = closes or bool(_HEADING.match(line) and self._fence is None)

    def _sentence_cut(self) -> int | None:
        """At a sentence end: where the next piece starts (0: no cut here), or None when
        the characters after it are not there yet. Closing markup and quotes after the
        full stop ("**Done.** Next") stay with the sentence."""
        buf, at = self._buf, self._pos + 1
        while at < len(buf) and buf[at] in _CLOSERS:
            at += 1
        end = at
        while end < len(buf) and buf[end] in " \t":
            end += 1
        if end == len(buf):
            return 0 if self._final else None
        if end == at:
            return 0
        letter = end
        while letter < len(buf) and buf[letter] in _OPENERS:
            letter += 1
        if letter == len(buf):
            return 0 if self._final else None
        if not buf[letter].isupper():
            return 0
        if _SHORT_TITLE.search(buf[max(self._start, self._pos - 5):self._pos]) \
                or not self._balanced(buf[self._pos + 1:at]):
            return 0
        if "|" in buf[self._line:self._pos]:
            return 0
        # never inside the markers that open the line ("1. ", "> - ")
        markers = _MARKERS.match(buf, self._line)
        if markers and markers.end() > self._pos:
            return 0
        return end

    def _count(self, ch: str) -> None:
        prev = self._buf[self._pos - 1:self._pos] if self._pos > self._start else ""
        if ch in _RUNS and prev == ch:
            return  # "**" opens one span: delimiters count by run
        if ch == "_":
            nxt = self._buf[self._pos + 1:self._pos + 2]
            if prev.isalnum() and nxt.isalnum():
                return  # inside a word: snake_case, never emphasis
        if ch in self._counts:
            self._counts[ch] += 1

    def _balanced(self, closers: str) -> bool:
        """No emphasis, code span, link or parenthesis is open before the cut."""
        c = dict(self._counts)
        prev = "."
        for ch in closers:
            if ch in c and not (ch in _RUNS and ch == prev):
                c[ch] += 1
            prev = ch
        return (c["`"] % 2 == 0 and c["["] == c["]"] and c["("] == c[")"]
                and c["*"] % 2 == 0 and c["_"] % 2 == 0 and c["~"] % 2 == 0)


# -- rendering one piece --------------------------------------------------------------

ITEM, ROW, TEXT = "item", "row", "text"


@dataclass(frozen=True)
class Leaf:
    """A block's text: ``kind`` is ITEM (in a list), ROW (of a table) or TEXT."""

    kind: str
    text: str


@lru_cache(maxsize=1)
def parser() -> MarkdownIt:
    """CommonMark with GFM tables and strikethrough, as LLMs write. One per process:
    building it costs more than parsing a paragraph, and parsing leaves it unchanged.
    markdown-it is imported here, at the first Markdown text, not at every start."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def _inline_text(children: list[Token] | None) -> str:
    parts: list[str] = []
    for child in children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(_inline_text(child.children))
    return "".join(parts)


_TAG = re.compile(r"<[^>]*>")
# One line with no character markdown gives a meaning to, starting with a letter: a
# paragraph of exactly its text.
_INLINE_LINE = re.compile(r"(?:[*_]{1,2})?[^\W\d_][^\n|<]*\n?")
_PLAIN_LINE = re.compile(r"[^\W\d_][^\n*_`\[\]<>|#~&\\!]*\n?")
# A heading, a list item or a quote of one such line: the block parser would only take
# off its marker (and a heading's closing hashes, hence none allowed in it).
_LINE_END = r"[ \t]*(?:\n[ \t]*)*"
_HEADING_LINE = re.compile(r"#{1,6}[ \t]+((?:[*_]{1,2})?[^\W\d_][^\n|<#]*?)" + _LINE_END)
_ITEM_LINE = re.compile(r"(?:[-+*]|(\d{1,9})[.)]) {1,4}((?:[*_]{1,2})?[^\W\d_][^\n|<]*?)"
                        + _LINE_END)
_QUOTE_LINE = re.compile(r"(?:> ?)+((?:[*_]{1,2})?[^\W\d_][^\n|<]*?)" + _LINE_END)


def read_piece(md: MarkdownIt, text: str, options: MarkdownOptions, *,
               shortcuts: bool = True) -> list[Leaf]:
    """The blocks of one piece. ``shortcuts``: a one-line piece (a paragraph, a heading, a
    list item or a quote) skips the block parser (and one with no markup all of markdown-it),
    giving what the full parse gives."""
    if shortcuts and _PLAIN_LINE.fullmatch(text):
        return [Leaf(TEXT, text)]
    if shortcuts and _INLINE_LINE.fullmatch(text):
        return [Leaf(TEXT, _inline(md, text))]
    if shortcuts and (line := _HEADING_LINE.fullmatch(text) or _QUOTE_LINE.fullmatch(text)):
        return [Leaf(TEXT, _inline(md, line.group(1)))]
    if shortcuts and (item := _ITEM_LINE.fullmatch(text)):
        number = f"{item.group(1)}. " if item.group(1) else ""
        return [Leaf(ITEM, number + _inline(md, item.group(2)))]
    return list(_leaves(md.parse(text), options))


def _inline(md: MarkdownIt, text: str) -> str:
    """One line's inline markup read as its text."""
    return "".join(_inline_text(token.children)
                   for token in md.parseInline(text.strip())).strip()


def _plain_leaves(text: str) -> list[Leaf]:
    return [Leaf(TEXT, paragraph) for paragraph in re.split(r"\n[ \t]*\n", text)]


def _leaves(tokens: list[Token], options: MarkdownOptions) -> Iterator[Leaf]:
    items = 0
    prefix = ""
    cells: list[str] | None = None
    for token in tokens:
        kind = token.type
        if kind == "list_item_open":
            items += 1
            prefix = f"{token.info}. " if token.info else ""
        elif kind == "list_item_close":
            items -= 1
        elif kind == "tr_open":
            cells = []
        elif kind == "tr_close" and cells is not None:
            yield Leaf(ROW, ", ".join(cell for cell in cells if cell))
            cells = None
        elif kind == "inline":
            text = _inline_text(token.children).strip()
            if cells is not None:
                cells.append(text)
            else:
                yield Leaf(ITEM if items else TEXT, prefix + text)
                prefix = ""
        elif kind in ("fence", "code_block"):
            if options.code is CodeMode.ANNOUNCE:
                yield Leaf(TEXT, options.code_notice)
            elif options.code is CodeMode.READ:
                yield Leaf(TEXT, token.content)
        elif kind == "html_block":
            yield Leaf(TEXT, _TAG.sub(" ", token.content))


class MarkdownStream:
    """Markdown in chunks in, speech and paragraph pauses out as soon as each piece is
    complete. ``render`` False reads the text as plain text, cut the same way."""

    def __init__(self, options: MarkdownOptions | None = None, *, render: bool = True,
                 transform: Callable[[str], str] | None = None) -> None:
        self._options = options or MarkdownOptions()
        self._render = render
        self._transform = transform or (lambda text: text)
        self._cutter = PieceCutter(self._options.max_piece_chars)
        self._md = parser()
        self._last_kind: str | None = None

    def feed(self, chunk: str) -> list[Segment]:
        pieces = self._cutter.feed(chunk)
        return self._segments(pieces) if pieces else []

    def finish(self) -> list[Segment]:
        return self._segments(self._cutter.finish())

    def _segments(self, pieces: list[Piece]) -> list[Segment]:
        out: list[Segment] = []
        for piece in pieces:
            options = self._options
            if piece.in_code and options.code is CodeMode.ANNOUNCE:
                options = replace(options, code=CodeMode.SKIP)  # announced already
            leaves = read_piece(self._md, piece.prefix + piece.text, options) \
                if self._render else _plain_leaves(piece.text)
            joins = piece.continues
            for leaf in leaves:
                text = " ".join(self._transform(leaf.text).split())
                if not text:
                    continue
                joined, joins = joins, False
                kind = self._last_kind if joined else leaf.kind
                if self._last_kind is not None and not joined \
                        and not (kind == self._last_kind and kind in (ITEM, ROW)):
                    out.append(Pause(PauseKind.PARAGRAPH))
                out.append(Speech(text))
                self._last_kind = kind
        return out
