"""LLM markdown read as speech, from a stream of chunks, the same as from the whole text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chorus.server.text.markdown import (
    CodeMode,
    MarkdownOptions,
    MarkdownStream,
    Piece,
    PieceCutter,
    parser,
    read_piece,
)
from chorus.server.text.segments import Pause, PauseKind, Segment, Speech

P = Pause(PauseKind.PARAGRAPH)

LLM_ANSWER = """# Making tea

Boil **fresh** water. Warm the *pot* first. See [the guide](https://example.com/tea).

- Use one spoon per cup. Add one for the pot
- Steep for `4` minutes
1. First step
2. Second step

```python
print("tea")
```
Then pour.

| Tea | Minutes |
|-----|---------|
| Black | 4 |

> A quote. Still quoted
> more of it
Dr. Smith agrees. Enjoy!
"""


def _whole(text: str, options: MarkdownOptions | None = None) -> list[Segment]:
    stream = MarkdownStream(options)
    return stream.feed(text) + stream.finish()


def _chunked(text: str, cuts: list[int], options: MarkdownOptions | None = None
             ) -> list[Segment]:
    stream = MarkdownStream(options)
    out: list[Segment] = []
    start = 0
    for cut in [*sorted(cuts), len(text)]:
        out += stream.feed(text[start:cut])
        start = max(start, cut)
    return out + stream.finish()


def _texts(segments: list[Segment]) -> list[str]:
    return [s.text if isinstance(s, Speech) else "|" for s in segments]


def test_an_llm_answer_is_read_without_its_markup() -> None:
    assert _texts(_whole(LLM_ANSWER)) == [
        "Making tea", "|",
        "Boil fresh water.", "Warm the pot first.", "See the guide.", "|",
        "Use one spoon per cup.", "Add one for the pot", "Steep for 4 minutes",
        "1. First step", "2. Second step", "|",
        "Code omitted.", "|",
        "Then pour.", "|",
        "Tea, Minutes", "Black, 4", "|",
        "A quote.", "Still quoted more of it Dr. Smith agrees.", "Enjoy!",
    ]
    spoken = " ".join(_texts(_whole(LLM_ANSWER)))
    for noise in ("*", "#", "`", "http", "[", "|--"):
        assert noise not in spoken


@pytest.mark.parametrize(("mode", "said"), [
    (CodeMode.SKIP, []), (CodeMode.ANNOUNCE, ["Code omitted."]),
    (CodeMode.READ, ['print("tea")']),
])
def test_code_blocks_are_skipped_announced_or_read(mode: CodeMode, said: list[str]) -> None:
    text = "Before.\n\n```python\nprint(\"tea\")\n```\n\nAfter."
    assert [t for t in _texts(_whole(text, MarkdownOptions(code=mode))) if t != "|"] == [
        "Before.", *said, "After."]


def test_a_paragraph_is_spoken_sentence_by_sentence_before_it_ends() -> None:
    """Token-by-token LLM output: each sentence leaves once the next one has begun."""
    stream = MarkdownStream()
    assert stream.feed("Boil **fresh** water. ") == []
    assert stream.feed("W") == [Speech("Boil fresh water.")]
    assert stream.feed("arm the pot. And") == [Speech("Warm the pot.")]
    assert stream.feed(" more\n\n") == []
    assert stream.feed("N") == [Speech("And more")]
    assert stream.finish() == [P, Speech("N")]


def test_no_cut_inside_open_markup_titles_or_list_markers() -> None:
    cutter = PieceCutter()
    pieces = cutter.feed("**One. Two.** Three. Dr. Who. [A. B](x) 1. Done. ") + cutter.finish()
    assert [p.text for p in pieces] == ["**One. Two.**", "Three.", "Dr. Who.",
                                        "[A. B](x) 1.", "Done. "]
    cutter = PieceCutter()
    pieces = cutter.feed("1. First. Then\n") + cutter.finish()
    assert pieces == [Piece("1. First."), Piece("Then\n", continues=True)]
    cutter = PieceCutter()
    pieces = cutter.feed("> > Quoted. Still\n") + cutter.finish()
    assert pieces == [Piece("> > Quoted."), Piece("Still\n", continues=True, prefix="> > ")]


def test_a_heading_and_a_list_item_leave_as_soon_as_their_line_is_known() -> None:
    stream = MarkdownStream()
    assert stream.feed("# Title\n") == []  # the heading may still grow: "# Title\n" is final
    assert stream.feed("- a\n") == [Speech("Title")]
    assert stream.feed("- b\n") == [P, Speech("a")]
    assert stream.finish() == [Speech("b")]


def test_plain_text_is_cut_the_same_way_and_kept_as_written() -> None:
    stream = MarkdownStream(render=False)
    out = stream.feed("Use *stars*. Keep them.\n\nNext") + stream.finish()
    assert out == [Speech("Use *stars*."), Speech("Keep them."), P, Speech("Next")]


_ALPHABET = st.sampled_from([
    "a", "b", "Word", " ", " ", "\n", "\n\n", ". ", "! ", "? ", "Dr. ", "*", "**", "_",
    "`", "```", "~~", "[", "](", ")", "(", "#", "# ", "- ", "1. ", "2) ", "> ", "|", "---",
    "    ", "<b>", "</b>", "A", "Z", "x_y", "👍", "&amp;",
])
_MARKDOWN = st.lists(_ALPHABET, max_size=60).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_MARKDOWN, st.just(LLM_ANSWER)), st.data())
def test_chunked_markdown_equals_the_whole_text(text: str, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=len(text)))
    assert _chunked(text, cuts) == _whole(text)


@settings(max_examples=100, deadline=None)
@given(_MARKDOWN)
def test_character_by_character_equals_the_whole_text(text: str) -> None:
    assert _chunked(text, list(range(len(text)))) == _whole(text)


@given(_MARKDOWN)
def test_no_text_is_lost_by_cutting(text: str) -> None:
    cutter = PieceCutter()
    pieces = cutter.feed(text) + cutter.finish()
    # only the spaces at a sentence cut go
    assert "".join("".join(p.text for p in pieces).split()) == "".join(text.split())


_LINE = st.lists(st.sampled_from(["a", "Word", " ", "  ", "*", "**", "_", "`", "[", "](",
                                  ")", "&amp;", "\\", "!", "~~", ".", "1", "<b>", "#", "|",
                                  "-", "é"]), max_size=25).map("".join)


@given(st.sampled_from(["", "A", "Word ", "*A", "**B", "_C"]), _LINE, st.sampled_from(["", "\n"]))
def test_single_line_shortcuts_read_as_markdown_it_does(head: str, line: str,
                                                        end: str) -> None:
    """One-line pieces skip the block parser (or all of markdown-it when they have no
    markup); what they give must not differ from the full parse."""
    text = head + line + end
    md = parser()
    full = read_piece(md, text, MarkdownOptions(), shortcuts=False)
    fast = read_piece(md, text, MarkdownOptions())
    assert [" ".join(leaf.text.split()) for leaf in fast if leaf.text.strip()] == [
        " ".join(leaf.text.split()) for leaf in full if leaf.text.strip()]


@settings(max_examples=300)
@given(st.sampled_from(["# ", "###### ", "#\t", "####### ", "#", "- ", "* ", "+ ", "1. ",
                        "007) ", "1234567890. ", "2.  ", "3.    ", "4.     ", "-\t", "> ",
                        "1.", "- - ", "* * ", ">", "> > ", ">> ", ">  ", ">\t", ">     ",
                        "> # ", "> - "]),
       st.sampled_from(["", "A", "Word ", "*A", "**B", "_C", "1"]), _LINE,
       st.sampled_from(["", "\n", "\n\n", "  \n \n", " #", " ##\n"]))
def test_heading_item_and_quote_shortcuts_read_as_markdown_it_does(marker: str, head: str,
                                                                  line: str, end: str) -> None:
    """A one-line heading, list item or quote skips the block parser; its leaves (kind
    and text) must be the full parse's."""
    text = marker + head + line + end
    md = parser()
    full = read_piece(md, text, MarkdownOptions(), shortcuts=False)
    fast = read_piece(md, text, MarkdownOptions())
    assert [(leaf.kind, " ".join(leaf.text.split())) for leaf in fast] == [
        (leaf.kind, " ".join(leaf.text.split())) for leaf in full]


SHORT = MarkdownOptions(max_piece_chars=16)


@settings(max_examples=300, deadline=None)
@given(_MARKDOWN, st.data())
def test_cuts_for_length_do_not_depend_on_the_chunks_either(text: str,
                                                            data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=len(text)))
    assert _chunked(text, cuts, SHORT) == _whole(text, SHORT)


