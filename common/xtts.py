"""XTTS v2 facts that more than one part of Chorus needs: what a cloned voice is on disk,
which clips and languages it may have, where the checkpoint comes from and under which
licence, and how much memory a loaded checkpoint takes.

A cloned voice lives in the voices directory like any other (:mod:`chorus.common.layout`):

- ``<voice>.xtts.json``: the entry (:class:`XttsEntry`), written last, so a voice is
  listed only once its clips are complete;
- ``<voice>.clip1.wav`` ... : its reference clips, plain files beside the entry (the
  clone API and CLI store them as 16-bit mono WAV at :data:`CLIP_SAMPLE_RATE`; the
  voice manager keeps a downloaded clip as published, verified by its sha256);
- ``<voice>.xtts-latents.npz``: the speaker conditioning computed from the clips, a
  cache the engine writes once and reads while its key (:func:`latents_key`) matches;
- ``<checkpoint>/``: a directory holding the base checkpoint's files
  (:data:`CHECKPOINT_FILES`), shared by every XTTS voice that names it.

The server's XTTS engine, the clone API, the CLI, the voice manager and the operator all
read these here, so none can drift from the others. Standard library only: importing it
needs no ``xtts`` extra.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import XTTS_SUFFIX, is_valid_voice_name

__all__ = [
    "CHECKPOINT_FILES",
    "CHECKPOINT_OPTIONAL_FILES",
    "CLIP_FORMATS",
    "CLIP_MAX_BYTES",
    "CLIP_MAX_SECONDS",
    "CLIP_MIN_SECONDS",
    "CLIP_SAMPLE_RATE",
    "DEFAULT_CHECKPOINT",
    "DEFAULT_MODEL_BYTES",
    "HF_REPO",
    "LANGUAGES",
    "LICENSE_NAME",
    "LICENSE_URL",
    "MAX_CLIPS",
    "MEMORY_FACTOR",
    "ORIGINS",
    "OUTPUT_SAMPLE_RATE",
    "XttsEntry",
    "checkpoint_files",
    "clip_name",
    "entry_path",
    "latents_key",
    "latents_path",
    "memory_estimate",
]

LANGUAGES = (
    "en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-cn",
    "ja", "hu", "ko", "hi",
)
"""The language codes XTTS v2 (v2.0.3 checkpoint) speaks, as its ``language`` argument
spells them."""

CLIP_MIN_SECONDS = 3.0
CLIP_MAX_SECONDS = 30.0
"""Bounds on one reference clip's length: shorter gives the model too little of the
speaker, longer only costs conditioning time (XTTS reads at most ~30 s)."""

CLIP_MAX_BYTES = 16 * 1024 * 1024
"""The largest clip accepted, as uploaded or downloaded: 30 s of 48 kHz stereo 32-bit
float WAV is 11.5 MB."""

MAX_CLIPS = 5
"""Clips one voice may have."""

CLIP_FORMATS = ("wav", "flac", "mp3", "ogg")
"""Containers accepted for a clip (by content, not by file name)."""

CLIP_SAMPLE_RATE = 22_050
"""Clips the clone API and CLI store are resampled to this: what XTTS conditions at."""

OUTPUT_SAMPLE_RATE = 24_000
"""XTTS v2 speaks at 24 kHz."""

DEFAULT_CHECKPOINT = "XTTS-v2"
"""The directory name of the base checkpoint in the voices directory."""

CHECKPOINT_FILES = ("config.json", "model.pth", "vocab.json")
"""What a checkpoint directory must hold to be loaded."""

CHECKPOINT_OPTIONAL_FILES = ("speakers_xtts.pth",)
"""Files of the published checkpoint that are used when present (built-in speakers)."""

HF_REPO = "coqui/XTTS-v2"
"""Where the published checkpoint lives on Hugging Face (files at the repo root)."""

LICENSE_NAME = "CPML"
LICENSE_URL = "https://coqui.ai/cpml"
"""The checkpoint's licence, the Coqui Public Model License 1.0.0 (non-commercial): the
voice manager fetches the checkpoint only when the user has accepted it explicitly."""

DEFAULT_MODEL_BYTES = 1_867_929_118
"""The published checkpoint's ``model.pth``: the size assumed before it is downloaded."""

MEMORY_FACTOR = 1.5
"""Resident bytes per byte of ``model.pth``: the fp32 weights once, plus torch's working
memory for a sentence. An estimate from the weights' size, not a measurement of the real
checkpoint (which cannot be fetched where Chorus is tested)."""

