"""The one text front end between the doors and the engines.

Raw text becomes :mod:`.segments` in one of two ways: SSML (asked for, or detected when
the text starts with ``<speak`` or ``<?xml``) is parsed whole; any other text is read as
LLM markdown, piece by piece as it streams in (:mod:`.markdown`), cleaned
(:mod:`.cleanup`) and normalised (:mod:`.normalize`). Each step can be switched off per
server and per request (:class:`FrontEndOptions`).

The libraries behind the steps (babel and num2words for normalising, markdown-it,
emoji; sentence-stream, which splits the result into sentences) cost 0.1-0.17 s to
import, more than the rest of the server's start before its doors open; they are
imported at first use, and the server imports them in the
background once its doors are open (:func:`warm_libraries`), beside the default voice's
load, so that neither the first ``describe`` nor the first request waits for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .cleanup import EmojiMode, clean
from .markdown import CodeMode, MarkdownOptions, MarkdownStream
from .segments import Segment, Speech, coalesce
from .ssml import SsmlError, SsmlLimits, looks_like_ssml, parse_ssml

__all__ = ["FrontEndOptions", "FrontEndStream", "TextFormat", "TextFrontEnd", "TextRequest",
           "warm_libraries"]


def warm_libraries() -> None:
    """Import what the steps use (a second or later call costs nothing)."""
    import emoji  # noqa: F401
    import markdown_it  # noqa: F401
    import sentence_stream  # noqa: F401 - the synthesizer's sentence splitter

    from . import normalize  # noqa: F401 - babel, num2words and the number patterns


class TextFormat(StrEnum):
    """What a client says its text is (Wyoming's ``text_format``, HTTP's)."""

    AUTO = "auto"
    """SSML when it starts like SSML, else text (markdown allowed)."""
    TEXT = "text"
    SSML = "ssml"


@dataclass(frozen=True)
class FrontEndOptions:
    """Each step of the front end, switchable per server and per request."""

    markdown: bool = True
    """Read markdown as its text (emphasis, headings, lists, tables, links, code)."""
    cleanup: bool = True
    """Emoji, web and mail addresses, runs of punctuation."""
    normalize: bool = True
    """Numbers, dates, times, phone numbers, abbreviations as words."""
    ssml: bool = True
    """Detect SSML and parse it; off: every text is read as text."""
    emoji: EmojiMode = EmojiMode.DROP
    code: CodeMode = CodeMode.ANNOUNCE
    code_notice: str = "Code omitted."
    ssml_limits: SsmlLimits = field(default_factory=SsmlLimits)
    max_piece_chars: int = 2_000
    """The most text held back waiting for a sentence or block to end: a stream's speech
    must not wait for good on text that never ends one (``--max-sentence-chars``)."""

    def with_changes(self, **changes: Any) -> FrontEndOptions:
        """These options with a request's own values (None: keep the server's)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class TextRequest:
    """A request's own say on how its text is read: its format, and the steps it switches
    on or off (``None``: as the server is set)."""

    format: TextFormat = TextFormat.AUTO
    markdown: bool | None = None
    cleanup: bool | None = None
    normalize: bool | None = None
    emoji: EmojiMode | None = None
    code: CodeMode | None = None

    def options(self, server: FrontEndOptions) -> FrontEndOptions:
        """The server's options with this request's changes."""
        return server.with_changes(markdown=self.markdown, cleanup=self.cleanup,
                                   normalize=self.normalize, emoji=self.emoji,
                                   code=self.code)


class TextFrontEnd:
    """Turns a request's text into segments; one per server, shared by every door."""

    def __init__(self, options: FrontEndOptions | None = None) -> None:
        self.options = options or FrontEndOptions()

    def stream(self, text_format: TextFormat = TextFormat.AUTO, *,
               language: str | None = None,
               options: FrontEndOptions | None = None) -> FrontEndStream:
        """A request whose text arrives in chunks; ``language`` is its voice's."""
        return FrontEndStream(options or self.options, text_format, language)

    def process(self, text: str, text_format: TextFormat = TextFormat.AUTO, *,
                language: str | None = None,
                options: FrontEndOptions | None = None) -> list[Segment]:
        """A whole text: exactly what the same text gives streamed in any chunks."""
        stream = self.stream(text_format, language=language, options=options)
        return stream.feed(text) + stream.finish()


class FrontEndStream:
    """One request's text, fed in chunks; segments come out as soon as they are final.

    Raises :class:`~.ssml.SsmlError` for SSML it cannot speak (on :meth:`finish`, or on
    :meth:`feed` once the document is over its size limit).
    """

    def __init__(self, options: FrontEndOptions, text_format: TextFormat,
                 language: str | None) -> None:
        self._options = options
        self._language = language
        self._format: TextFormat | None = None if text_format is TextFormat.AUTO \
            else text_format
        if not options.ssml and self._format is not TextFormat.TEXT:
            self._format = TextFormat.TEXT
        self._pending = ""
        self._text = MarkdownStream(
            MarkdownOptions(code=options.code, code_notice=options.code_notice,
                            max_piece_chars=options.max_piece_chars),
            render=options.markdown, transform=self._transform)
        self._last: Segment | None = None

    @property
    def format(self) -> TextFormat | None:
        """SSML or text once the first characters told (``None`` until then)."""
        return self._format

    def feed(self, chunk: str) -> list[Segment]:
        self._pending += chunk
        if self._format is None:
            self._format = _detect(self._pending)
            if self._format is None:
                return []
        if self._format is TextFormat.SSML:
            limit = self._options.ssml_limits.max_chars
            if len(self._pending) > limit:
                raise SsmlError(f"the SSML document has more than {limit} characters")
            return []
        text, self._pending = self._pending, ""
        return self._emit(self._text.feed(text))

    def finish(self) -> list[Segment]:
        if self._format is TextFormat.SSML:
            segments = parse_ssml(self._pending, language=self._language,
                                  limits=self._options.ssml_limits)
            self._pending = ""
            return self._emit([self._normalized(s) for s in segments])
        text, self._pending = self._pending, ""
        return self._emit(self._text.feed(text) + self._text.finish())

    def _emit(self, segments: list[Segment]) -> list[Segment]:
        if not segments:
            return segments
        out = coalesce(segments, self._last)
        if out:
            self._last = out[-1]
        return out

    def _transform(self, text: str) -> str:
        if self._options.cleanup:
            text = clean(text, emoji_mode=self._options.emoji, language=self._language)
        if self._options.normalize:
            from .normalize import normalizer_for

            if normalizer := normalizer_for(self._language):
                text = normalizer.normalize(text)
        return text

    def _normalized(self, segment: Segment) -> Segment:
        if not self._options.normalize or not isinstance(segment, Speech):
            return segment
        from .normalize import normalizer_for

        normalizer = normalizer_for(segment.style.language or self._language)
        return replace(segment, text=normalizer.normalize(segment.text)) if normalizer \
            else segment


def _detect(text: str) -> TextFormat | None:
    """SSML or text, once the first characters tell; None until then."""
    head = text.lstrip()
    if len(head) < 6 and any(m.startswith(head) for m in ("<speak", "<?xml")):
        return None
    return TextFormat.SSML if looks_like_ssml(head) else TextFormat.TEXT
