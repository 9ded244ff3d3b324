"""Per-request voice blends: ``af_bella+af_sky`` or ``af_bella(2)+af_sky(1)``.

Kokoro-FastAPI's syntax, so that clients written for it (and its users' habits) work
here: parts joined by ``+``, each an installed voice name with an optional positive
weight in parentheses (1 when left out); whitespace around parts and weights is
ignored. A blend speaks with the weighted sum of its parts' style vectors, so it needs
an engine whose voices are style vectors over one model (Kokoro); the store asks the
engine to build it (:class:`~chorus.server.engines.base.BlendsVoices`).

**One name per blend.** Weights are normalised to sum 1 and rounded to 6 significant
digits, and a voice named twice is one part with the weights added. The canonical name
(``af_bella(0.666667)+af_sky(0.333333)``) is the blend's voice name everywhere: the
``X-Voice`` header, the HTTP cache key, the store's few cached blends. Spellings of the
same blend (``a+b``, ``a(1)+b(1)``, ``a(3) + b(3)``) therefore share one name and, since
the rounded weights are the ones rendered, speak the same audio sample for sample. A
"blend" left with one part (``a+a``, ``a(2)``) is that voice itself.

**Language.** A blend speaks the first part's language (its phonemizer and text front
end), as Kokoro-FastAPI does: mixing languages is how Kokoro users make accents, so it
is allowed rather than refused.

Blends are per request: not installed, not listed, never a default voice. A voice name
containing ``+`` that is installed as such is that voice, not a blend.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from .engines.base import VoiceSpec
from .errors import ChorusError

__all__ = [
    "MAX_PARTS",
    "METRIC_LABEL",
    "Blend",
    "InvalidVoiceBlend",
    "blend_spec",
    "is_blend_name",
    "metric_label",
    "parse_blend",
]

MAX_PARTS = 8
"""Parts a blend may name (as written, before repeated names are merged): enough for any
mix people make, and a bound on what one request can make the server add up."""

METRIC_LABEL = "(blend)"
"""The ``voice`` label of a request spoken with a blend: one label for all blends, since
every weight is another name and metrics must not grow a series per request. No
installed voice can be named this (parentheses are not allowed in voice names)."""

_MARKS = re.compile(r"[+()]")
_PART = re.compile(r"(?P<name>[^()\s]+)\s*(?:\((?P<weight>[^()]*)\))?")
_NUMBER = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
"""A weight as written: a decimal number, maybe with an exponent (a canonical name writes
tiny weights so); no sign, ``inf`` or ``nan``."""


class InvalidVoiceBlend(ChorusError):
    """A voice name written as a blend that cannot be one: malformed, too many parts, or
    parts that cannot be mixed (another engine, another model)."""

    code = "invalid-voice-blend"
    param = "voice"


@dataclass(frozen=True)
class Blend:
    """A parsed blend: part names in the order written, weights summing to 1."""

    parts: tuple[tuple[str, float], ...]

    @property
    def name(self) -> str:
        """The canonical spelling, ``a(0.5)+b(0.5)``; parsing it gives this blend again."""
        return "+".join(f"{name}({_format(weight)})" for name, weight in self.parts)


def _format(weight: float) -> str:
    return f"{weight:.6g}"


def is_blend_name(name: str) -> bool:
    """Whether ``name`` is written as a blend (has ``+``, ``(`` or ``)``); an installed
    voice of that name still wins over the blend reading."""
    return _MARKS.search(name) is not None


def metric_label(voice: str) -> str:
    """The metrics label for a request's voice: :data:`METRIC_LABEL` for a blend."""
    return METRIC_LABEL if "(" in voice else voice


def parse_blend(text: str) -> Blend:
    """The blend ``text`` names; :class:`InvalidVoiceBlend` saying what is wrong when it
    is malformed. Which voices the names are is the store's to check."""
    written = text.split("+")
    if len(written) > MAX_PARTS:
        raise InvalidVoiceBlend(f"voice blend {text!r} has {len(written)} parts; a blend "
                                f"may have at most {MAX_PARTS}")
    weights: dict[str, float] = {}
    for index, part in enumerate(written, 1):
        name, weight = _parse_part(text, index, part.strip())
        weights[name] = weights.get(name, 0.0) + weight
    total = sum(weights.values())
    if total == float("inf"):
        raise InvalidVoiceBlend(f"voice blend {text!r}: the weights are too large")
    # Rounded once: the canonical name's weights are exactly the ones rendered.
    parts = tuple((name, float(_format(weight / total))) for name, weight in weights.items())
    for name, weight in parts:
        if weight == 0.0:
            raise InvalidVoiceBlend(f"voice blend {text!r}: the weight of {name} is too "
                                    "small next to the others to count")
    return Blend(parts)


def _parse_part(text: str, index: int, part: str) -> tuple[str, float]:
    if not part:
        raise InvalidVoiceBlend(f"voice blend {text!r}: part {index} is empty (write "
                                "voices as a+b or a(2)+b(1))")
    match = _PART.fullmatch(part)
    if match is None:
        raise InvalidVoiceBlend(f"voice blend {text!r}: part {index} ({part!r}) is not "
                                "a voice name with an optional weight, like af_bella(2)")
    name, written = match["name"], match["weight"]
    if written is None:
        return name, 1.0
    weight = written.strip()
    if not _NUMBER.fullmatch(weight):
        raise InvalidVoiceBlend(f"voice blend {text!r}: the weight of {name} ({weight!r}) "
                                "is not a positive number")
    value = float(weight)
    if not 0.0 < value < float("inf"):
        raise InvalidVoiceBlend(f"voice blend {text!r}: the weight of {name} ({weight}) "
                                "must be above zero and finite")
    return name, value


def blend_spec(blend: Blend, parts: Sequence[VoiceSpec],
               blending_engines: Collection[str]) -> VoiceSpec:
    """The spec of ``blend`` whose parts are the installed voices ``parts`` (in order);
    a one-part blend is that part. ``blending_engines``: engines that can blend.

    Its files and fingerprint are all its parts', so a change to any part is another
    spec (the HTTP cache misses, the store's cached blend is not reused)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    for spec in parts:
        if spec.engine not in blending_engines:
            raise InvalidVoiceBlend(f"voice blend {blend.name!r}: {spec.name} is a "
                                    f"{spec.engine} voice, and {spec.engine} voices cannot "
                                    "be blended (Kokoro voices can)")
        if spec.engine != first.engine or spec.model_path != first.model_path:
            raise InvalidVoiceBlend(f"voice blend {blend.name!r}: {first.name} and "
                                    f"{spec.name} use different models "
                                    f"({first.model_path.name}, {spec.model_path.name}); "
                                    "the parts of a blend must share one")
    mix = ", ".join(f"{name} {weight:.0%}" for name, weight in blend.parts)
    files = tuple(dict.fromkeys(path for spec in parts for path in spec.watched))
    return replace(
        first, name=blend.name, description=f"Blend of {mix} (speaks {first.language})",
        speakers=(), num_speakers=1, quality=None, version=None,
        fingerprint=tuple(value for spec in parts for value in spec.fingerprint),
        files=files, blend=blend.parts)