@given(_MARKDOWN)
def test_no_piece_is_longer_than_the_limit(text: str) -> None:
    cutter = PieceCutter(max_chars=16)
    pieces = [*(p for i in range(len(text)) for p in cutter.feed(text[i])), *cutter.finish()]
    assert all(len(p.text) <= 16 for p in pieces[:-1])
    assert "".join("".join(p.text for p in pieces).split()) == "".join(text.split())


def test_a_long_code_block_is_let_go_in_pieces_and_announced_once() -> None:
    code = "".join(f"line {i} of code\n" for i in range(300))  # 5,490 characters
    stream = MarkdownStream()
    out = stream.feed("Intro.\n\n```\n" + code[:1000])
    assert out == [Speech("Intro.")]  # the code is held, announced once it is let go
    out += stream.feed(code)
    assert out == [Speech("Intro."), P, Speech("Code omitted.")]
    assert stream.feed("```\nAfter.\n") + stream.finish() == [P, Speech("After.")]
    reading = MarkdownStream(MarkdownOptions(code=CodeMode.READ))
    said = reading.feed("```\n" + code + code + "```\n") + reading.finish()
    spoken = " ".join(s.text for s in said if isinstance(s, Speech))
    assert spoken.split() == (code + code).split()  # every line read, none twice


def test_a_line_with_no_sentence_end_is_cut_at_a_space() -> None:
    cutter = PieceCutter(max_chars=20)
    assert [p.text for p in cutter.feed("one two three four five six seven")] == [
        "one two three four"]
    assert [p.text for p in cutter.finish()] == ["five six seven"]
