"""The manifest format (chorus.common.manifest) and the status file format."""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest

from chorus.common.manifest import (
    DEFAULT_HF_REPO,
    DEFAULT_KOKORO_REPO,
    SOURCE_KINDS,
    HuggingFaceFile,
    HuggingFaceSource,
    KokoroSource,
    LocalFile,
    LocalSource,
    ManifestError,
    Sha256,
    Source,
    UrlFile,
    UrlSource,
    check_engine,
    check_verifiable,
    json_keys,
    load_manifest,
    parse_manifest,
    parse_sha256,
    parse_source,
    source_to_dict,
)
from chorus.common.voice_status import VoiceStatus, VolumeStatus

SHA_A = "a" * 64
SHA_B = "b" * 64
KOKORO: dict[str, Any] = {
    "model": {"huggingFace": {"path": "onnx/model_quantized.onnx", "revision": "v1"}},
    "style": {"url": {"url": "https://example.org/af_heart.bin", "sha256": SHA_B.upper()}}}


def _voice(**overrides: Any) -> dict[str, Any]:
    voice: dict[str, Any] = {"name": "en_US-amy-medium",
                             "source": {"huggingFace": {"revision": "v1.0.0"}}}
    voice.update(overrides)
    return voice


def _manifest(*voices: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "voices": list(voices)}


def test_full_manifest_round_trips() -> None:
    data = _manifest(
        {"name": "en_US-amy-medium", "engine": "piper", "required": True,
         "source": {"huggingFace": {"repo": "rhasspy/piper-voices", "revision": "v1.0.0",
                                    "path": "en/en_US/amy/medium"}},
         "sha256": {"model": SHA_A, "config": SHA_B}},
        {"name": "joe", "engine": "piper", "required": False,
         "source": {"url": {"model": "https://example.org/joe.onnx",
                            "config": "https://example.org/joe.onnx.json",
                            "allowUnverified": True}}},
        {"name": "baked", "engine": "piper", "required": True,
         "source": {"local": {"path": "/opt/voices"}}},
    )
    manifest = parse_manifest(data)
    amy, joe, baked = manifest.voices
    assert amy.source == HuggingFaceSource("rhasspy/piper-voices", "v1.0.0",
                                           "en/en_US/amy/medium")
    assert amy.sha256 == Sha256(SHA_A, SHA_B)
    assert joe.source == UrlSource("https://example.org/joe.onnx",
                                   "https://example.org/joe.onnx.json", True)
    assert not joe.required
    assert baked.source == LocalSource("/opt/voices")
    assert manifest.to_dict() == data
    assert load_manifest(manifest.to_json()) == manifest


def test_defaults() -> None:
    voice = parse_manifest(_manifest({"name": "x", "source": {"huggingFace": {}}})).voices[0]
    assert voice.source == HuggingFaceSource(DEFAULT_HF_REPO, "main", None)
    assert voice.required
    assert voice.engine == "piper"
    assert parse_manifest({"version": 1}).voices == ()


