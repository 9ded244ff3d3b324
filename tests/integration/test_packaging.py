"""The distribution: folders mapped into ``chorus``, wheel contents, import layering."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import CHORUS, REPO

COMPONENTS = {"cli": "chorus/cli", "common": "chorus/common", "server": "chorus/server",
              "voice_manager": "chorus/voice_manager", "operator": "chorus/operator"}


def test_editable_install_maps_the_folders() -> None:
    import chorus.common.layout
    import chorus.server.runtime

    assert Path(chorus.server.runtime.__file__).parent == REPO / "server"
    assert Path(chorus.common.layout.__file__).parent == REPO / "common"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                    "--outdir", str(out), str(REPO)], check=True, capture_output=True,
                   timeout=300)
    [built] = out.glob("chorus_tts-*.whl")
    return built


def test_wheel_holds_every_module_under_chorus(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in COMPONENTS.items():
        for source in (REPO / folder).rglob("*.py"):
            relative = source.relative_to(REPO / folder).as_posix()
            assert f"{package}/{relative}" in names, relative
        assert f"{package}/py.typed" in names
    assert not any(n.startswith(("tests/", "bench/", "server/", "operator/")) for n in names)
    assert "chorus/__init__.py" not in names  # an implicit namespace package
    for asset in ("index.html", "app.js", "style.css"):  # the web page ships in the wheel
        assert f"chorus/server/web/{asset}" in names
    assert "chorus/voice_manager/catalog.json" in names  # the bundled voice catalog
    metadata = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: GPL-3.0-or-later" in text


def test_wheel_installs_and_imports_in_a_clean_environment(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
                   check=True, timeout=300)
    # Modules without third-party dependencies import from the wheel alone; the CLI
    # parser builds without onnxruntime, piper or wyoming being installed at all.
    code = ("import chorus.common.layout, chorus.common.options, chorus.server.errors;"
            "from chorus.cli.main import build_parser; build_parser();"
            "from chorus.voice_manager.catalog import load_bundled;"
            "assert len(load_bundled()) > 100;"
            "import chorus.server, operator;"
            "assert hasattr(operator, 'itemgetter');"
            "print(chorus.server.__file__)")
    result = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert str(env_dir) in result.stdout


def test_the_operator_folder_does_not_shadow_the_stdlib() -> None:
    """``python -m`` from the checkout puts the repository root first on sys.path."""
    result = subprocess.run([sys.executable, "-c", "import operator; print(operator.__file__)"],
                            check=True, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert not result.stdout.startswith(str(REPO)), result.stdout
    assert not (REPO / "operator" / "__init__.py").exists()


def test_the_command_does_not_import_engines_it_does_not_run() -> None:
    code = ("import sys; from chorus.cli.main import build_parser; build_parser();"
            "heavy = [m for m in ('onnxruntime', 'piper', 'wyoming', 'kopf', 'numpy')"
            " if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_server_opens_its_doors_without_libraries_it_loads_later() -> None:
    """What every start imports before ``describe`` can be answered: none of the
    libraries that load in the background (the text front end's), at the first use
    (PyAV for resampling and encoding; zeroconf, to announce) or with the first voice of
    an optional engine (kokoro-onnx and its espeak-ng bindings; torch).
    bench/startup_bench.py measures the time this keeps from the first answer."""
    later = ("av", "babel", "num2words", "markdown_it", "emoji", "kokoro_onnx", "phonemizer",
             "torch", "TTS", "zeroconf", "sentence_stream")
    code = ("import sys; from chorus.server.runtime import Runtime;"
            "from chorus.server.settings import ServerSettings; Runtime(ServerSettings());"
            f"loaded = [m for m in {later!r} if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_early_door_opens_before_numpy_onnxruntime_and_the_engines() -> None:
    """What ``chorus serve`` imports before its early door can answer ``describe``
    (:mod:`chorus.server.early_door`): none of what the runtime brings, so that a start
    with a snapshot answers in about the time Python and wyoming take to import."""
    runtime_only = ("numpy", "onnxruntime", "piper", "prometheus_client",
                    "chorus.server.engines.base", "chorus.server.voices",
                    "chorus.server.runtime", "chorus.server.wyoming_handler")
    code = ("import sys, asyncio; import chorus.cli.main; from chorus.server import startup;"
            "from chorus.server.early_door import EarlyDoor;"
            "from chorus.server.settings import ServerSettings;"
            "asyncio.run(EarlyDoor.open(ServerSettings()));"
            f"loaded = [m for m in {runtime_only!r} if m in sys.modules];"
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_help_lists_the_contract() -> None:
    result = subprocess.run([*CHORUS, "serve", "--help"], check=True, capture_output=True,
                            text=True, timeout=60)
    for flag in ("--wyoming-uri", "--voices-dir", "--default-voice", "--no-embedded-voice",
                 "--config", "CHORUS_WYOMING_URI"):
        assert flag in result.stdout


def test_version_is_the_distributions() -> None:
    from importlib import metadata

    result = subprocess.run([*CHORUS, "--version"], check=True, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == f"chorus {metadata.version('chorus-tts')}"
