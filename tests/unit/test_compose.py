"""docker-compose.yml and its voice manifest agree with the image and with each other.

The images stage brings the file up for real (tests/integration/test_images.py); these
checks run in every test run and name the mismatch instead of a container that never
turns healthy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from chorus.common.manifest import load_manifest
from chorus.voice_manager.catalog import parse_catalog
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"


def services() -> dict[str, dict[str, Any]]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    found: dict[str, dict[str, Any]] = data["services"]
    assert set(found) == {"server", "voices"}
    assert set(data["volumes"]) == {"voices", "cache"}
    return found


def defaults(text: str) -> str:
    """``${VAR:-default}`` as Compose reads it with VAR unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Mount path -> (volume or host folder, mode)."""
    found = {}
    for item in service["volumes"]:
        source, target, *mode = defaults(item).split(":")
        found[target] = (source, mode[0] if mode else "rw")
    return found


def image_command() -> list[str]:
    cmd = re.search(r"^CMD (\[.*\])$", (REPO / "Dockerfile.server").read_text(), re.MULTILINE)
    assert cmd is not None
    command: list[str] = json.loads(cmd.group(1))
    return command


def option(command: list[str], name: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == name]


def test_both_services_run_the_server_image_read_only_with_a_tmpfs() -> None:
    for name, service in services().items():
        assert service["image"] == "${CHORUS_IMAGE:-chorus-server}", name
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile.server"}, name
        assert service["read_only"] is True, name
    # the server's /tmp allows exec (Kokoro's espeak-ng is loaded from a copy there)
    assert services()["server"]["tmpfs"] == ["/tmp:exec"]
    assert services()["voices"]["tmpfs"] == ["/tmp"]


def test_the_server_reads_the_volume_the_voice_manager_writes() -> None:
    server, voices = services()["server"], services()["voices"]
    assert "command" not in server  # the image's own: both doors on 0.0.0.0
    served = option(image_command(), "--voices-dir")
    (dest,) = option(voices["command"], "--dest")
    assert mounts(voices)[dest] == ("voices", "rw")
    assert dest in served and mounts(server)[dest] == ("voices", "ro")
    (manifest,) = option(voices["command"], "--manifest")
    folder, mode = mounts(voices)[str(Path(manifest).parent)]
    assert mode == "ro" and (REPO / folder / Path(manifest).name).is_file()


def test_published_ports_are_the_ones_the_image_listens_on() -> None:
    server = services()["server"]
    command = image_command()
    wyoming = option(command, "--wyoming-uri")[0].rsplit(":", 1)[1]
    http = "5000"  # the --http-port default; the image sets only --http-host
    assert "--http-port" not in command
    assert [defaults(p).split(":") for p in server["ports"]] == [
        [wyoming, wyoming], [http, http]]
    assert option(command, "--http-host") == ["0.0.0.0"]  # noqa: S104


def test_the_caches_live_on_the_cache_volume() -> None:
    server = services()["server"]
    (cache_mount,) = [t for t, (s, _) in mounts(server).items() if s == "cache"]
    assert cache_mount == "/var/cache/chorus"  # made uid 1000's by Dockerfile.server
    assert "/var/cache/chorus" in (REPO / "Dockerfile.server").read_text()
    env = server["environment"]
    for key in ("CHORUS_CACHE_DIR", "CHORUS_GRAPH_CACHE_DIR"):
        assert env[key].startswith(cache_mount + "/"), key


def test_the_voice_managers_healthcheck_asks_its_own_status_port() -> None:
    voices = services()["voices"]
    (port,) = option(voices["command"], "--status-port")
    (host,) = option(voices["command"], "--status-host")
    check = " ".join(voices["healthcheck"]["test"])
    assert f"http://{host}:{port}/healthz" in check


def test_the_shipped_manifest_is_valid_and_names_catalog_voices() -> None:
    manifest = load_manifest((REPO / "compose" / "voices.json").read_text())
    catalog = parse_catalog((REPO / "voice_manager" / "catalog.json").read_bytes(),
                            "catalog.json")
    names = [voice.name for voice in manifest.voices]
    assert names and [n for n in names if n not in catalog] == []
