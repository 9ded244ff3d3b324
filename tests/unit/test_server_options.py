"""The server's options are declared once (``chorus.common.server_options``): the command
line, the environment, config files, the settings object and the operator's pass-throughs
all derive from that declaration, and the CRD is held to it here."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from chorus.common.options import Bounded, OptionError, add_options, resolve_options
from chorus.common.server_options import (
    DEFAULT_STREAM_WINDOWS,
    PASS_THROUGHS,
    ServerOptions,
    command_options,
)
from chorus.common.xdg import cache_home
from chorus.operator.models import parse_service
from chorus.operator.render import build_server_settings
from chorus.server.cache import default_cache_dir
from chorus.server.cli import SAY_OPTIONS, SERVE_OPTIONS
from chorus.server.engines.piper_windows import DEFAULT_WINDOWS
from chorus.server.settings import ServerSettings
from chorus.voice_manager.catalog import default_cache_path

REPO = Path(__file__).resolve().parents[2]
SERVER_SCHEMA: dict[str, Any] = yaml.safe_load((REPO / "crds" / "ttsservices.yaml").read_text(
))["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
    "server"]
WIRING = {"image", "imagePullPolicy", "resources", "wyoming", "http", "cache", "gpu"}
"""``spec.server`` properties that shape the pod rather than set one server option."""
ADDED_WITH_SERVER_BOUNDS = {"maxSentenceChars", "maxConnections", "maxHttpConnections",
                            "idleTimeout", "maxPipelined", "maxRequestsPerClient"}


def settings(argv: list[str], environ: dict[str, str] | None = None,
             config: dict[str, Any] | None = None) -> ServerSettings:
    parser = argparse.ArgumentParser()
    add_options(parser, SERVE_OPTIONS)
    values = resolve_options(parser.parse_args(argv), SERVE_OPTIONS, environ or {}, config)
    return ServerSettings.from_options(values)


# --- the command line -------------------------------------------------------------------


def test_every_field_is_one_serve_option() -> None:
    fields = [f.name for f in dataclasses.fields(ServerSettings)]
    assert len(SERVE_OPTIONS) == len(fields)
    assert len({o.flag for o in SERVE_OPTIONS}) == len(fields)
    assert {o.env for o in SERVE_OPTIONS} == {"CHORUS_" + o.dest.upper() for o in SERVE_OPTIONS}


def test_say_takes_the_shared_options_after_its_own() -> None:
    shared = command_options("say")
    assert [o.flag for o in SAY_OPTIONS] == ["--voice", "--speaker", *(o.flag for o in shared)]
    assert {o.flag for o in shared} < {o.flag for o in SERVE_OPTIONS}
    assert "--no-http" not in {o.flag for o in shared}
    assert "--log-level" in {o.flag for o in shared}


def test_no_options_are_the_declared_defaults() -> None:
    assert settings([]) == ServerSettings()
    assert ServerSettings().stream_windows == DEFAULT_STREAM_WINDOWS
    assert DEFAULT_WINDOWS is DEFAULT_STREAM_WINDOWS  # the engine's plan is the same one


def test_inverted_switches_and_repeated_flags() -> None:
    got = settings(["--no-http", "--no-cache", "--no-embedded-voice",
                    "--no-sub-sentence-streaming", "--strict-speakers", "--cors-origin", "a",
                    "--cors-origin", "b", "--openai-voice", "alloy=x", "--voices-dir", "/v",
                    "--stream-windows", "8,24"])
    assert (got.http, got.cache, got.embedded_voice, got.sub_sentence_streaming) == (
        False, False, False, False)
    assert got.strict_speakers is True
    assert got.cors_origins == ("a", "b") and got.openai_voices == (("alloy", "x"),)
    assert got.voices_dirs == (Path("/v"),) and got.stream_windows == (8, 24)


def test_environment_and_config_file_reach_the_settings() -> None:
    got = settings([], {"CHORUS_NO_HTTP": "yes", "CHORUS_MAX_PIPELINED": "3",
                        "CHORUS_VOICES_DIR": "/a:/b"},
                   {"idle_timeout": 9, "stream_windows": [16, 32]})
    assert got.http is False and got.max_pipelined == 3 and got.idle_timeout == 9.0
    assert got.voices_dirs == (Path("/a"), Path("/b")) and got.stream_windows == (16, 32)


@pytest.mark.parametrize(("env", "message"), [
    ({"CHORUS_MAX_CONNECTIONS": "0"}, "expected a positive integer, got '0'"),
    ({"CHORUS_IDLE_TIMEOUT": "0"}, "expected a positive number, got '0'"),
    ({"CHORUS_SENTENCE_SILENCE": "11"}, "expected a number from 0 to 10, got '11'"),
    ({"CHORUS_NOISE_SCALE": "loud"}, "expected a number, got 'loud'"),
    ({"CHORUS_HTTP_PORT": "70000"}, r"expected a port number \(0-65535\)"),
    ({"CHORUS_LOG_LEVEL": "LOUD"}, "not one of"),
])
def test_bad_values_name_the_source_and_the_rule(env: dict[str, str], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        settings([], env)


# --- the operator's pass-throughs --------------------------------------------------------


def test_the_crd_declares_exactly_the_pass_throughs() -> None:
    assert set(SERVER_SCHEMA["properties"]) - WIRING == {p.key for p in PASS_THROUGHS}


@pytest.mark.parametrize("option", PASS_THROUGHS, ids=lambda p: p.key)
def test_crd_bounds_are_the_declared_ones(option: Any) -> None:
    node = SERVER_SCHEMA["properties"][option.key]
    assert node["type"] == {int: "integer", float: "number", str: "string"}[option.type]
    assert node.get("minimum") == option.minimum
    assert node.get("maximum") == option.maximum
    assert node.get("exclusiveMinimum", False) == option.exclusive_minimum
    assert (tuple(node["enum"]) if "enum" in node else None) == option.choices


@pytest.mark.parametrize("option", PASS_THROUGHS, ids=lambda p: p.key)
def test_the_server_accepts_everything_the_crd_admits(option: Any) -> None:
    """The CRD's range lies within the server's: both ends (or every choice) parse."""
    if option.choices:
        (served,) = [o for o in SERVE_OPTIONS if o.flag == "--" + option.option]
        if served.choices is None:  # a parser wider than a list (--device takes cuda:N)
            assert [served.type(choice) for choice in option.choices] == list(option.choices)
        else:
            assert set(option.choices) <= set(served.choices)
        return
    bounds = option.parse
    assert isinstance(bounds, Bounded)
    if option.minimum is not None and not option.exclusive_minimum:
        assert bounds.accepts(option.minimum)
    if option.exclusive_minimum:
        assert bounds.exclusive_minimum and bounds.minimum == option.minimum
    if option.maximum is not None:
        assert bounds.accepts(option.maximum)
    if option.key in ADDED_WITH_SERVER_BOUNDS:
        assert (option.minimum, option.maximum) == (bounds.minimum, bounds.maximum)


def test_rendered_server_json_is_read_by_the_server_as_given() -> None:
    """Every pass-through at its CRD maximum (else a distinct value) goes through
    ``server.json`` and the server's own option parsing unchanged."""
    given: dict[str, Any] = {}
    for option in PASS_THROUGHS:
        if option.choices:
            given[option.key] = option.choices[0]
        elif option.maximum is not None:
            given[option.key] = option.type(option.maximum)
        else:
            given[option.key] = option.type((option.minimum or 0) + 3)
    spec = parse_service({"spec": {"defaultVoice": "en_US-amy-low", "voices": {"names": ["a"]},
                                   "server": given}})
    config = {key.replace("-", "_"): value for key, value in build_server_settings(spec).items()}
    got = settings([], {}, config)
    for option in PASS_THROUGHS:
        assert getattr(got, option.name) == given[option.key], option.key
    assert got.default_voice == "en_US-amy-low"


