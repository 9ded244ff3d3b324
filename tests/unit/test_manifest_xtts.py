"""XTTS voices in the manifest: the source shape, its refusals, and the licence rule."""

from __future__ import annotations

from typing import Any

import pytest

from chorus.common.manifest import (
    HuggingFaceClip,
    LocalFile,
    LocalSource,
    ManifestError,
    UrlFile,
    XttsCheckpoint,
    XttsHubCheckpoint,
    XttsSource,
    XttsUrlCheckpoint,
    check_engine,
    license_refusal,
    parse_manifest,
    parse_source,
    source_to_dict,
)
from chorus.common.xtts import DEFAULT_CHECKPOINT, HF_REPO, LICENSE_NAME, LICENSE_URL, MAX_CLIPS

SHA_A = "a" * 64
SHA_B = "b" * 64
CLIP = {"url": {"url": "https://example.org/me.wav", "sha256": SHA_A}}
XTTS: dict[str, Any] = {"clips": [CLIP], "language": "en",
                        "checkpoint": {"huggingFace": {}}, "acceptLicense": "CPML"}


def _voice(**changes: Any) -> dict[str, Any]:
    return {"name": "narrator", "engine": "xtts", "source": {"xtts": {**XTTS, **changes}}}


def _parse(*voices: dict[str, Any]) -> Any:
    return parse_manifest({"version": 1, "voices": list(voices)})


def test_an_xtts_voice_parses_with_its_defaults_and_round_trips() -> None:
    voice = _parse(_voice(languages=["fr", "en", "fr"])).voices[0]
    assert voice.engine == "xtts"
    assert voice.source == XttsSource(
        (UrlFile("https://example.org/me.wav", SHA_A),), "en",
        XttsCheckpoint(XttsHubCheckpoint(HF_REPO, "main"), DEFAULT_CHECKPOINT), ("fr", "en"),
        LICENSE_NAME)
    data = voice.to_dict()
    assert data["source"]["xtts"]["checkpoint"] == {
        "name": "XTTS-v2", "huggingFace": {"repo": "coqui/XTTS-v2", "revision": "main"}}
    assert _parse(data).voices[0] == voice
    changed = _parse(_voice(checkpoint={"huggingFace": {"revision": "v2.0.3"}})).voices[0]
    assert changed.fingerprint() != voice.fingerprint()


@pytest.mark.parametrize("source", [
    XttsSource((HuggingFaceClip("clips/a.wav", "me/clips"), LocalFile("/c/b.flac", SHA_B)),
               "zh-cn", XttsCheckpoint(LocalSource("/opt/xtts"), "mine")),
    XttsSource((UrlFile("https://a/c.wav", SHA_A),), "de", XttsCheckpoint(XttsUrlCheckpoint(
        UrlFile("https://a/config.json", SHA_A), UrlFile("https://a/model.pth", SHA_B),
        UrlFile("https://a/vocab.json", SHA_A), UrlFile("https://a/s.pth", SHA_B))),
        ("de", "en"), LICENSE_NAME),
    XttsSource((LocalFile("/c/a.wav"),), "en", XttsCheckpoint(XttsUrlCheckpoint(
        UrlFile("https://a/config.json", SHA_A), UrlFile("https://a/model.pth", SHA_B),
        UrlFile("https://a/vocab.json", SHA_A)))),
])
def test_xtts_sources_round_trip(source: XttsSource) -> None:
    assert parse_source(source_to_dict(source), "source") == source
    check_engine("xtts", source, None)


@pytest.mark.parametrize(("voice", "message"), [
    (_voice(clips=[]), "clips: expected a list of 1 to 5 clips"),
    (_voice(clips=[CLIP] * (MAX_CLIPS + 1)), "expected a list of 1 to 5"),
    (_voice(clips=[{"huggingFace": {"path": "a.wav"}}]),
     "source.xtts.clips[0].huggingFace: missing repo"),
    (_voice(clips=[{"url": {"url": "https://a/x.wav"}}]), "clips[0].url: missing sha256"),
    (_voice(clips=[{"local": {"path": "/clips/"}}]), "absolute file path"),
    (_voice(language="xx"), "source.xtts.language: expected one of en, es"),
    (_voice(languages=["en", "tlh"]), "source.xtts.languages[1]: expected one of"),
    (_voice(languages="en"), "languages: expected a list"),
    (_voice(acceptLicense="yes"), f"licence is CPML ({LICENSE_URL}); got 'yes'"),
    (_voice(checkpoint={}), "checkpoint needs exactly one of huggingFace, url, local"),
    (_voice(checkpoint={"huggingFace": {}, "local": {"path": "/x"}}), "exactly one of"),
    (_voice(checkpoint={"name": "../up", "huggingFace": {}}), "unsafe directory name"),
    (_voice(checkpoint={"local": {"path": "rel"}}), "absolute directory path"),
    (_voice(checkpoint={"url": {"model": {"url": "https://a/m", "sha256": SHA_A}}}),
     "checkpoint.url: missing config, vocab"),
    (_voice(checkpoint={"url": {"config": {"url": "https://a/c"}}}), "missing model"),
    (_voice(extra=1), "unknown key(s) extra"),
    ({**_voice(), "engine": "piper"}, "engine 'piper' needs one of huggingFace, url, local as "
     "its source (source.xtts is for engine 'xtts')"),
    ({**_voice(), "engine": "kokoro"}, "engine 'kokoro' needs source.kokoro"),
    ({**_voice(), "source": {"huggingFace": {}}}, "engine 'xtts' needs source.xtts (clips, "
     "language, checkpoint)"),
    ({**_voice(), "source": {"kokoro": {"model": CLIP, "style": CLIP}}},
     "engine 'xtts' needs source.xtts"),
    ({**_voice(), "sha256": {"model": SHA_A, "config": SHA_B}}, "an XTTS voice each file"),
])
def test_invalid_xtts_voices_are_refused_with_the_field_named(voice: dict[str, Any],
                                                              message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        _parse(voice)
    assert message in str(caught.value)


def test_only_a_fetched_checkpoint_needs_the_licence_accepted() -> None:
    unaccepted = {k: v for k, v in XTTS.items() if k != "acceptLicense"}
    hub = parse_source({"xtts": unaccepted}, "source")
    refusal = license_refusal(hub)
    assert refusal is not None
    assert all(word in refusal for word in ("CPML", LICENSE_URL, "acceptLicense: CPML"))
    url = parse_source({"xtts": {**unaccepted, "checkpoint": {"url": {
        key: {"url": f"https://a/{key}", "sha256": SHA_A}
        for key in ("config", "model", "vocab")}}}}, "source")
    assert license_refusal(url) == refusal
    local = parse_source({"xtts": {**unaccepted, "checkpoint": {"local": {"path": "/x"}}}},
                         "source")
    assert license_refusal(local) is None
    assert license_refusal(parse_source({"xtts": XTTS}, "source")) is None
    assert license_refusal(parse_source({"huggingFace": {}}, "source")) is None
