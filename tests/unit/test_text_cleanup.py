"""LLM text cleanup: emoji, addresses and runs of punctuation, as a voice should read them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chorus.server.text.cleanup import EmojiMode, clean


@pytest.mark.parametrize(("written", "spoken"), [
    ("See https://www.example.com/docs/x?y=1.", "See example.com."),
    ("Visit www.python.org, then", "Visit python.org, then"),
    ("<http://localhost:8080/a>", "<localhost>"),
    ("Mail jane.doe@example.org!", "Mail jane.doe @ example.org!"),
    ("Really?!?", "Really?"),
    ("Wow!!!", "Wow!"),
    ("Wait....", "Wait..."),
    ("Well,, then", "Well, then"),
    ("a *** b", "a b"),
    ("**bold** left by a broken parse", "bold left by a broken parse"),
])
def test_llm_noise_is_read_sensibly(written: str, spoken: str) -> None:
    assert clean(written) == spoken


def test_emoji_are_described_in_the_text_language_or_dropped() -> None:
    assert clean("Great job 👍🎉!") == "Great job thumbs up party popper!"
    assert clean("Great job 👍!", language="de-DE") == "Great job daumen hoch!"
    assert clean("Great job 👍🎉!", emoji_mode=EmojiMode.DROP) == "Great job!"
    assert clean("Great 👍", emoji_mode=EmojiMode.KEEP) == "Great 👍"
    # A language the emoji names do not cover: dropped, never read in another language.
    assert clean("ok 👍", language="sw") == "ok "


def test_a_joined_emoji_is_one_description() -> None:
    assert clean("family 👨‍👩‍👧 fun") == "family family man woman girl fun"


@given(st.text(st.sampled_from("abcdefXYZ ,.;:'\"-()?!éß"), max_size=100)
       .filter(lambda s: "  " not in s and ",," not in s and ";;" not in s
               and "::" not in s and "!!" not in s and "..." not in s
               and "??" not in s and "?!" not in s and "!?" not in s
               and "---" not in s))
def test_ordinary_sentences_pass_unchanged(sentence: str) -> None:
    assert clean(sentence) == sentence