ORIGINS = ("clone", "manifest")
"""Who made a voice: the clone API or CLI (``clone``: deletable through the API), or the
voice manager from a ``TTSVoice``/manifest (``manifest``: the manifest owns it)."""


def entry_path(root: Path, voice: str) -> Path:
    """Where voice ``voice``'s entry lives; ValueError for an unsafe name."""
    if not is_valid_voice_name(voice):
        raise ValueError(f"invalid voice name {voice!r}")
    return root / f"{voice}{XTTS_SUFFIX}"


def clip_name(voice: str, index: int, extension: str = "wav") -> str:
    """The file name of voice ``voice``'s clip number ``index`` (from 1)."""
    return f"{voice}.clip{index}.{extension}"


def latents_path(root: Path, voice: str) -> Path:
    """Where the engine caches voice ``voice``'s speaker conditioning."""
    return root / f"{voice}.xtts-latents.npz"


def latents_key(clip_sha256: Iterable[str], model_fingerprint: str) -> str:
    """What the cached conditioning was computed from: the clips' contents, in order, and
    the checkpoint (any string that changes when ``model.pth`` changes). A cache whose
    key differs is stale and computed again."""
    digest = hashlib.sha256()
    for value in (*clip_sha256, "|", model_fingerprint):
        digest.update(value.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def memory_estimate(model_bytes: Iterable[int]) -> int:
    """Resident bytes of XTTS voices using checkpoints whose ``model.pth`` has these sizes,
    one size per distinct checkpoint (voices share a loaded checkpoint)."""
    return sum(int(size * MEMORY_FACTOR) for size in model_bytes)


@dataclass(frozen=True)
class XttsEntry:
    """The content of ``<voice>.xtts.json``."""

    clips: tuple[str, ...]
    """File names of the reference clips, beside the entry."""
    language: str
    """The language spoken when a request names none."""
    languages: tuple[str, ...] = ()
    """Every language the voice is offered in (empty: only :attr:`language`)."""
    checkpoint: str = DEFAULT_CHECKPOINT
    """The checkpoint directory's name, beside the entry."""
    origin: str = "clone"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Keys this version does not know, kept so that a rewrite loses nothing."""

    @property
    def all_languages(self) -> tuple[str, ...]:
        return self.languages or (self.language,)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.extra)
        data.update({
            "clips": list(self.clips), "language": self.language,
            "languages": list(self.all_languages), "checkpoint": self.checkpoint,
            "origin": self.origin, "description": self.description,
        })
        return data

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, data: Any) -> XttsEntry:
        """Read an entry; ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("an XTTS voice entry must be a JSON object")
        clips = data.get("clips")
        if (not isinstance(clips, list) or not clips or len(clips) > MAX_CLIPS
                or not all(isinstance(c, str) and _plain_name(c) for c in clips)):
            raise ValueError(f"'clips' must list 1 to {MAX_CLIPS} file names beside the "
                             "entry")
        language = data.get("language")
        if language not in LANGUAGES:
            raise ValueError(f"'language' must be one of {', '.join(LANGUAGES)}; got "
                             f"{language!r}")
        languages = data.get("languages", [language])
        if not isinstance(languages, list) or not all(x in LANGUAGES for x in languages):
            raise ValueError(f"'languages' must list codes among {', '.join(LANGUAGES)}")
        if language not in languages:
            languages = [language, *languages]
        checkpoint = data.get("checkpoint", DEFAULT_CHECKPOINT)
        if not isinstance(checkpoint, str) or not _plain_name(checkpoint):
            raise ValueError("'checkpoint' must name a directory beside the entry")
        origin = data.get("origin", "clone")
        if origin not in ORIGINS:
            raise ValueError(f"'origin' must be one of {', '.join(ORIGINS)}")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise ValueError("'description' must be a string")
        known = {"clips", "language", "languages", "checkpoint", "origin", "description"}
        return cls(tuple(clips), language, tuple(dict.fromkeys(languages)), checkpoint,
                   origin, description, {k: v for k, v in data.items() if k not in known})

    @classmethod
    def read(cls, path: Path) -> XttsEntry:
        """Parse the entry file at ``path``; OSError if unreadable, ValueError if bad."""
        try:
            data = json.loads(path.read_bytes())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path.name} is not JSON: {err}") from err
        return cls.parse(data)


def _plain_name(name: str) -> bool:
    """A file name in the same directory: no separators, no leading dot, no ``..``."""
    return is_valid_voice_name(name)


def checkpoint_files(root: Path, checkpoint: str) -> Sequence[Path]:
    """The required files of checkpoint ``checkpoint`` under ``root``."""
    return [root / checkpoint / name for name in CHECKPOINT_FILES]
