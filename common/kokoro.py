"""Kokoro-82M facts that more than one part of Chorus needs: its voices, what their
names say, and how much memory its model takes.

The server's Kokoro engine reads a voice's language from its name, the voice manager's
catalog lists the v1.0 voices, and the operator sizes a pod's memory request for the
models its voices use; all three read these here, so none can drift from the others.
Standard library only: importing it costs nothing and needs no ``kokoro`` extra.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "DEFAULT_MODEL_BYTES",
    "GENDERS",
    "LANGUAGES",
    "MEMORY_FACTOR",
    "STYLE_BYTES",
    "V1_VOICES",
    "memory_estimate",
    "voice_gender",
    "voice_language",
]

LANGUAGES = {
    "a": "en_US", "b": "en_GB", "e": "es_ES", "f": "fr_FR", "h": "hi_IN",
    "i": "it_IT", "j": "ja_JP", "p": "pt_BR", "z": "zh_CN",
}
"""Kokoro's voice-name prefixes: the first letter is the language (``af_heart``:
American English)."""

GENDERS = {"f": "female", "m": "male"}
"""The second letter of a Kokoro voice name (``af_heart``: female)."""

MEMORY_FACTOR = 8.0
"""Resident bytes per model byte, at the worst: the int8 model (92 MB) measured +302 MiB
once loaded and warmed, +331 MiB after a short sentence and +727 MiB after a 600-character
one cut into batches near the 510-token limit (its session keeps onnxruntime's CPU arena,
which holds the largest call's memory; without it each call was a third page faults).
One model file is loaded once, however many voices use it."""

DEFAULT_MODEL_BYTES = 92_361_271
"""The size assumed for a model not yet downloaded: kokoro-v1.0.int8.onnx, the published
int8 model (the fp32 one is about 3.5 times larger; give such a service its resources)."""

STYLE_BYTES = 510 * 256 * 4
"""One v1.0 voice's style vectors: 510 rows of 256 float32 (``voices/<voice>.bin``)."""

V1_VOICES = (
    "af_alloy", "af_aoede", "af_bella", "af_heart", "af_jessica", "af_kore", "af_nicole",
    "af_nova", "af_river", "af_sarah", "af_sky", "am_adam", "am_echo", "am_eric",
    "am_fenrir", "am_liam", "am_michael", "am_onyx", "am_puck", "am_santa",
    "bf_alice", "bf_emma", "bf_isabella", "bf_lily", "bm_daniel", "bm_fable", "bm_george",
    "bm_lewis", "ef_dora", "em_alex", "em_santa", "ff_siwis", "hf_alpha", "hf_beta",
    "hm_omega", "hm_psi", "if_sara", "im_nicola", "jf_alpha", "jf_gongitsune", "jf_nezumi",
    "jf_tebukuro", "jm_kumo", "pf_dora", "pm_alex", "pm_santa", "zf_xiaobei", "zf_xiaoni",
    "zf_xiaoxiao", "zf_xiaoyi", "zm_yunjian", "zm_yunxi", "zm_yunxia", "zm_yunyang",
)
"""Kokoro-82M v1.0's 54 voices (``voices/*.bin`` in onnx-community/Kokoro-82M-v1.0-ONNX
and in kokoro-js)."""


def voice_language(name: str) -> str | None:
    """The locale a Kokoro voice name encodes (``bm_george`` -> ``en_GB``), or None."""
    return LANGUAGES.get(name[:1].lower()) if name[2:3] == "_" else None


def voice_gender(name: str) -> str | None:
    """``female`` or ``male`` as a Kokoro voice name encodes it, or None."""
    return GENDERS.get(name[1:2].lower()) if name[2:3] == "_" else None


def memory_estimate(model_bytes: Iterable[int]) -> int:
    """Resident bytes of Kokoro voices using models of these sizes, one size per distinct
    model (however many voices share it): what the engine reports once they are loaded."""
    return sum(int(size * MEMORY_FACTOR) for size in model_bytes)
