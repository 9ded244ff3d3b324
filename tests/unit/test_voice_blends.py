"""The voice blend syntax (:mod:`chorus.server.voice_blends`): Kokoro-FastAPI's spelling,
one canonical name per blend, and a clear ``invalid-voice-blend`` for each malformation."""

from __future__ import annotations

from pathlib import Path

import pytest

from chorus.server.engines.base import VoiceSpec
from chorus.server.voice_blends import (
    MAX_PARTS,
    METRIC_LABEL,
    Blend,
    InvalidVoiceBlend,
    blend_spec,
    is_blend_name,
    metric_label,
    parse_blend,
)


@pytest.mark.parametrize(("text", "parts"), [
    ("af_bella+af_sky", (("af_bella", 0.5), ("af_sky", 0.5))),
    ("af_bella(2)+af_sky(1)", (("af_bella", 0.666667), ("af_sky", 0.333333))),
    (" af_bella ( 2 ) +  af_sky(1.0) ", (("af_bella", 0.666667), ("af_sky", 0.333333))),
    ("af_bella(.5)+af_sky(1.5)+bm_george", (("af_bella", 0.166667), ("af_sky", 0.5),
                                            ("bm_george", 0.333333))),
    ("af_bella(1e-3)+af_sky(3E-3)", (("af_bella", 0.25), ("af_sky", 0.75))),
    ("af_sky+af_bella", (("af_sky", 0.5), ("af_bella", 0.5))),  # order kept: language
    ("af_bella(1)+af_sky(2)+af_bella(1)", (("af_bella", 0.5), ("af_sky", 0.5))),
    ("af_bella+af_bella", (("af_bella", 1.0),)),
    ("af_bella(3)", (("af_bella", 1.0),)),
    ("en_US-lessac.v2(1)+x-y_z(3)", (("en_US-lessac.v2", 0.25), ("x-y_z", 0.75))),
])
def test_parses_names_and_normalises_weights(
        text: str, parts: tuple[tuple[str, float], ...]) -> None:
    assert parse_blend(text).parts == parts


def test_spellings_of_one_blend_share_one_canonical_name_that_parses_to_itself() -> None:
    names = {parse_blend(t).name for t in
             ("af_bella+af_sky", "af_bella(1)+af_sky(1)", "af_bella(3) + af_sky(3)",
              "af_bella(0.25)+af_sky(.25)")}
    assert names == {"af_bella(0.5)+af_sky(0.5)"}
    for text in ("af_bella(2)+af_sky(1)", "a(1)+b(1)+c(1)", "a(1)+b(100000000)"):
        blend = parse_blend(text)
        assert parse_blend(blend.name) == blend, blend.name
    assert parse_blend("af_bella(2)+af_sky(1)").name == "af_bella(0.666667)+af_sky(0.333333)"
    assert parse_blend("af_bella(2)+af_sky(1)") != parse_blend("af_bella(1)+af_sky(2)")


@pytest.mark.parametrize(("text", "says"), [
    ("af_bella+", "part 2 is empty"),
    ("+af_sky", "part 1 is empty"),
    ("af_bella++af_sky", "part 2 is empty"),
    ("af_bella( )+af_sky", "weight of af_bella ('') is not a positive number"),
    ("af_bella(x)+af_sky", "weight of af_bella ('x') is not a positive number"),
    ("af_bella(-1)+af_sky", "weight of af_bella ('-1') is not a positive number"),
    ("af_bella(1e)+af_sky", "is not a positive number"),
    ("af_bella(+1)+af_sky", "part 1 ('af_bella(') is not a voice name"),
    ("af_bella(nan)+af_sky", "is not a positive number"),
    ("af_bella(inf)+af_sky", "is not a positive number"),
    ("af_bella(0)+af_sky", "weight of af_bella (0) must be above zero"),
    ("af_bella(0.000)+af_sky", "must be above zero"),
    ("af_bella(" + "9" * 400 + ")+af_sky", "must be above zero and finite"),
    ("af_bella(2", "part 1 ('af_bella(2') is not a voice name"),
    ("af_bella)+af_sky", "part 1 ('af_bella)') is not a voice name"),
    ("af bella+af_sky", "part 1 ('af bella') is not a voice name"),
    ("af_bella(1)(2)+af_sky", "is not a voice name"),
    ("(2)+af_sky", "part 1 ('(2)') is not a voice name"),
    ("+".join(["af_bella"] * (MAX_PARTS + 1)), f"has {MAX_PARTS + 1} parts; a blend may "
                                                f"have at most {MAX_PARTS}"),
])
def test_malformed_blends_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(InvalidVoiceBlend) as caught:
        parse_blend(text)
    assert says in caught.value.message
    assert repr(text) in caught.value.message
    assert (caught.value.code, caught.value.param) == ("invalid-voice-blend", "voice")


