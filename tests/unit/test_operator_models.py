"""``operator/models.py``: spec parsing refuses what the operator cannot serve, naming the field.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from chorus.common.manifest import HuggingFaceSource, Sha256, UrlSource
from chorus.operator.models import (
    SpecError,
    Voice,
    parse_service,
    parse_voice,
)
from chorus.operator.render import (
    RenderSettings,
    build_children,
    check_service_name,
    select_voices,
)
from tests.unit.operator_specs import (
    AMY,
    EMPTY,
    NS,
    SHA,
    SHA_A,
    SHA_B,
    URL,
    service,
    voice,
    voice_body,
    voices,
)

# --- invalid specs -----------------------------------------------------------------------------


@pytest.mark.parametrize(("patch", "message"), [
    ({"replicas": 2, "autoscaling": {"maxReplicas": 3}, **EMPTY},
     "set replicas or autoscaling, not both"),
    ({"replicas": 2}, "ReadWriteOnce"),
    ({"replicas": 2, "storage": {"accessModes": ["ReadWriteOncePod"]}}, "ReadWriteOnce"),
    ({"autoscaling": {"maxReplicas": 3}}, "ReadWriteOnce"),
    ({"autoscaling": {"minReplicas": 4, "maxReplicas": 3}, **EMPTY},
     "autoscaling.minReplicas must not exceed maxReplicas"),
    ({"autoscaling": {"minReplicas": 2}, **EMPTY}, r"autoscaling\.maxReplicas: Field required"),
    ({"server": {"http": {"port": 10200}}},
     "server.http.port and server.wyoming.port must differ"),
    ({"server": {"http": {"port": 7000}, "wyoming": {"port": 7000}}},
     "server.http.port and server.wyoming.port must differ"),
    ({"monitoring": {"port": 10200}}, "monitoring.port 10200 is already server.wyoming.port"),
    ({"monitoring": {"port": 5000}}, "monitoring.port 5000 is already server.http.port"),
    ({"monitoring": {"port": 9090}}, "the voice manager's status port 9090"),
    ({"monitoring": {"interval": "30 seconds"}}, r"monitoring\.interval"),
    ({"monitoring": {"port": 0}}, r"monitoring\.port"),
    ({"defaultVoice": "../x"}, "defaultVoice: unsafe voice key"),
    ({"defaultVoice": "a..b"}, "defaultVoice: unsafe voice key"),
    ({"defaultVoice": "a/b"}, "defaultVoice: unsafe voice key"),
    ({"voices": {"names": []}}, "voices needs names, a selector, or both"),
    ({"replicas": -1}, "replicas"),
    ({"replicas": 101, **EMPTY}, "replicas"),
    ({"storage": {"type": "HostPath"}}, r"storage\.type"),
    ({"storage": {"size": "lots"}}, r"storage\.size"),
    ({"storage": {"accessModes": ["ReadOnlyMany"]}}, r"storage\.accessModes"),
    ({"server": {"workers": 0}}, r"server\.workers"),
    ({"server": {"wyoming": {"port": 70000}}}, r"server\.wyoming\.port"),
    ({"server": {"logLevel": "TRACE"}}, r"server\.logLevel"),
    ({"server": {"bogus": 1}}, r"server\.bogus"),
    ({"voices": {"names": ["amy"], "selector": {"matchExpressions": [
        {"key": "a", "operator": "Near"}]}}}, "operator"),
    ({"service": {"type": "ExternalName"}}, r"service\.type"),
])
def test_invalid_service_specs_name_the_field(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message) as err:
        service(patch)
    assert str(err.value).startswith("invalid TTSService spec: ")


def test_missing_service_fields() -> None:
    with pytest.raises(SpecError, match="defaultVoice: Field required"):
        parse_service({"spec": {"voices": {"names": ["amy"]}}})
    with pytest.raises(SpecError, match="voices: Field required"):
        parse_service({"spec": {"defaultVoice": AMY}})


def test_http_disabled_allows_the_wyoming_port_number() -> None:
    spec = service({"server": {"http": {"enabled": False, "port": 10200}}})
    assert not spec.server.http.enabled


@pytest.mark.parametrize(("spec", "message"), [
    ({"voice": "../x", "source": {"huggingFace": {}}}, "voice: unsafe voice key"),
    ({"voice": "a..b", "source": {"huggingFace": {}}}, "voice: unsafe voice key"),
    ({"voice": "x" * 200, "source": {"huggingFace": {}}}, "voice: unsafe voice key"),
    ({"voice": "x", "source": {"url": URL}}, "URL sources need sha256"),
    ({"voice": "x", "source": {"huggingFace": {}, "local": {"path": "/v"}}},
     "source needs exactly one of huggingFace, url, local"),
    ({"voice": "x", "source": {}}, "source needs exactly one of huggingFace, url, local"),
    ({"voice": "x"}, "source: Field required"),
    ({"source": {"huggingFace": {}}}, "voice: Field required"),
    ({"voice": "x", "source": {"local": {"path": "relative"}}}, r"source\.local\.path"),
    ({"voice": "x", "source": {"huggingFace": {"path": "../../etc"}}},
     r"source\.huggingFace\.path"),
    ({"voice": "x", "source": {"huggingFace": {"repo": "no-slash"}}},
     r"source\.huggingFace\.repo"),
    ({"voice": "x", "source": {"huggingFace": {"revision": "a..b"}}},
     r"source\.huggingFace\.revision"),
    ({"voice": "x", "source": {"url": {"model": "ftp://a", "config": "https://b"}},
      "sha256": SHA}, r"source\.url\.model"),
    ({"voice": "x", "source": {"huggingFace": {}}, "sha256": {"model": "zz", "config": SHA_B}},
     r"sha256\.model"),
    ({"voice": "x", "source": {"huggingFace": {}}, "sha256": {"model": SHA_A}},
     "sha256: missing config"),
    ({"voice": "x", "engine": "kokoro", "source": {"huggingFace": {}}}, "engine"),
    ({"voice": "x", "source": {"huggingFace": {"branch": "main"}}}, "branch"),
])
def test_invalid_voice_specs_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message) as err:
        parse_voice({"metadata": {"name": "v", "namespace": NS}, "spec": spec})
    assert str(err.value).startswith("invalid TTSVoice spec: ")


def test_parse_voice_keeps_identity_and_labels() -> None:
    parsed = voice("amy", AMY, {"tier": "home"})
    assert (parsed.name, parsed.namespace, parsed.labels) == ("amy", NS, {"tier": "home"})
    assert isinstance(parsed.spec.source, HuggingFaceSource)
    assert parsed.spec.source.repo == "rhasspy/piper-voices"
    assert parse_voice(voice_body("u", "x", source={"url": {**URL, "allowUnverified": True}}))


def test_voice_source_and_sha256_are_the_manifest_records() -> None:
    url = UrlSource(URL["model"], URL["config"])
    spec = Voice(voice=AMY, source=url, sha256=Sha256(SHA_A, SHA_B))
    assert spec.manifest_entry(required=True).source is url
    assert spec.model_dump(by_alias=True)["source"] == {"url": {**URL, "allowUnverified": False}}
    assert Voice.model_validate(spec.model_dump(by_alias=True)) == spec
    with pytest.raises(ValidationError, match="URL sources need sha256"):
        Voice(voice=AMY, source=url)


@pytest.mark.parametrize(("name", "ok"), [
    ("speech", True), ("a", True), ("tts-1", True), ("a" * 56, True),
    ("a" * 57, False), ("Speech", False), ("1speech", False), ("speech-", False),
    ("spe_ech", False), ("spe.ech", False), ("", False),
])
def test_service_names_must_leave_room_for_child_names(name: str, ok: bool) -> None:
    spec = service()
    selection = select_voices(spec, voices())
    if ok:
        check_service_name(name)
        children = build_children(name, NS, spec, selection, RenderSettings())
        assert all(len(c["metadata"]["name"]) <= 63 for c in children.values() if c)
    else:
        with pytest.raises(ValueError, match="must be a DNS label"):
            build_children(name, NS, spec, selection, RenderSettings())
