"""The shared voice layout and the layered option parsing."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from chorus.common.layout import find_voice_files, is_valid_voice_name, voice_files
from chorus.common.options import (
    Option,
    OptionError,
    add_options,
    load_config_file,
    resolve_options,
)


@pytest.mark.parametrize("name", ["en_US-joe-medium", "de_DE-thorsten-high", "zh_CN-x.y+1"])
def test_valid_voice_names(name: str) -> None:
    assert is_valid_voice_name(name)


@pytest.mark.parametrize("name", ["", "../etc/passwd", "/abs", "a/b", ".hidden", "a..b",
                                  "sp ace", "x" * 200, "nul\x00"])
def test_unsafe_voice_names_are_rejected(name: str) -> None:
    assert not is_valid_voice_name(name)
    with pytest.raises(ValueError, match="invalid voice name"):
        voice_files(Path("/voices"), name)


def test_find_voice_files_needs_both_files(tmp_path: Path) -> None:
    for name in ["a-b-c.onnx", "a-b-c.onnx.json", "only-model.onnx", "only-config.onnx.json",
                 ".chorus-tmp-x.onnx", ".chorus-tmp-x.onnx.json", "README"]:
        (tmp_path / name).write_text("x")
    assert [f.name for f in find_voice_files(tmp_path)] == ["a-b-c"]
    assert find_voice_files(tmp_path / "missing") == []


OPTIONS = [
    Option("--port", "port", default=10200, type=int),
    Option("--voices-dir", "dirs", type=Path, kind="list", separator=os.pathsep),
    Option("--origin", "origins", kind="list"),
    Option("--no-http", "flag", kind="flag", default=False),
    Option("--level", "level", default="INFO", choices=["INFO", "DEBUG"]),
]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_options(parser, OPTIONS)
    return parser.parse_args(argv)


def test_precedence_cli_env_config_default() -> None:
    config = {"port": 3, "voices_dir": ["/c"], "no_http": True}
    env = {"CHORUS_PORT": "2", "CHORUS_VOICES_DIR": "/e1:/e2"}
    assert resolve_options(_parse(["--port", "1"]), OPTIONS, env, config)["port"] == 1
    values = resolve_options(_parse([]), OPTIONS, env, config)
    assert values["port"] == 2
    assert values["voices_dir"] == [Path("/e1"), Path("/e2")]
    assert values["no_http"] is True
    values = resolve_options(_parse([]), OPTIONS, {}, {})
    assert values == {"port": 10200, "voices_dir": None, "origin": None, "no_http": False,
                      "level": "INFO"}
    # Lists split on commas unless declared otherwise: URLs keep their colons.
    origins = resolve_options(_parse([]), OPTIONS, {"CHORUS_ORIGIN": "https://a:1, http://b"})
    assert origins["origin"] == ["https://a:1", "http://b"]


@pytest.mark.parametrize(("env", "message"), [
    ({"CHORUS_PORT": "ten"}, "CHORUS_PORT"),
    ({"CHORUS_NO_HTTP": "maybe"}, "true or false"),
    ({"CHORUS_LEVEL": "LOUD"}, "not one of"),
])
def test_bad_environment_values_say_which(env: dict[str, str], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        resolve_options(_parse([]), OPTIONS, env, {})


def test_config_files(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('port = 5\nvoices-dir = ["/a", "/b"]\n')
    values = resolve_options(_parse([]), OPTIONS, {}, load_config_file(toml))
    assert values["port"] == 5 and values["voices_dir"] == [Path("/a"), Path("/b")]
    bad = tmp_path / "bad.json"
    bad.write_text('{"prot": 1}')
    with pytest.raises(OptionError, match="unknown option"):
        resolve_options(_parse([]), OPTIONS, {}, load_config_file(bad))
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1")
    with pytest.raises(OptionError, match="not valid"):
        load_config_file(broken)
    with pytest.raises(OptionError, match="cannot read"):
        load_config_file(tmp_path / "missing.toml")


def test_subcommand_errors_are_reported_in_one_place(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every subcommand's refusal reads ``<full command>: error: <why>``, like argparse's
    own, with exit code 2 for bad usage or input and 1 when the work itself failed."""
    from chorus.cli.main import main

    assert main(["voices", "sync", "--only-required", "--manifest", "m", "--dest", "d"]) == 2
    assert capsys.readouterr().err == ("chorus voices sync: error: --only-required needs "
                                       "--once\n")
    monkeypatch.setenv("CHORUS_RESYNC_INTERVAL", "soon")
    assert main(["operator"]) == 2
    assert capsys.readouterr().err.startswith(
        "chorus operator: error: environment variable CHORUS_RESYNC_INTERVAL")
    assert main(["render", "-f", str(tmp_path / "missing.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("chorus render: error: ") and "missing.yaml" in err