def test_fingerprint_ignores_required_but_not_source() -> None:
    a = parse_manifest(_manifest(_voice())).voices[0]
    b = parse_manifest(_manifest(_voice(required=False))).voices[0]
    c = parse_manifest(_manifest(_voice(source={"huggingFace": {"revision": "v2"}}))).voices[0]
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize(("data", "message"), [
    ({"version": 2, "voices": []}, "unsupported version 2"),
    ({"version": True, "voices": []}, "unsupported version"),
    ({"voices": []}, "missing version"),
    ([], "expected an object"),
    ({"version": 1, "voices": {}}, "expected a list"),
    ({"version": 1, "voices": [], "extra": 1}, "unknown key(s) extra"),
    (_manifest(_voice(name="../x")), "unsafe voice name '../x'"),
    (_manifest(_voice(name="/etc/passwd")), "unsafe voice name"),
    (_manifest(_voice(name=".hidden")), "unsafe voice name"),
    (_manifest(_voice(name="a/b")), "unsafe voice name"),
    (_manifest(_voice(name="")), "non-empty string"),
    (_manifest(_voice(), _voice()), "listed twice"),
    (_manifest(_voice(engine="espeak")), "unsupported engine 'espeak'"),
    (_manifest(_voice(engine="kokoro")), "engine 'kokoro' needs source.kokoro"),
    (_manifest(_voice(source={"kokoro": KOKORO})), "source.kokoro is for engine 'kokoro'"),
    (_manifest(_voice(engine="kokoro", source={"kokoro": KOKORO},
                      sha256={"model": SHA_A, "config": SHA_B})), "pins each file"),
    (_manifest(_voice(engine="kokoro", source={"kokoro": {"model": KOKORO["model"]}})),
     "source.kokoro: missing style"),
    (_manifest(_voice(engine="kokoro", source={"kokoro": {
        **KOKORO, "style": {"url": {"url": "https://a/s.bin"}}}})),
     "source.kokoro.style.url: missing sha256"),
    (_manifest(_voice(engine="kokoro", source={"kokoro": {
        **KOKORO, "style": {"local": {"path": "/opt/"}}}})), "absolute file path"),
    (_manifest(_voice(engine="kokoro", source={"kokoro": {
        **KOKORO, "model": {"huggingFace": {"path": "../m.onnx"}}}})), "unsafe repo path"),
    (_manifest(_voice(engine="kokoro", source={"kokoro": {**KOKORO, "model": {}}})),
     "source.kokoro.model needs exactly one of huggingFace, url, local"),
    (_manifest(_voice(required="yes")), "expected true or false"),
    (_manifest(_voice(source={})), "exactly one of"),
    (_manifest(_voice(source={"huggingFace": {}, "local": {"path": "/x"}})), "exactly one"),
    (_manifest(_voice(source={"ftp": {}})), "unknown source kind"),
    (_manifest(_voice(source={"huggingFace": {"path": "../../etc"}})), "unsafe repo path"),
    (_manifest(_voice(source={"huggingFace": {"path": "/abs/dir"}})), "unsafe repo path"),
    (_manifest(_voice(source={"huggingFace": {"repo": "../x"}})), "expected OWNER/NAME"),
    (_manifest(_voice(source={"huggingFace": {"revision": "../main"}})), "invalid revision"),
    (_manifest(_voice(source={"local": {"path": "relative/dir"}})), "absolute directory"),
    (_manifest(_voice(source={"url": {"model": "file:///etc/x", "config": "https://a/b"},
                              })), "only http:// and https://"),
    (_manifest(_voice(source={"url": {"model": "https://a/m", "config": "https://a/c"}})),
     "need sha256"),
    (_manifest(_voice(sha256={"model": "abc", "config": SHA_B})), "64 hex digits"),
    (_manifest(_voice(sha256={"model": SHA_A})), "missing config"),
])
def test_invalid_manifests_are_refused_with_the_field_named(data: Any, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data)
    assert message in str(caught.value)


def test_source_kinds_are_the_source_types() -> None:
    assert set(typing.get_args(Source)) == set(SOURCE_KINDS.values())


def test_a_kokoro_voice_names_its_model_and_style_apart() -> None:
    voice = parse_manifest(_manifest({"name": "af_heart", "engine": "kokoro",
                                      "source": {"kokoro": KOKORO}})).voices[0]
    assert voice.engine == "kokoro"
    assert voice.source == KokoroSource(
        HuggingFaceFile("onnx/model_quantized.onnx", DEFAULT_KOKORO_REPO, "v1"),
        UrlFile("https://example.org/af_heart.bin", SHA_B))
    assert parse_manifest(voice_manifest := _manifest(voice.to_dict())).voices[0] == voice
    assert voice_manifest["voices"][0]["source"]["kokoro"]["model"] == {"huggingFace": {
        "path": "onnx/model_quantized.onnx", "repo": DEFAULT_KOKORO_REPO, "revision": "v1"}}
    other = parse_manifest(_manifest({"name": "af_heart", "engine": "kokoro", "source": {
        "kokoro": {**KOKORO, "model": {"local": {"path": "/opt/m.onnx"}}}}})).voices[0]
    assert other.fingerprint() != voice.fingerprint()


@pytest.mark.parametrize("source", [
    KokoroSource(HuggingFaceFile("a/b.onnx"), LocalFile("/opt/s.bin")),
    KokoroSource(UrlFile("https://a/m", SHA_A), HuggingFaceFile("v/s.bin", "me/k", "v2", SHA_B)),
    KokoroSource(LocalFile("/m.onnx", SHA_A), UrlFile("http://a/s", SHA_B))])
def test_kokoro_sources_round_trip(source: KokoroSource) -> None:
    assert parse_source(source_to_dict(source), "source") == source
    check_engine("kokoro", source, None)
    with pytest.raises(ManifestError, match=r"^voice 'x': engine 'piper' needs one of"):
        check_engine("piper", source, None, "voice 'x'")


