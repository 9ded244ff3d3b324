"""Numbers, dates, times, phone numbers and abbreviations read as words, per language."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chorus.server.text.normalize import Normalizer, normalizer_for


def _en() -> Normalizer:
    normalizer = normalizer_for("en_US")
    assert normalizer is not None
    return normalizer


@pytest.mark.parametrize(("written", "spoken"), [
    ("It costs $3.50 today.", "It costs three dollars, fifty cents today."),
    ("$5 each", "five dollars each"),
    ("£1 only", "one pound sterling only"),
    ("the 21st century", "the twenty-first century"),
    ("1,250 people", "one thousand, two hundred and fifty people"),
    ("pi is 3.14", "pi is three point one four"),
    ("at 10:30.", "at ten thirty."),
    ("at 7:05 pm", "at seven oh five p m"),
    ("at 9:00", "at nine o'clock"),
    ("50% off", "fifty percent off"),
    ("5 km away", "five kilometers away"),
    ("it is 20°C", "it is twenty degrees Celsius"),
    ("On 2026-12-05 we met", "On December fifth, twenty twenty-six we met"),
    ("on 12/05/2026.", "on December fifth, twenty twenty-six."),
    ("in 2026 there", "in twenty twenty-six there"),
    ("Call 555-123-4567 now", "Call five five five, one two three, four five six seven now"),
    ("Call +1 (555) 123-4567", "Call + one, five five five, one two three, four five six seven"),
    ("Dr. Smith is in", "Doctor Smith is in"),
    ("fruit, e.g. apples", "fruit, for example apples"),
    ("apples, pears, etc. Then more", "apples, pears, et cetera. Then more"),
    ("apples, pears, etc.", "apples, pears, et cetera."),
])
def test_english_tokens_are_spoken_as_words(written: str, spoken: str) -> None:
    assert _en().normalize(written) == spoken


@pytest.mark.parametrize("written", [
    "version 1.2.3 is out",  # not a number a person would read as one
    "2026-13-45",  # no such date: left as written, never an error
    "25:99",
])
def test_what_is_not_a_known_token_is_left_alone(written: str) -> None:
    assert _en().normalize(written) == written


def test_german_uses_its_own_separators_words_and_date_order() -> None:
    german = normalizer_for("de-DE")
    assert german is not None
    assert german.normalize("3,50 € für 1.250 Leute, z.B. am 05.12.2026.") == (
        "drei Euro und fünfzig Cent für eintausendzweihundertfünfzig Leute, zum Beispiel "
        "am fünfte Dezember zweitausendsechsundzwanzig.")
    assert german.normalize("50 %") == "fünfzig Prozent"


def test_french_ordinals_and_decimals() -> None:
    french = normalizer_for("fr_FR")
    assert french is not None
    assert french.normalize("le 1er mai, 3,5 %") == "le premier mai, trois virgule cinq pour cent"


def test_a_language_num2words_does_not_know_has_no_normaliser() -> None:
    assert normalizer_for("zz_ZZ") is None
    assert normalizer_for("not a tag!") is None


def test_say_as_helpers() -> None:
    en = _en()
    assert en.cardinal("1,250") == "one thousand, two hundred and fifty"
    assert en.ordinal("3") == "third"
    assert en.digits("42") == "four two"
    assert en.telephone("+44 20 7946") == "+ four four, two zero, seven nine four six"
    assert en.time(0, 15) == "zero fifteen"
    assert en.date(datetime.date(2000, 1, 1)) == "January first, two thousand"


# Sentences made of words and ordinary punctuation, with no digit in them.
_plain = st.text(st.sampled_from("abcdefghij klmnopqrstuvwxyzABCXYZ,;'-\"!?()éüß"),
                 max_size=120).map(lambda s: s.replace("  ", " "))


@given(_plain)
def test_plain_sentences_come_out_byte_identical(sentence: str) -> None:
    assert _en().normalize(sentence) == sentence
    german = normalizer_for("de")
    assert german is not None
    assert german.normalize(sentence) == sentence


@given(st.integers(min_value=0, max_value=10**12))
def test_every_integer_comes_out_without_digits(number: int) -> None:
    spoken = _en().normalize(f"I have {number:,} coins.")
    assert not any(ch.isdigit() for ch in spoken), spoken
    assert spoken.startswith("I have ") and spoken.endswith(" coins.")
