"""Kokoro's English G2P (misaki, :mod:`chorus.server.engines.kokoro_g2p`) with Kokoro's
real model and voices (:mod:`tests.kokoro_files`), through the engine itself.

English voices (``af_heart`` American, ``bm_george`` British) are phonemized by misaki
and a French one by espeak-ng; misaki writes Kokoro's own symbols (one token per
diphthong) and stresses where espeak-ng does not, keeps the punctuation and weak ``a``
that its tagless pipeline would lose, sends words its dictionaries lack to espeak-ng,
and whisper hears what the voices say through it. Without misaki, English falls back to
espeak-ng.

Skipped only when the ``kokoro-g2p`` extra is not installed.
"""

# IPA, not look-alike Latin letters:
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import jiwer
import numpy as np
import pytest
from faster_whisper import WhisperModel

from chorus.server.engines import kokoro_g2p
from chorus.server.engines.base import SynthesisParams
from chorus.server.engines.kokoro import KokoroEngine, KokoroLoadedVoice
from chorus.server.engines.registry import EngineOptions
from tests.integration.listening import load_whisper, normalise, transcribe
from tests.kokoro_files import install_kokoro_voice, join_model, kokoro_installed

pytestmark = pytest.mark.skipif(not (kokoro_installed() and kokoro_g2p.available()),
                                reason="the kokoro-g2p extra is not installed: "
                                       "pip install -e '.[kokoro-g2p]'")

VOICES = {"af_heart": None, "bm_george": None, "ff_siwis": "fr_FR"}
HARD = [
    "I read the book yesterday; I will read it again.",
    "The wind is strong; wind the clock.",
    "She wound the bandage around the wound and closed the door.",
    "Please remember to water the plants in the garden.",
]
WER_LIMIT = 0.10


@pytest.fixture(scope="module")
def engine_voices(tmp_path_factory: pytest.TempPathFactory,
                  ) -> tuple[KokoroEngine, dict[str, KokoroLoadedVoice]]:
    voices_dir = tmp_path_factory.mktemp("g2p-voices")
    model = join_model(tmp_path_factory.mktemp("kokoro-model"))
    engine = KokoroEngine(EngineOptions())
    voices = {}
    for name, language in VOICES.items():
        config = install_kokoro_voice(voices_dir, name, model, language=language)
        voices[name] = engine.load(engine.read_spec(config, name))
    return engine, voices


def _espeak(engine: KokoroEngine, text: str, language: str) -> str:
    return str(engine.tokenizer.phonemize(text, language))


def test_english_voices_speak_through_misaki_french_through_espeak(
        engine_voices: tuple[KokoroEngine, dict[str, KokoroLoadedVoice]]) -> None:
    _, voices = engine_voices
    assert {name: voice.g2p for name, voice in voices.items()} == {
        "af_heart": "misaki", "bm_george": "misaki", "ff_siwis": "espeak-ng"}


def test_misaki_writes_kokoro_symbols_and_stresses_espeak_does_not(
        engine_voices: tuple[KokoroEngine, dict[str, KokoroLoadedVoice]]) -> None:
    """``Tuesday``: misaki gives ``-day`` a secondary stress and one diphthong token
    (``A``); espeak-ng leaves it unstressed, as two tokens (``e`` ``ɪ``)."""
    engine, voices = engine_voices
    _, misaki = engine.phonemizer("en_US")
    assert misaki("Tuesday") == "tˈuzdˌA"
    assert _espeak(engine, "Tuesday", "en-us").strip() == "tˈuːzdeɪ"
    vocab = voices["af_heart"].model.vocab
    tokens = voices["af_heart"].prepare("Tuesday")
    assert tokens == [[vocab[p] for p in "tˈuzdˌA"]]
    # British: non-rhotic, its own vowels.
    _, british = engine.phonemizer("en_GB")
    assert british("the garden") == "ðə ɡˈɑːdᵊn"
    assert misaki("the garden") == "ðə ɡˈɑɹdən"


def test_punctuation_and_weak_forms_survive_without_a_tagger(
        engine_voices: tuple[KokoroEngine, dict[str, KokoroLoadedVoice]]) -> None:
    """misaki reads tags for punctuation and a few function words; on a blank spaCy
    tokenizer it would drop the full stop and the comma and say ``a`` as the letter."""
    engine, _ = engine_voices
    _, misaki = engine.phonemizer("en_US")
    phonemes = misaki("I have set a timer, for ten minutes.")
    assert phonemes.endswith(".")
    assert "," in phonemes
    assert " ɐ " in phonemes and "ˈA" not in phonemes, phonemes


def test_words_misaki_lacks_go_to_espeak_and_every_symbol_is_kokoros(
        engine_voices: tuple[KokoroEngine, dict[str, KokoroLoadedVoice]]) -> None:
    engine, voices = engine_voices
    vocab = voices["af_heart"].model.vocab
    for language in ("en_US", "en_GB"):
        _, misaki = engine.phonemizer(language)
        made_up = misaki("Zyxplorq")
        assert made_up.startswith("z") and len(made_up) > 5, made_up
        for text in [*HARD, "Zyxplorq met Chorus at the café."]:
            phonemes = misaki(text)
            assert set(phonemes) - {" "} <= set(vocab), (text, phonemes)


def test_english_falls_back_to_espeak_without_misaki(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kokoro_g2p, "available", lambda: False)
    engine = KokoroEngine(EngineOptions())
    name, phonemize = engine.phonemizer("en_US")
    assert name == "espeak-ng"
    assert phonemize("Tuesday") == _espeak(engine, "Tuesday", "en-us")


def test_whisper_understands_misaki_phonemes(
        engine_voices: tuple[KokoroEngine, dict[str, KokoroLoadedVoice]]) -> None:
    _, voices = engine_voices
    whisper: WhisperModel = load_whisper()
    for name in ("af_heart", "bm_george"):
        voice = voices[name]
        heard = []
        for text in HARD:
            pcm = np.concatenate([voice.render(unit, SynthesisParams())
                                  for unit in voice.prepare(text)])
            heard.append(normalise(transcribe(whisper, pcm, 24000)))
        expected = [normalise(text) for text in HARD]
        assert jiwer.wer(expected, heard) <= WER_LIMIT, (name, heard)