def test_json_keys_are_read_off_the_records() -> None:
    keys = {k.key: (k.attribute, k.type, k.required, k.default) for k in json_keys(UrlSource)}
    assert keys == {"model": ("model", str, True, None), "config": ("config", str, True, None),
                    "allowUnverified": ("allow_unverified", bool, False, False)}
    assert [(k.key, k.default) for k in json_keys(HuggingFaceSource)] == [
        ("repo", DEFAULT_HF_REPO), ("revision", "main"), ("path", None)]
    assert [(k.key, k.required) for k in json_keys(Sha256)] == [("model", True),
                                                                 ("config", True)]


@pytest.mark.parametrize("source", [
    HuggingFaceSource(), HuggingFaceSource("me/voices", "v1", "en/amy"),
    UrlSource("https://a/m", "https://a/c"), UrlSource("https://a/m", "https://a/c", True),
    LocalSource("/opt/voices")])
def test_sources_round_trip(source: Source) -> None:
    assert parse_source(source_to_dict(source), "source") == source


def test_every_key_is_written_but_an_absent_path() -> None:
    assert source_to_dict(HuggingFaceSource()) == {
        "huggingFace": {"repo": DEFAULT_HF_REPO, "revision": "main"}}
    assert source_to_dict(UrlSource("https://a/m", "https://a/c")) == {
        "url": {"model": "https://a/m", "config": "https://a/c", "allowUnverified": False}}


@pytest.mark.parametrize(("value", "message"), [
    ({"url": {"model": "https://a/m"}}, "spec.source.url: missing config"),
    ({"local": {"path": "x"}}, "spec.source.local.path: expected an absolute"),
    ({"local": {"path": "/x"}, "url": {}}, "spec.source needs exactly one of"),
    ({"huggingFace": {"repo": 1}}, "spec.source.huggingFace.repo: expected a non-empty string"),
    ({"url": {"model": "https://a/m", "config": "https://a/c", "allowUnverified": "yes"}},
     "spec.source.url.allowUnverified: expected true or false"),
])
def test_parse_source_names_the_path_it_is_given(value: Any, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_source(value, "spec.source")
    assert str(caught.value).startswith(message)


def test_parse_sha256() -> None:
    assert parse_sha256({"model": SHA_A.upper(), "config": SHA_B}, "h") == Sha256(SHA_A, SHA_B)
    with pytest.raises(ManifestError, match=r"^h: unknown key"):
        parse_sha256({"model": SHA_A, "config": SHA_B, "extra": SHA_B}, "h")


def test_url_sources_need_a_hash_or_the_opt_in() -> None:
    url = UrlSource("https://a/m", "https://a/c")
    with pytest.raises(ManifestError, match=r"^URL sources need sha256"):
        check_verifiable(url, None)
    with pytest.raises(ManifestError, match=r"^voice 'x': URL sources need sha256"):
        check_verifiable(url, None, "voice 'x'")
    check_verifiable(url, Sha256(SHA_A, SHA_B))
    check_verifiable(UrlSource("https://a/m", "https://a/c", True), None)
    check_verifiable(HuggingFaceSource(), None)


def test_invalid_json() -> None:
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest("{not json")


def test_sha256_is_normalised_to_lower_case() -> None:
    voice = parse_manifest(_manifest(_voice(sha256={"model": SHA_A.upper(),
                                                    "config": SHA_B}))).voices[0]
    assert voice.sha256 == Sha256(SHA_A, SHA_B)


def test_status_file_round_trips() -> None:
    status = VolumeStatus({"amy": VoiceStatus("installed", True, 10, SHA_A, SHA_B, None, 1,
                                              "fp", "2026-01-01T00:00:00Z",
                                              "2026-01-01T00:00:00Z"),
                           "bob": VoiceStatus("failed", False, error="HTTP 404")},
                          manifest_error="bad")
    text = status.to_json()
    data = json.loads(text)
    assert data["version"] == 1
    assert data["manifestError"] == "bad"
    assert data["voices"]["amy"]["sha256"] == {"model": SHA_A, "config": SHA_B}
    assert data["voices"]["amy"]["installedAt"] == "2026-01-01T00:00:00Z"
    assert data["voices"]["bob"]["sha256"] is None
    assert VolumeStatus.from_json(text) == status


def test_status_file_of_another_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version 1"):
        VolumeStatus.from_json('{"version": 7}')
