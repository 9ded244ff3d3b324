"""XTTS files for the tests: a tiny randomly initialised checkpoint and cloned voices.

The published XTTS v2 checkpoint (1.8 GB, CPML) only comes from a hub, which tests never
reach. :func:`build_tiny_checkpoint` writes a checkpoint of the same kind and layout
(``config.json``, ``model.pth``, ``vocab.json``) that coqui-tts loads with the very code
that loads the real one: XTTS v2's architecture (perceiver conditioning, HiFi-GAN decoder,
speaker encoder) with 2 GPT layers of width 256, random weights and a vocabulary of single
characters. It speaks noise, not words, but every step of cloning, conditioning and
streaming inference runs for real. Its stop token is made unlikely, so that every unit
runs to the model's maximum length (:data:`TINY_AUDIO_TOKENS` codes, about 2.8 s): unit
lengths and chunk counts do not depend on chance.

:func:`write_cloned_voice` writes a voice as the clone API does: a 16-bit mono clip at
:data:`~chorus.common.xtts.CLIP_SAMPLE_RATE` beside the ``.xtts.json`` entry, written last.

XTTS tests need the ``xtts`` extra (torch, coqui-tts) and are marked ``xtts``: the main
test run leaves them out, ``scripts/dev test`` runs them in their own stage and venv.
"""

# pyright: reportMissingImports=false
# (torch and coqui-tts are in the xtts venv only, not in the one pyright checks with)

from __future__ import annotations

import importlib.util
import os
import shutil
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chorus.common.xtts import CLIP_SAMPLE_RATE, DEFAULT_CHECKPOINT, XttsEntry, clip_name

__all__ = [
    "TINY_AUDIO_TOKENS",
    "XTTS_MISSING",
    "build_tiny_checkpoint",
    "link_checkpoint",
    "write_clip",
    "write_cloned_voice",
    "write_tiny_vocab",
    "xtts_installed",
]

XTTS_MISSING = ("the xtts extra is not installed: pip install torch==2.13.0 && "
                "pip install -e '.[xtts]' (scripts/dev test sets up .venv-xtts)")

TINY_AUDIO_TOKENS = 64
"""The tiny model's ``gpt_max_audio_tokens``: each unit is about 61 codes of 1024 input
samples, 2.8 s at 24 kHz."""

_LANGUAGE_TOKENS = ("en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar",
                    "zh-cn", "ja", "hu", "ko", "hi")
_SPECIALS = ("[STOP]", "[UNK]", "[SPACE]")
_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()äöüßéèêàçñ"


def xtts_installed() -> bool:
    """Whether the ``xtts`` extra is in (without importing torch)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "TTS"))


def write_tiny_vocab(path: Path) -> Path:
    """A ``vocab.json`` the XTTS tokenizer accepts: a Hugging Face ``tokenizers`` BPE model
    without merges over single characters, with XTTS's special tokens (``[STOP]`` 0,
    ``[UNK]`` 1, ``[SPACE]`` 2, a ``[lang]`` token per language, ``[START]`` last), as the
    real vocabulary has them."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokens = [*_SPECIALS, *(f"[{code}]" for code in _LANGUAGE_TOKENS),
              *dict.fromkeys(_CHARACTERS), "[START]"]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))  # noqa: S106
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens([t for t in tokens if t.startswith("[")])
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def build_tiny_checkpoint(directory: Path) -> Path:
    """Write a tiny random XTTS v2 checkpoint (``config.json``, ``model.pth``,
    ``vocab.json``) into ``directory``; returns ``directory``. Seeded: the same files
    every time. A few seconds, about 120 MB."""
    import torch
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_tiny_vocab(directory / "vocab.json")
    config = XttsConfig()
    args = config.model_args
    args.gpt_layers = 2
    args.gpt_n_model_channels = 256
    args.gpt_n_heads = 4
    args.decoder_input_dim = 256
    args.gpt_use_perceiver_resampler = True  # as XTTS v2 (v1 had prompt embeddings)
    args.gpt_num_audio_tokens = 1026
    args.gpt_start_audio_token = 1024
    args.gpt_stop_audio_token = 1025
    args.gpt_max_audio_tokens = TINY_AUDIO_TOKENS
    torch.manual_seed(0)
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(vocab))
    model.init_models()
    assert model.gpt is not None
    with torch.no_grad():
        # Random weights would end a unit whenever the stop code happens to be drawn.
        model.gpt.mel_head.bias[args.gpt_stop_audio_token] = -1e4
    torch.save({"model": model.state_dict()}, directory / "model.pth")
    config.save_json(str(directory / "config.json"))
    return directory


def link_checkpoint(source: Path, root: Path, name: str = DEFAULT_CHECKPOINT) -> Path:
    """The checkpoint files of ``source`` in ``root/name`` (hard links where the
    filesystem allows, else copies): one built checkpoint serves many voices
    directories."""
    target = root / name
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and not (target / path.name).exists():
            try:
                os.link(path, target / path.name)
            except OSError:
                shutil.copyfile(path, target / path.name)
    return target


def write_clip(path: Path, seconds: float = 4.0, pitch: float = 140.0,
               rate: int = CLIP_SAMPLE_RATE) -> Path:
    """A voice-like 16-bit mono WAV: a glottal-ish pulse train at ``pitch`` Hz through
    three formant-like resonances, with syllable-rate loudness; seeded noise on top."""
    rng = np.random.default_rng(int(pitch))
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * pitch * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t)) * t
    signal = sum(np.sin(k * phase) / k for k in range(1, 30))
    formants = sum(np.sin(2 * np.pi * f * t) * 0.3 for f in (500.0, 1500.0, 2500.0))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    audio = (signal * (1 + formants) * envelope + 0.02 * rng.standard_normal(t.size))
    audio = 0.6 * audio / np.max(np.abs(audio))
    pcm = (audio * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def write_cloned_voice(root: Path, name: str, *, language: str = "en",
                       languages: Sequence[str] = (), checkpoint: str = DEFAULT_CHECKPOINT,
                       clips: int = 1, pitch: float = 140.0,
                       description: str = "") -> Path:
    """Voice ``name`` in ``root`` as the clone API writes it: ``clips`` WAV clips (a clip
    file already there is kept: a test may record its own), then the ``.xtts.json``
    entry (atomically, last). The checkpoint directory is not written here
    (:func:`link_checkpoint`). Returns the entry's path."""
    names = []
    for index in range(1, clips + 1):
        clip = root / clip_name(name, index)
        if not clip.exists():
            write_clip(clip, pitch=pitch + 20.0 * (index - 1))
        names.append(clip.name)
    entry = XttsEntry(clips=tuple(names), language=language,
                      languages=tuple(languages) or (language,), checkpoint=checkpoint,
                      description=description)
    path = root / f"{name}.xtts.json"
    partial = root / f".chorus-tmp-{name}.xtts.json"
    partial.write_bytes(entry.to_json())
    os.replace(partial, path)
    return path

