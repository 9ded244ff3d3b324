"""The SSML subset Chorus speaks, parsed safely.

``defusedxml`` refuses DTDs, entity declarations and external references (billion
laughs, XXE); the size is checked before parsing and the depth and element count while
parsing, so hostile input is refused in milliseconds with an :class:`SsmlError` that says
where. Supported: ``speak``, ``p``, ``s``, ``break`` (time, strength), ``prosody rate``,
``say-as`` (characters, cardinal, ordinal, digits, date, time, telephone), ``sub alias``,
``voice name``, ``lang`` and ``xml:lang`` anywhere, ``emphasis`` (spoken plainly).
Any other element is ignored with a debug log line and its text spoken.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import XMLParser

from .segments import Pause, PauseKind, Segment, Speech, Style

if TYPE_CHECKING:
    from .normalize import Normalizer

__all__ = ["SsmlError", "SsmlLimits", "looks_like_ssml", "parse_ssml"]

_LOGGER = logging.getLogger(__name__)

_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# Break strengths and rate keywords have no lengths in the SSML standard; these are the
# ones the large cloud services document, so documents written for them sound alike.
_STRENGTHS = {"none": 0.0, "x-weak": 0.25, "weak": 0.5, "medium": 0.75, "strong": 1.0,
              "x-strong": 1.25}
_RATES = {"x-slow": 0.5, "slow": 0.64, "medium": 1.0, "default": 1.0, "fast": 1.55,
          "x-fast": 2.0}
_TIME = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*", re.IGNORECASE)
_RATE = re.compile(r"\s*([+-]?)(\d+(?:\.\d+)?)\s*(%?)\s*")
_SPACE_BEFORE_PUNCTUATION = re.compile(r" ([,.;:!?])")
_IGNORED_QUIETLY = {"emphasis", "mark", "phoneme", "audio"}


class SsmlError(ValueError):
    """A document that is not SSML Chorus can speak; ``line`` and ``column`` (both from
    1) say where, when known."""

    def __init__(self, message: str, line: int | None = None,
                 column: int | None = None) -> None:
        self.line = line
        self.column = column
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(message + where)
        self.message = message + where


@dataclass(frozen=True)
class SsmlLimits:
    max_chars: int = 100_000
    max_depth: int = 32
    max_elements: int = 5_000
    max_break_seconds: float = 10.0
    min_rate: float = 0.25
    max_rate: float = 4.0


def looks_like_ssml(text: str) -> bool:
    """Whether a text is meant as SSML: it starts with ``<speak`` or an XML declaration."""
    head = text.lstrip()[:6]
    return head.startswith(("<speak", "<?xml"))


def parse_ssml(text: str, *, language: str | None = None,
               limits: SsmlLimits | None = None) -> list[Segment]:
    """The document's speech and pauses; ``language`` is the request's, used where the
    document names none."""
    limits = limits or SsmlLimits()
    if len(text) > limits.max_chars:
        raise SsmlError(f"the SSML document has {len(text)} characters; the limit is "
                        f"{limits.max_chars}")
    builder = _Builder(limits, language)
    parser = XMLParser(target=builder, forbid_dtd=True)
    expat = parser.parser

    def locate() -> tuple[int, int]:
        return int(expat.CurrentLineNumber), int(expat.CurrentColumnNumber) + 1

    builder.locate = locate
    try:
        parser.feed(text)
        parser.close()
    except SsmlError as err:
        if err.line is not None:
            raise
        line, column = builder.locate()
        raise SsmlError(err.message, line, column) from None
    except ParseError as err:
        line, column = err.position
        raise SsmlError(f"not well-formed XML: {_reason(err)}", line, column + 1) from None
    except DefusedXmlException as err:
        line, column = builder.locate()
        raise SsmlError(f"SSML may not declare a DTD or entities ({type(err).__name__})",
                        line, column) from None
    return builder.segments


def _reason(err: ParseError) -> str:
    return re.sub(r": line \d+, column \d+$", "", str(err))


@dataclass(frozen=True)
class _Frame:
    tag: str
    style: Style
    quiet: bool = False
    """Its text is not spoken (the content of ``sub``)."""
    say_as: str | None = None
    attrs: tuple[tuple[str, str], ...] = ()


class _Builder:
    """The parser's target: turns start, data and end events into segments as they come,
    so nothing but the segments is kept."""

    def __init__(self, limits: SsmlLimits, language: str | None) -> None:
        self.limits = limits
        self.language = language
        self.segments: list[Segment] = []
        self.locate: Callable[[], tuple[int, int]] = lambda: (0, 0)
        """Where the parser is (line, column from 1), for errors raised here."""
        self._stack: list[_Frame] = []
        self._text: list[str] = []
        self._say_as: list[str] = []
        self._elements = 0

    # -- parser target ----------------------------------------------------------------

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self._elements += 1
        if len(self._stack) >= self.limits.max_depth:
            raise SsmlError(f"SSML nests deeper than {self.limits.max_depth} elements")
        if self._elements > self.limits.max_elements:
            raise SsmlError(f"SSML has more than {self.limits.max_elements} elements")
        name = tag.rsplit("}", 1)[-1]
        if not self._stack and name != "speak":
            raise SsmlError(f"the root element must be <speak>, not <{name}>")
        parent = self._stack[-1] if self._stack else _Frame("", Style(language=self.language))
        style = self._style(name, attrs, parent.style)
        if style != parent.style:
            self._flush(parent.style)
        frame = _Frame(name, style, parent.quiet, parent.say_as,
                       tuple(sorted(attrs.items())))
        if name in ("p", "s"):
            self._flush(parent.style)
        elif name == "break":
            self._flush(parent.style)
            self.segments.append(Pause(PauseKind.BREAK, self._break_seconds(attrs)))
        elif name == "sub":
            if not parent.quiet:
                self._text.append(f" {attrs.get('alias', '')} ")
            frame = replace(frame, quiet=True)
        elif name == "say-as":
            self._say_as = []
            frame = replace(frame, say_as=attrs.get("interpret-as", ""))
        elif name not in ("speak", "prosody", "voice", "lang") \
                and name not in _IGNORED_QUIETLY:
            _LOGGER.debug("SSML element <%s> is not supported; its text is spoken", name)
        self._stack.append(frame)

    def data(self, text: str) -> None:
        frame = self._stack[-1] if self._stack else None
        if frame is None or frame.quiet:
            return
        if frame.say_as is not None:
            self._say_as.append(text)
        else:
            self._text.append(text)

    def end(self, tag: str) -> None:
        frame = self._stack.pop()
        parent_style = self._stack[-1].style if self._stack else frame.style
        if frame.tag == "say-as" and not frame.quiet:
            self._text.append(f" {self._spoken_as(frame)} ")
        if frame.tag in ("p", "s") or frame.style != parent_style or not self._stack:
            self._flush(frame.style)
        if frame.tag == "p":
            self.segments.append(Pause(PauseKind.PARAGRAPH))

    def close(self) -> None:
        return None

    # -- pieces -----------------------------------------------------------------------

    def _flush(self, style: Style) -> None:
        text = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join("".join(self._text).split()))
        self._text = []
        if text:
            self.segments.append(Speech(text, style))

    def _style(self, name: str, attrs: dict[str, str], style: Style) -> Style:
        if _XML_LANG in attrs:
            style = replace(style, language=attrs[_XML_LANG])
        if name == "voice" and attrs.get("name"):
            style = replace(style, voice=attrs["name"])
        if name == "prosody" and "rate" in attrs:
            style = replace(style, rate=self._rate(attrs["rate"], style.rate))
        return style

    def _rate(self, value: str, current: float) -> float:
        word = value.strip().lower()
        if word in _RATES:
            rate = _RATES[word]
        elif match := _RATE.fullmatch(value):
            sign, number, percent = match.groups()
            amount = float(number) / 100 if percent else float(number)
            rate = (1 + amount if sign == "+" else 1 - amount) if sign else amount
        else:
            raise SsmlError(f"prosody rate {value!r} is not a keyword (x-slow .. x-fast), "
                            "a percentage or a number")
        rate *= current
        if not self.limits.min_rate <= rate <= self.limits.max_rate:
            raise SsmlError(f"prosody rate {value!r} gives {rate:g} times normal speed; "
                            f"allowed: {self.limits.min_rate:g} to {self.limits.max_rate:g}")
        return rate

    def _break_seconds(self, attrs: dict[str, str]) -> float:
        if "time" in attrs:
            match = _TIME.fullmatch(attrs["time"])
            if not match:
                raise SsmlError(f"break time {attrs['time']!r} is not a duration such as "
                                "500ms or 1.5s")
            seconds = float(match.group(1)) / (1000 if match.group(2).lower() == "ms" else 1)
            if seconds > self.limits.max_break_seconds:
                raise SsmlError(f"break time {attrs['time']!r} is over the limit of "
                                f"{self.limits.max_break_seconds:g} s")
            return seconds
        strength = attrs.get("strength", "medium")
        if strength not in _STRENGTHS:
            raise SsmlError(f"break strength {strength!r} is not one of "
                            f"{', '.join(_STRENGTHS)}")
        return _STRENGTHS[strength]

    def _spoken_as(self, frame: _Frame) -> str:
        text = " ".join("".join(self._say_as).split())
        kind = (frame.say_as or "").lower()
        if kind in ("characters", "spell-out", "verbatim"):
            return " ".join(ch.upper() for ch in text if not ch.isspace())
        from .normalize import normalizer_for  # at first use: see frontend.warm_libraries

        normalizer = normalizer_for(frame.style.language)
        if normalizer is None:
            return text
        attrs = dict(frame.attrs)
        try:
            return _interpret(normalizer, kind, text, attrs.get("format", ""))
        except Exception as err:  # noqa: BLE001 - num2words' converters raise what they like
            _LOGGER.debug("say-as %s could not read %r: %s", kind, text, err)
            return text


def _interpret(normalizer: Normalizer, kind: str, text: str, fmt: str) -> str:
    if kind in ("cardinal", "number"):
        return normalizer.cardinal(text)
    if kind == "ordinal":
        return normalizer.ordinal(text)
    if kind == "digits":
        return normalizer.digits(text)
    if kind == "telephone":
        return normalizer.telephone(text)
    if kind == "time":
        match = re.fullmatch(r"(\d{1,2})(?:[:.h](\d{2}))?(?::\d{2})?\s*([AaPp]\.?[Mm]\.?)?",
                             text)
        if not match:
            return text
        return normalizer.time(int(match.group(1)), int(match.group(2) or 0),
                               match.group(3) or "")
    if kind == "date":
        return _date(normalizer, text, fmt or "ymd") or text
    _LOGGER.debug("say-as interpret-as=%r is not supported; its text is spoken", kind)
    return text


def _date(normalizer: Normalizer, text: str, fmt: str) -> str | None:
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    fields = dict(zip(fmt.lower(), numbers, strict=False))
    if len(numbers) != len(fmt) or not {"y", "m", "d"} <= fields.keys():
        return None
    return normalizer.date(datetime.date(fields["y"], fields["m"], fields["d"]))