def test_weights_too_large_together() -> None:
    huge = "9" * 308
    with pytest.raises(InvalidVoiceBlend, match="too large"):
        parse_blend(f"a({huge})+b({huge})")


def test_a_weight_too_small_to_count_is_refused() -> None:
    with pytest.raises(InvalidVoiceBlend, match="weight of a is too small"):
        parse_blend("a(1e-300)+b(1e300)")


def test_at_most_max_parts_is_fine() -> None:
    names = [f"v{i}" for i in range(MAX_PARTS)]
    assert [n for n, _ in parse_blend("+".join(names)).parts] == names


def test_blend_names_and_metric_label() -> None:
    assert is_blend_name("a+b") and is_blend_name("a(2)") and is_blend_name("a)")
    assert not is_blend_name("en_US-lessac-medium")
    assert metric_label("af_bella(0.5)+af_sky(0.5)") == METRIC_LABEL
    assert metric_label("af_bella") == "af_bella"


def _spec(name: str, engine: str = "kokoro", model: str = "kokoro.onnx",
          language: str = "en_US") -> VoiceSpec:
    directory = Path("/voices")
    return VoiceSpec(name=name, engine=engine, model_path=directory / model,
                     config_path=directory / f"{name}.{engine}.json", language=language,
                     sample_rate=24000, model_bytes=100, fingerprint=(len(name), 1, 2, 3),
                     files=(directory / f"{name}.{engine}.json", directory / model))


def test_blend_spec_speaks_the_first_parts_language_and_watches_every_file() -> None:
    blend = parse_blend("ff_siwis(3)+af_sky")
    spec = blend_spec(blend, [_spec("ff_siwis", language="fr_FR"), _spec("af_sky")],
                      {"kokoro"})
    assert spec.name == "ff_siwis(0.75)+af_sky(0.25)"
    assert spec.blend == blend.parts
    assert (spec.engine, spec.language, spec.sample_rate) == ("kokoro", "fr_FR", 24000)
    assert spec.model_path == Path("/voices/kokoro.onnx")
    assert spec.fingerprint == (8, 1, 2, 3, 6, 1, 2, 3)
    assert spec.watched == (Path("/voices/ff_siwis.kokoro.json"),
                            Path("/voices/kokoro.onnx"), Path("/voices/af_sky.kokoro.json"))
    assert "ff_siwis 75%" in spec.description and "af_sky 25%" in spec.description


def test_a_one_part_blend_is_the_voice_itself() -> None:
    voice = _spec("af_sky")
    assert blend_spec(parse_blend("af_sky+af_sky"), [voice], {"kokoro"}) is voice


def test_parts_of_another_engine_or_model_are_refused() -> None:
    with pytest.raises(InvalidVoiceBlend, match=r"joe is a piper voice, and piper voices "
                       r"cannot be blended \(Kokoro voices can\)"):
        blend_spec(Blend((("af_sky", 0.5), ("joe", 0.5))),
                   [_spec("af_sky"), _spec("joe", engine="piper", model="joe.onnx")],
                   {"kokoro"})
    with pytest.raises(InvalidVoiceBlend, match=r"af_sky and af_other use different "
                       r"models \(kokoro.onnx, other.onnx\)"):
        blend_spec(Blend((("af_sky", 0.5), ("af_other", 0.5))),
                   [_spec("af_sky"), _spec("af_other", model="other.onnx")], {"kokoro"})