def test_rendered_http_lists_are_read_by_the_server() -> None:
    http = {"publicRoutes": ["models", "voices"], "trustedProxies": ["10.42.0.0/16", "fd00::1"]}
    spec = parse_service({"spec": {"defaultVoice": "en_US-amy-low", "voices": {"names": ["a"]},
                                   "server": {"http": http}}})
    config = {key.replace("-", "_"): value for key, value in build_server_settings(spec).items()}
    got = settings([], {}, config)
    assert got.public_routes == ("models", "voices")
    assert got.trusted_proxies == (ipaddress.ip_network("10.42.0.0/16"),
                                   ipaddress.ip_network("fd00::1/128"))


@pytest.mark.parametrize(("http", "message"), [
    ({"publicRoutes": ["voices", "speech"]}, "synthesis always needs the key"),
    ({"trustedProxies": ["10.0.0.0/40"]}, "expected CIDRs"),
])
def test_bad_http_lists_are_refused_with_the_servers_message(http: dict[str, Any],
                                                              message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_service({"spec": {"defaultVoice": "en_US-amy-low", "voices": {"names": ["a"]},
                                "server": {"http": http}}})


# --- one cache home -------------------------------------------------------------------


def test_every_cache_lives_under_the_xdg_cache_home(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_home() == tmp_path
    assert default_cache_dir() == tmp_path / "chorus-cache"
    assert ServerSettings().effective_graph_cache_dir == tmp_path / "chorus" / "graphs"
    assert default_cache_path() == tmp_path / "chorus" / "catalog.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_home() == tmp_path / "home" / ".cache"


def test_server_options_is_the_shared_declaration() -> None:
    assert issubclass(ServerSettings, ServerOptions)
    assert [f.name for f in dataclasses.fields(ServerSettings)] == [
        f.name for f in dataclasses.fields(ServerOptions)]
