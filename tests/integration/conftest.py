"""Integration servers run without the audio cache unless a test turns it on.

All ``chorus serve`` processes of the suite would otherwise share one cache directory
(the user's ``~/.cache`` even), and a request answered from the cache skips the
scheduler that some tests (busy, slot release, metrics) exercise on purpose. Tests of
the cache pass ``env=CACHE_ON`` and their own ``--cache-dir``; the directory set here
only keeps a server that enables the cache without one out of ``~/.cache``.

The voices' graph parts (sub-sentence streaming) are cached in one directory for the
whole session, out of ``~/.cache`` too: the first server cuts the joe voice, the others
read the parts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.voice_servers import VoiceServer, running_server

CACHE_ON = {"CHORUS_NO_CACHE": "false"}


@pytest.fixture(scope="session", autouse=True)
def _no_audio_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    names = ("CHORUS_NO_CACHE", "CHORUS_CACHE_DIR", "CHORUS_GRAPH_CACHE_DIR")
    previous = {name: os.environ.get(name) for name in names}
    os.environ["CHORUS_NO_CACHE"] = "true"
    os.environ["CHORUS_CACHE_DIR"] = str(tmp_path_factory.mktemp("audio-cache"))
    os.environ["CHORUS_GRAPH_CACHE_DIR"] = str(tmp_path_factory.mktemp("graph-cache"))
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def voice_server() -> Iterator[VoiceServer]:
    """A loopback HTTP server with the joe voice files, and the Hugging Face API paths."""
    with running_server() as srv:
        yield srv
