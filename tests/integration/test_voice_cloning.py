"""Cloning and deleting voices through a real ``chorus serve`` (HTTP on loopback) and the
real ``chorus voices clone``/``delete`` commands, with clips made in the test.

This suite has no XTTS engine (coqui-tts is not installed), which is the state in which
cloning must say what to install; every refusal that comes before that answer (the
form, the name, the clips) is checked here over HTTP. Cloned voices that speak are the
XTTS tests' business (``tests/integration/test_xtts_cloning.py``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chorus.common.clips import check_clip
from chorus.common.clones import CloneRequest, write_clone
from chorus.common.xtts import CLIP_MAX_BYTES, XttsEntry, entry_path
from chorus.server.voice_cloning import MAX_UPLOAD_BYTES
from tests.clip_files import clip, png, random_bytes, video_only
from tests.conftest import CHORUS, JOE, ServerProcess, copy_joe

XTTS_HINT = "pip install 'chorus-tts[xtts]'"


@pytest.fixture(scope="module")
def clone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("clone-voices")
    copy_joe(directory, "en_GB-joe-copy")
    return directory


@pytest.fixture(scope="module")
def cloning_server(clone_dir: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("clone-logs") / "server.log"
    proc = ServerProcess(["--voices-dir", str(clone_dir), "--rescan-interval", "0.5"], log)
    yield proc
    assert proc.terminate() == 0, proc.output()


@pytest.fixture
async def http(cloning_server: ServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cloning_server.http_url) as session:
        yield session


def clone_form(name: str | None = "kim", clips: tuple[bytes, ...] = (),
               language: str | None = "en", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for index, data in enumerate(clips or (clip(),), start=1):
        form.add_field("clip", data, filename=f"take{index}.wav",
                       content_type="application/octet-stream")
    for key, value in (("name", name), ("language", language), *fields.items()):
        if value is not None:
            form.add_field(key, value)
    return form


async def clone(session: aiohttp.ClientSession, data: Any,
                ) -> tuple[int, dict[str, Any]]:
    async with session.post("/voices/clone", data=data) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


async def test_without_the_xtts_engine_the_answer_names_the_extra(
        http: aiohttp.ClientSession, clone_dir: Path) -> None:
    status, body = await clone(http, clone_form("kim", (clip("mp3"), clip("ogg"))))
    assert status == 501, body
    assert body["error"]["code"] == "voice-cloning-unavailable"
    assert XTTS_HINT in body["error"]["message"]
    assert body["error"]["type"] == "server_error"
    assert not entry_path(clone_dir, "kim").exists()
    assert not (clone_dir / "kim.clip1.wav").exists()


@pytest.mark.parametrize(("data", "status", "code", "words"), [
    (clip("wav", seconds=1.0), 422, "invalid-clip", "1.0 s long"),
    (clip("flac", seconds=31.0, rate=16_000, channels=1), 422, "invalid-clip",
     "longer than 30 s"),
    (clip("mp3", kind="silence"), 422, "invalid-clip", "silent"),
    (random_bytes(), 415, "unsupported-clip", "not audio"),
    (png(), 415, "unsupported-clip", "png"),
    (video_only(), 415, "unsupported-clip", "mp4"),
    (clip("wav", seconds=10.0)[:300_000], 422, "invalid-clip", "truncated"),
], ids=["too-short", "too-long", "silent", "random-bytes", "png", "video-without-audio",
        "truncated"])
async def test_bad_clips_are_refused_with_the_reason(
        http: aiohttp.ClientSession, data: bytes, status: int, code: str,
        words: str) -> None:
    got, body = await clone(http, clone_form("kim", (clip(), data)))
    assert got == status, body
    assert body["error"]["code"] == code
    assert body["error"]["param"] == "clip"
    assert body["error"]["message"].startswith("clip 2 (take2.wav)")
    assert words in body["error"]["message"]


@pytest.mark.parametrize(("form", "param", "words"), [
    (lambda: clone_form(name=None), "name", "field required"),
    (lambda: clone_form(name="../../etc/passwd"), "name", "not a voice name"),
    (lambda: clone_form(language="tlh"), "language", "choose from en, es"),
    (lambda: clone_form(languages="de,xx"), "languages", "'xx'"),
    (lambda: clone_form(description="x" * 600), "description", "500"),
    (lambda: clone_form(speaker="kim"), "speaker", "not a field"),
    (lambda: clone_form(clips=(clip(),) * 6), "clip", "at most 5"),
], ids=["no-name", "path-name", "language", "languages", "description", "unknown-field",
        "six-clips"])
async def test_bad_fields_are_422_naming_the_field(http: aiohttp.ClientSession, form: Any,
                                                   param: str, words: str) -> None:
    status, body = await clone(http, form())
    assert status == 422, body
    assert body["error"]["code"] == "bad-request"
    assert body["error"]["param"] == param
    assert words in body["error"]["message"]


async def test_a_form_without_clips_is_422(http: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("name", "kim")
    form.add_field("language", "en")
    form.add_field("description", "x", content_type="text/plain")  # multipart, no clip
    status, body = await clone(http, form)
    assert status == 422 and "clip: field required" in body["error"]["message"], body


async def test_a_body_that_is_not_a_form_is_415_and_a_broken_form_400(
        http: aiohttp.ClientSession) -> None:
    async with http.post("/voices/clone", json={"name": "kim"}) as response:
        body = await response.json()
        assert response.status == 415, body
        assert "multipart/form-data" in body["error"]["message"]
    async with http.post("/voices/clone", data=b"no parts at all",
                         headers={"Content-Type": "multipart/form-data"}) as response:
        body = await response.json()
        assert response.status == 400, body
        assert body["error"]["code"] == "bad-request"


async def test_a_name_taken_by_any_installed_voice_is_409(
        http: aiohttp.ClientSession) -> None:
    for name in (JOE, "en_GB-joe-copy"):  # the embedded voice, one in the directory
        status, body = await clone(http, clone_form(name))
        assert status == 409, body
        assert body["error"]["code"] == "voice-exists"
        assert "piper voice" in body["error"]["message"]


async def test_a_clip_over_the_limit_is_413(http: aiohttp.ClientSession) -> None:
    status, body = await clone(http, clone_form("kim", (b"\0" * (CLIP_MAX_BYTES + 1),)))
    assert status == 413, body
    assert body["error"]["code"] == "clip-too-large"
    assert "larger than 16777216 bytes" in body["error"]["message"]


def test_an_upload_announced_too_large_is_refused_before_it_is_sent(
        cloning_server: ServerProcess) -> None:
    """Only the headers go out: the answer comes without the server waiting for a body."""
    assert cloning_server.http_port is not None
    with socket.create_connection(("127.0.0.1", cloning_server.http_port), timeout=10) as sock:
        sock.sendall((f"POST /voices/clone HTTP/1.1\r\nHost: x\r\n"
                      "Content-Type: multipart/form-data; boundary=b\r\n"
                      f"Content-Length: {MAX_UPLOAD_BYTES + 1}\r\n\r\n").encode())
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert time.monotonic() - started < 5
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer
    assert json.loads(body)["error"]["code"] == "clip-too-large"


async def test_delete_refuses_what_is_not_cloned(http: aiohttp.ClientSession,
                                                 clone_dir: Path) -> None:
    entry_path(clone_dir, "managed").write_bytes(
        XttsEntry(("managed.clip1.wav",), "en", origin="manifest").to_json())
    for name, status, code, words in (
            (JOE, 409, "voice-not-deletable", "piper voice"),
            ("en_GB-joe-copy", 409, "voice-not-deletable", "piper voice"),
            ("managed", 409, "voice-not-deletable", "voice manager"),
            ("nobody", 404, "unknown-voice", "not installed")):
        async with http.delete(f"/voices/{name}") as response:
            body = await response.json()
            assert response.status == status, body
            assert body["error"]["code"] == code
            assert words in body["error"]["message"]
    assert entry_path(clone_dir, "managed").exists()
    assert (clone_dir / "en_GB-joe-copy.onnx").exists()


async def test_delete_removes_a_cloned_voice(http: aiohttp.ClientSession,
                                             clone_dir: Path) -> None:
    write_clone(clone_dir, CloneRequest("sam", "en"), [check_clip(clip(), "c").wav])
    async with http.delete("/voices/sam") as response:
        assert response.status == 204, await response.text()
    assert not entry_path(clone_dir, "sam").exists()
    assert not (clone_dir / "sam.clip1.wav").exists()
    async with http.delete("/voices/sam") as response:
        assert response.status == 404


def test_cloning_turned_off_is_403(tmp_path: Path) -> None:
    proc = ServerProcess(["--voices-dir", str(tmp_path), "--no-voice-cloning"],
                         tmp_path / "server.log")
    try:
        async def ask() -> list[tuple[int, str]]:
            async with aiohttp.ClientSession(proc.http_url) as session:
                answers = []
                async with session.post("/voices/clone", data=clone_form()) as response:
                    answers.append((response.status, (await response.json())["error"]["code"]))
                async with session.delete("/voices/kim") as response:
                    answers.append((response.status, (await response.json())["error"]["code"]))
                return answers
        assert asyncio.run(ask()) == [(403, "voice-cloning-disabled")] * 2
    finally:
        assert proc.terminate() == 0, proc.output()


# -- the CLI ---------------------------------------------------------------------------


def voices(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHORUS, "voices", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_cli_clone_writes_the_voice_and_delete_removes_it(tmp_path: Path) -> None:
    clips = []
    for fmt in ("flac", "mp3"):
        path = tmp_path / f"take.{fmt}"
        path.write_bytes(clip(fmt))
        clips += ["--clip", str(path)]
    dest = tmp_path / "voices"
    done = voices("clone", "kim", *clips, "--language", "de", "--languages", "en,fr",
                  "--description", "Kim", "--dest", str(dest))
    assert done.returncode == 0, done.stderr
    assert "kim: cloned into" in done.stderr
    assert "checkpoint is not in" in done.stderr  # a warning: it may come later
    entry = XttsEntry.read(entry_path(dest, "kim"))
    assert entry == XttsEntry(("kim.clip1.wav", "kim.clip2.wav"), "de", ("de", "en", "fr"),
                              description="Kim")
    again = voices("clone", "kim", "--clip", clips[1], "--language", "en", "--dest", str(dest))
    assert again.returncode == 1
    assert "xtts voice called 'kim' is already installed" in again.stderr
    gone = voices("delete", "kim", "--dest", str(dest))
    assert gone.returncode == 0, gone.stderr
    assert not entry_path(dest, "kim").exists()
    assert voices("delete", "kim", "--dest", str(dest)).returncode == 1


@pytest.mark.parametrize(("make", "args", "words"), [
    (lambda: clip(kind="silence"), ["--language", "en"], "silent"),
    (png, ["--language", "en"], "accepted: wav, flac, mp3, ogg"),
    (clip, ["--language", "tlh"], "--language: 'tlh'"),
    (clip, [], "--language: field required"),
], ids=["silent", "png", "language", "no-language"])
def test_cli_refuses_bad_input_with_exit_2(tmp_path: Path, make: Any, args: list[str],
                                           words: str) -> None:
    path = tmp_path / "take.wav"
    path.write_bytes(make())
    done = voices("clone", "kim", "--clip", str(path), *args, "--dest", str(tmp_path))
    assert done.returncode == 2, done.stderr
    assert "chorus voices clone: error:" in done.stderr and words in done.stderr
    assert not entry_path(tmp_path, "kim").exists()


def test_cli_delete_refuses_a_piper_voice(tmp_path: Path) -> None:
    copy_joe(tmp_path, "joe")
    done = voices("delete", "joe", "--dest", str(tmp_path))
    assert done.returncode == 1
    assert "is a piper voice" in done.stderr
    assert (tmp_path / "joe.onnx").exists()
