"""The ``chorus voices`` parser: cheap to import, every option layered."""

from __future__ import annotations

import subprocess
import sys

from chorus.cli.main import build_parser


def test_importing_the_cli_loads_no_heavy_modules() -> None:
    code = ("import sys, chorus.voice_manager.cli\n"
            "heavy = [m for m in ('huggingface_hub', 'tqdm', 'urllib.request', 'http.server',"
            " 'chorus.voice_manager.sync', 'chorus.voice_manager.hub') if m in sys.modules]\n"
            "print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_voices_subcommands_are_registered() -> None:
    parser = build_parser()
    args = parser.parse_args(["voices", "sync", "--manifest", "m.json", "--dest", "d",
                              "--once", "--keep", "a", "--keep", "b"])
    assert args.voices_command == "sync"
    assert args.once is True
    assert args.keep == ["a", "b"]
    args = parser.parse_args(["voices", "pull", "en_US-amy-medium", "x", "--revision", "v1"])
    assert args.names == ["en_US-amy-medium", "x"]
    assert args.revision == "v1"
    assert parser.parse_args(["voices", "list", "--json"]).json is True
    args = parser.parse_args(["voices", "list", "--language", "en_US", "--installed",
                              "--catalog", "c.json"])
    assert (args.language, args.installed, str(args.catalog)) == ("en_US", True, "c.json")
    args = parser.parse_args(["voices", "catalog", "refresh", "--revision", "v1",
                              "--hf-endpoint", "http://127.0.0.1:1", "--retries", "0"])
    assert (args.catalog_command, args.revision, args.retries) == ("refresh", "v1", 0)
