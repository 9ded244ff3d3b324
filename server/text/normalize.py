"""Numbers, dates, times, phone numbers and abbreviations as words, per language.

Words come from ``num2words`` (cardinals, ordinals, years, currencies) and locale data
from ``babel`` (decimal and group symbols, currency symbols and names, unit symbols and
names, month names, date patterns), so a language those libraries know is handled
without a table of our own. Only what matches a pattern is rewritten: a sentence with
no such token comes out byte-identical, which keeps Piper's output for plain text
unchanged. A language ``num2words`` does not know is left to the voice's phonemizer.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, get_date_format
from babel.numbers import format_decimal, get_currency_name
from babel.units import format_unit
from num2words import CONVERTER_CLASSES, num2words

__all__ = ["Normalizer", "normalizer_for"]

_LOGGER = logging.getLogger(__name__)

# Units read out after a number. The symbols and names come from the locale's data.
_UNITS = (
    "length-kilometer", "length-meter", "length-centimeter", "length-millimeter",
    "length-mile", "length-foot", "mass-kilogram", "mass-gram", "mass-milligram",
    "mass-pound", "volume-liter", "volume-milliliter", "duration-hour", "duration-minute",
    "duration-second", "duration-millisecond", "speed-kilometer-per-hour",
    "speed-mile-per-hour", "temperature-celsius", "temperature-fahrenheit",
    "digital-kilobyte", "digital-megabyte", "digital-gigabyte", "digital-terabyte",
    "energy-kilowatt-hour", "power-watt", "power-kilowatt",
)

# Abbreviations no library lists. Titles stand before a name and never end a sentence;
# the others keep a full stop when the sentence ends with them.
_TITLES: dict[str, dict[str, str]] = {
    "en": {"Dr.": "Doctor", "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miz",
           "Prof.": "Professor", "St.": "Saint"},
    "de": {"Dr.": "Doktor", "Prof.": "Professor", "Hr.": "Herr", "Fr.": "Frau"},
}
_ABBREVIATIONS: dict[str, dict[str, str]] = {
    "en": {"e.g.": "for example", "i.e.": "that is", "etc.": "et cetera", "vs.": "versus",
           "approx.": "approximately"},
    "de": {"z.B.": "zum Beispiel", "z. B.": "zum Beispiel", "d.h.": "das heißt",
           "d. h.": "das heißt", "usw.": "und so weiter", "bzw.": "beziehungsweise",
           "ca.": "circa"},
}
# Ordinal suffixes after digits ("21st"); other languages write ordinals ambiguously.
_ORDINAL_SUFFIX = {"en": r"st|nd|rd|th", "fr": r"er|re|e|ème"}
# Languages that read the day of a date as an ordinal ("December fifth").
_ORDINAL_DAYS = {"en", "de"}


_DIGIT = re.compile(r"\d")


@lru_cache(maxsize=4096)
def _num2words(code: str, value: int | Decimal, to: str, currency: str) -> str:
    """Words for a number; the same numbers come back often (list items, hours, prices)."""
    if currency:
        return str(num2words(value, lang=code, to=to, currency=currency))
    return str(num2words(value, lang=code, to=to))


@lru_cache(maxsize=1024)
def _unit_words(locale: Locale, unit: str, value: Decimal, words: str) -> str:
    written = format_unit(value, unit, length="long", locale=locale)
    return str(written).replace(format_decimal(value, locale=locale), words, 1)


def _num2words_code(locale: Locale) -> str | None:
    for code in (f"{locale.language}_{locale.territory}", locale.language):
        if code in CONVERTER_CLASSES:
            return code
    return None


@lru_cache(maxsize=64)
def normalizer_for(language: str | None) -> Normalizer | None:
    """The normaliser for a language tag (``en_US``, ``de-DE``, ``fr``), or None when
    the libraries do not know it (the text is then left to the voice)."""
    try:
        locale = Locale.parse((language or "en_US").replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None
    code = _num2words_code(locale)
    return Normalizer(locale, code) if code else None


@dataclass(frozen=True)
class _Number:
    """A number as written, parsed: ``value`` and whether it had grouping or decimals."""

    value: Decimal
    grouped: bool
    decimals: bool


class Normalizer:
    """Rewrites the tokens of one language that a voice would misread or spell."""

    def __init__(self, locale: Locale, code: str) -> None:
        self.locale = locale
        self.code = code
        self.language = locale.language
        self._group = locale.number_symbols["latn"]["group"]
        self._decimal = locale.number_symbols["latn"]["decimal"]
        self._converter = CONVERTER_CLASSES[code]
        self._currencies = self._currency_symbols()
        self._units = self._unit_symbols()
        self._abbreviations = (*_TITLES.get(self.language, {}),
                               *_ABBREVIATIONS.get(self.language, {}))
        self._pattern, self._handlers = self._compile()

    # -- public -----------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """``text`` with every recognised token in words; untouched when there is none."""
        if not _DIGIT.search(text) and not self._has_abbreviation(text):
            return text
        return self._pattern.sub(self._replace, text)

    def cardinal(self, text: str) -> str:
        """A written number (``1,250``, ``3.5``) in words; the text itself if it is none."""
        number = self._parse(text)
        return self._words(number.value) if number else text

    def ordinal(self, text: str) -> str:
        digits = re.sub(r"\D", "", text)
        return self._call(int(digits), to="ordinal") if digits else text

    def digits(self, text: str) -> str:
        """Each digit on its own ("4 2"), other characters kept as they are."""
        return " ".join(self._words(Decimal(ch)) if ch.isdigit() else ch
                        for ch in text if not ch.isspace())

    def telephone(self, text: str) -> str:
        said = ", ".join(self.digits(group) for group in re.findall(r"\d+", text))
        return f"+ {said}" if text.lstrip().startswith("+") else said

    def time(self, hour: int, minute: int, suffix: str = "") -> str:
        hours = self._words(Decimal(hour))
        if self.language == "en":
            if minute == 0:
                said = hours if suffix else f"{hours} o'clock"
            elif minute < 10:
                said = f"{hours} oh {self._words(Decimal(minute))}"
            else:
                said = f"{hours} {self._words(Decimal(minute))}"
        else:
            said = hours if minute == 0 else f"{hours} {self._words(Decimal(minute))}"
        letters = [ch for ch in suffix.lower() if ch.isalpha()]
        return f"{said} {' '.join(letters)}" if letters else said

    def date(self, day: datetime.date) -> str:
        """The locale's long date with its numbers in words: "December fifth, twenty
        twenty-six"."""
        pattern = str(get_date_format("long", locale=self.locale).format)
        fields = {key: self._date_field(key, day) for key in re.findall(r"%\((\w+)\)s", pattern)}
        # A full stop after the day ("5. Dezember") is how the ordinal is written; a
        # voice would read it as the end of a sentence.
        return str(re.sub(r"\.(?=\s)", "", pattern) % fields)

    def _date_field(self, key: str, day: datetime.date) -> str:
        if key[0] == "d":
            return self._call(day.day, to="ordinal" if self.language in _ORDINAL_DAYS
                              else "cardinal")
        if key[0] in "yY":
            return self._year(day.year)
        if key[0] in "MLEGc":
            return str(format_date(day, key, locale=self.locale))
        return ""

    # -- pieces -----------------------------------------------------------------------

    def _call(self, value: int | Decimal, to: str = "cardinal", currency: str = "") -> str:
        return _num2words(self.code, value, to, currency)

    def _words(self, value: Decimal) -> str:
        if value == value.to_integral_value():
            return self._call(int(value))
        return self._call(value)

    def _year(self, value: int) -> str:
        try:
            return self._call(value, to="year")
        except (NotImplementedError, AttributeError):
            return self._call(value)

    def _parse(self, text: str) -> _Number | None:
        grouped = self._group in text
        plain = text.replace(self._group, "").replace(self._decimal, ".")
        try:
            return _Number(Decimal(plain), grouped, "." in plain)
        except InvalidOperation:
            return None

    def _currency(self, amount: Decimal, code: str) -> str:
        if amount != amount.to_integral_value():
            try:
                return self._call(amount, to="currency", currency=code)
            except (NotImplementedError, TypeError):  # no such currency, or none at all
                pass
        whole = self._words(amount)
        forms = getattr(self._converter, "CURRENCY_FORMS", {}).get(code)
        if forms and amount == amount.to_integral_value():
            try:
                return f"{whole} {self._converter.pluralize(int(amount), forms[0])}"
            except (NotImplementedError, AttributeError, IndexError, TypeError):
                pass
        return f"{whole} {get_currency_name(code, count=float(amount), locale=self.locale)}"

    def _unit(self, number: _Number, unit: str) -> str:
        """The unit's long name from the locale ("5 kilometers"), the number in words."""
        return _unit_words(self.locale, unit, number.value, self._words(number.value))

    def _has_abbreviation(self, text: str) -> bool:
        return any(abbreviation in text for abbreviation in self._abbreviations)

    # -- locale data ------------------------------------------------------------------

    def _currency_symbols(self) -> dict[str, str]:
        """Symbol -> currency code, for the symbols the locale writes with no letters of
        its own (``$``, ``€``, ``£``); the first code to claim a symbol keeps it."""
        found: dict[str, str] = {}
        for code, symbol in sorted(self.locale.currency_symbols.items()):
            if code in ("XXX",) or any(ch.isalpha() for ch in symbol):
                continue
            if symbol not in found or code in ("USD", "EUR", "GBP", "JPY"):
                found[symbol] = code
        return found

    def _unit_symbols(self) -> dict[str, str]:
        """Symbol -> unit id, from the locale's short and narrow unit patterns."""
        found: dict[str, str] = {}
        for unit in _UNITS:
            for length in ("short", "narrow"):
                try:
                    written = str(format_unit("\x00", unit, length=length,
                                              locale=self.locale))
                except (KeyError, ValueError):
                    continue
                symbol = written.replace("\x00", "").strip(" \u00a0\u202f")
                if symbol and "{" not in symbol and symbol not in ("in",):
                    found.setdefault(symbol, unit)
        # People write "ml" and "kb" for the locale's "mL" and "kB"; exact forms win.
        for symbol, unit in list(found.items()):
            found.setdefault(symbol.lower(), unit)
        return found

    # -- the one pattern --------------------------------------------------------------

    def _compile(self) -> tuple[re.Pattern[str], dict[str, Callable[[_Inner], str]]]:
        group, dec = re.escape(self._group), re.escape(self._decimal)
        if self._group in ("\u00a0", "\u202f"):
            group = "[\u00a0\u202f ]"
        number = rf"\d{{1,3}}(?:{group}\d{{3}})+(?:{dec}\d+)?|\d+(?:{dec}\d+)?"
        before, after = r"(?<![\w.,/:-])", rf"(?![\w]|[.,:/-]\d|{dec}\d)"
        parts: list[tuple[str, str, Callable[[_Inner], str]]] = [
            ("iso_date", r"(?<![\w.-])(\d{4})-(\d{2})-(\d{2})(?![\w-])", self._iso_date),
            ("num_date", r"(?<![\w./-])(\d{1,2})(?P<sep>[/.])(\d{1,2})(?P=sep)(\d{4})"
             r"(?![\w/-]|\.\d)",
             self._numeric_date),
            ("time", r"(?<![\w:.])([01]?\d|2[0-3]):([0-5]\d)(?::[0-5]\d)?(?![\w:])"
             r"(\s?[AaPp]\.?[Mm]\.?(?!\w))?", self._time),
            ("phone", r"(?<![\w+])(?:\+\d{1,3}[\s-]?)?(?:\(\d{1,4}\)[\s-]?)?"
             r"\d{2,4}(?:[\s-]\d{2,5}){1,4}(?![\w-])", self._phone),
        ]
        if self._currencies:
            symbols = "|".join(re.escape(s) for s in sorted(self._currencies, key=len,
                                                              reverse=True))
            parts.append(("money_before", rf"(?<!\w)({symbols})\s?({number}){after}",
                          self._money_before))
            parts.append(("money_after", rf"{before}({number})\s?({symbols})(?!\w)",
                          self._money_after))
        parts.append(("percent", rf"{before}({number})\s?%", self._percent))
        if self.language in _ORDINAL_SUFFIX:
            parts.append(("ordinal",
                          rf"{before}(\d+)({_ORDINAL_SUFFIX[self.language]})(?!\w)",
                          self._ordinal))
        if self._units:
            symbols = "|".join(re.escape(s) for s in sorted(self._units, key=len,
                                                              reverse=True))
            parts.append(("unit", rf"{before}({number})[ \u00a0]?({symbols})(?![\w/])",
                          self._unit_match))
        parts.append(("number", rf"{before}({number}){after}", self._number))
        abbreviations = {**_TITLES.get(self.language, {}),
                         **_ABBREVIATIONS.get(self.language, {})}
        if abbreviations:
            words = "|".join(re.escape(a) for a in sorted(abbreviations, key=len,
                                                          reverse=True))
            parts.append(("abbreviation", rf"(?<!\w)({words})(?=\s|$)(\s*$|\s+(?=[A-Z]))?",
                          self._abbreviation))
        # Every token starts with a digit, "+", "(", a currency symbol or an
        # abbreviation's first letter: a cheap first test at each position.
        starts = {*"0123456789+(", *(s[0] for s in self._currencies),
                  *(a[0] for a in abbreviations)}
        first = "[" + "".join(re.escape(ch) for ch in sorted(starts)) + "]"
        pattern = f"(?={first})(?:" + "|".join(f"(?P<{name}>{regex})"
                                                for name, regex, _ in parts) + ")"
        return re.compile(pattern), {name: handler for name, _, handler in parts}

    def _replace(self, match: re.Match[str]) -> str:
        # The alternative's named group closes last, so it is the match's lastgroup.
        name = match.lastgroup or ""
        inner = _Inner(match, name)
        try:
            return self._handlers[name](inner)
        except Exception as err:  # noqa: BLE001 - num2words' converters raise what they like
            _LOGGER.debug("Left %r as written: %s", match.group(0), err)
            return match.group(0)

    # -- handlers: each gets the groups of its own alternative ------------------------

    def _iso_date(self, m: _Inner) -> str:
        return self.date(datetime.date(int(m[1]), int(m[2]), int(m[3])))

    def _numeric_date(self, m: _Inner) -> str:
        first, second, year = int(m[1]), int(m[3]), int(m[4])
        short = get_date_format("short", locale=self.locale).pattern
        month_first = short.find("M") < short.find("d")
        month, day = (first, second) if month_first else (second, first)
        return self.date(datetime.date(year, month, day))

    def _time(self, m: _Inner) -> str:
        return self.time(int(m[1]), int(m[2]), m[3] or "")

    def _phone(self, m: _Inner) -> str:
        text = m[0]
        if sum(ch.isdigit() for ch in text) < 7 or not any(ch in text for ch in "+(-"):
            return self.normalize_numbers_only(text)
        return self.telephone(text)

    def normalize_numbers_only(self, text: str) -> str:
        """Plain numbers in a run that looked like, but was not, a phone number."""
        return re.sub(r"\d+", lambda d: self._number_text(d.group(0)), text)

    def _money_before(self, m: _Inner) -> str:
        number = self._parse(m[2])
        return self._currency(number.value, self._currencies[m[1]]) if number else m[0]

    def _money_after(self, m: _Inner) -> str:
        number = self._parse(m[1])
        return self._currency(number.value, self._currencies[m[2]]) if number else m[0]

    def _percent(self, m: _Inner) -> str:
        number = self._parse(m[1])
        return self._unit(number, "concentr-percent") if number else m[0]

    def _ordinal(self, m: _Inner) -> str:
        return self._call(int(m[1]), to="ordinal")

    def _unit_match(self, m: _Inner) -> str:
        number = self._parse(m[1])
        return self._unit(number, self._units[m[2]]) if number else m[0]

    def _number(self, m: _Inner) -> str:
        return self._number_text(m[1])

    def _number_text(self, text: str) -> str:
        number = self._parse(text)
        if number is None:
            return text
        if not number.grouped and not number.decimals and len(text) == 4 \
                and 1100 <= number.value < 2100:
            return self._year(int(number.value))
        return self._words(number.value)

    def _abbreviation(self, m: _Inner) -> str:
        word = m[1]
        titles = _TITLES.get(self.language, {})
        if word in titles:
            return titles[word] + m[0][len(word):]
        expansion = _ABBREVIATIONS[self.language][word]
        return f"{expansion}.{m[2]}" if m.took_part(2) else expansion


class _Inner:
    """The groups of one named alternative, numbered from 1 as if it stood alone."""

    def __init__(self, match: re.Match[str], name: str) -> None:
        self._match = match
        self._start = match.re.groupindex[name]

    def __getitem__(self, index: int) -> str:
        """The group's text, "" when it took no part in the match."""
        return self._match.group(self._start + index) or ""

    def took_part(self, index: int) -> bool:
        return self._match.group(self._start + index) is not None
