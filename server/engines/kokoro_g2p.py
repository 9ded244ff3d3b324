"""English phonemes for Kokoro from misaki, the G2P Kokoro-82M was trained with.

Installed with ``chorus-tts[kokoro-g2p]`` (misaki and spaCy, no torch); without it, or
for any other language, :mod:`.kokoro` phonemizes with espeak-ng as before.

misaki writes Kokoro's own symbols (one token per diphthong: ``A``, ``I``, ``O``, ``W``;
a flapped ``T``) from its US and GB dictionaries, and asks espeak-ng
(:class:`misaki.espeak.EspeakFallback`, on espeakng-loader's library as kokoro-onnx)
only for words they lack. ``misaki.en.G2P`` itself would download a spaCy model at
start-up, which a server must not: here it is given a pipeline built from what is
installed.

**The tagger.** misaki reads part-of-speech tags for homographs (``I read it`` yesterday
or tomorrow, ``wind the clock``) and for weak forms (``a`` as ``ɐ``). spaCy's trained
English pipeline ``en_core_web_sm`` is not on PyPI; where an operator has installed it,
it tags. Without it a blank English tokenizer gets the tags of punctuation and of the
few function words misaki reads tags for from an attribute ruler: sentences come out as
with the tagger except for homographs, which take their dictionary default (as
espeak-ng mostly does).
"""

from __future__ import annotations

import importlib.util
import threading
import warnings
from collections.abc import Callable
from typing import Any, cast

__all__ = ["ENGLISH", "Phonemize", "available", "english_g2p_note", "english_phonemizer",
           "tagger_installed"]

Phonemize = Callable[[str], str]
"""Text -> Kokoro phonemes."""

ENGLISH = {"en_us": False, "en_gb": True}
"""Kokoro's English languages (lower case, ``_``) -> British."""

TAGGER = "en_core_web_sm"

_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    ((".", "!", "?"), "."),
    ((",",), ","),
    ((";", ":", "—", "…"), ":"),
    (("a", "an", "the"), "DT"),
    (("i",), "PRP"),
    (("in",), "IN"),
    (("to",), "TO"),
)
"""Penn tags misaki reads for these tokens (its ``PUNCT_TAGS`` and special cases)."""


def available() -> bool:
    """Whether misaki and spaCy are installed (the ``kokoro-g2p`` extra)."""
    return all(importlib.util.find_spec(name) is not None for name in ("misaki", "spacy"))


def tagger_installed() -> bool:
    """Whether spaCy's trained English pipeline is there to tag homographs."""
    return importlib.util.find_spec(TAGGER) is not None


def english_g2p_note() -> str:
    """How misaki tags, for the log: homographs are resolved only with the tagger."""
    return (f" (tagged by spaCy's {TAGGER})" if tagger_installed()
            else f" (no {TAGGER}: homographs take their dictionary default)")


def _pipeline() -> Any:
    import spacy
    from spacy.pipeline import AttributeRuler

    if tagger_installed():
        return spacy.load(TAGGER, enable=["tok2vec", "tagger"])
    nlp = spacy.blank("en")
    ruler = cast(AttributeRuler, nlp.add_pipe("attribute_ruler"))
    for words, tag in _RULES:
        ruler.add([[{"LOWER": {"IN": list(words)}}]], {"TAG": tag})
    return nlp


_LOCK = threading.Lock()
_PIPELINE: list[Any] = []


def english_phonemizer(language: str) -> Phonemize | None:
    """misaki's phonemizer for ``language`` (``en_US``, ``en-gb``, ...); None when it is
    not Kokoro English or misaki is not installed. Calls are serialised: the espeak-ng
    fallback is one process-wide engine."""
    british = ENGLISH.get(language.replace("-", "_").lower())
    if british is None or not available():
        return None
    from misaki import en
    from misaki.espeak import EspeakFallback

    with _LOCK:
        if not _PIPELINE:
            _PIPELINE.append(_pipeline())
        nlp = _PIPELINE[0]

    class _G2P(en.G2P):  # type: ignore[misc]
        def __init__(self) -> None:  # not misaki's: it would download a spaCy model
            self.version = None
            self.british = british
            self.nlp = nlp
            with warnings.catch_warnings():  # misaki reads its data with open_text
                warnings.simplefilter("ignore", DeprecationWarning)
                self.lexicon = en.Lexicon(british)
            self.fallback = EspeakFallback(british=british)
            self.unk = ""

    g2p = _G2P()

    def phonemize(text: str) -> str:
        with _LOCK:
            phonemes, _ = g2p(text)
        return str(phonemes)

    return phonemize
