"""Voices installed on first request: one download per voice, off the event loop, and a
waiter that leaves stops nothing (``chorus.server.on_demand``; the real download is
tested end to end in ``tests/integration/test_download_voices.py``)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from chorus.server.engines.piper import PiperEngine
from chorus.server.errors import VoiceDownloadFailed
from chorus.server.on_demand import OfferedVoice, OnDemandVoices
from chorus.server.voices import VoiceStore
from tests.conftest import JOE, copy_joe

OFFERED = OfferedVoice(name=JOE, language="en_US", language_name="English",
                       country="United States", quality="medium", num_speakers=1,
                       speakers=(), size=63_206_088)


class GatedInstaller:
    """Copies joe into ``directory`` once ``gate`` opens, in the calling thread;
    ``fail`` makes the next install raise instead."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.gate = threading.Event()
        self.started = threading.Event()
        self.calls: list[tuple[str, str]] = []
        self.fail = False

    def offered(self) -> list[OfferedVoice]:
        return [OFFERED]

    def install(self, name: str) -> None:
        self.calls.append((name, threading.current_thread().name))
        self.started.set()
        assert self.gate.wait(10)
        if self.fail:
            self.fail = False
            raise VoiceDownloadFailed(f"voice {name!r} could not be downloaded: boom")
        copy_joe(self.directory, name)


@pytest.fixture
def parts(tmp_path: Path) -> tuple[VoiceStore, GatedInstaller, OnDemandVoices]:
    store = VoiceStore(PiperEngine(1, 150), [tmp_path], rescan_interval=3600)
    installer = GatedInstaller(tmp_path)
    return store, installer, OnDemandVoices(installer, store)


async def _started(installer: GatedInstaller) -> None:
    assert await asyncio.to_thread(installer.started.wait, 10)


async def test_one_download_however_many_wait_and_a_leaving_waiter_stops_nothing(
        parts: tuple[VoiceStore, GatedInstaller, OnDemandVoices]) -> None:
    store, installer, on_demand = parts
    await store.refresh()
    assert on_demand.offered() == [OFFERED] and on_demand.get(JOE) == OFFERED
    waiters = [asyncio.create_task(on_demand.ensure(JOE)) for _ in range(3)]
    await _started(installer)
    await asyncio.sleep(0.05)  # the loop is free while the download runs
    waiters[0].cancel()  # that client left
    installer.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError) and results[1:] == [None, None]
    assert len(installer.calls) == 1
    assert installer.calls[0][1] != threading.current_thread().name  # not on the loop
    assert [spec.name for spec in store.installed()] == [JOE]  # rescanned at once
    assert on_demand.offered() == [] and on_demand.get(JOE) is None
    await on_demand.ensure(JOE)  # installed: nothing more to do
    assert len(installer.calls) == 1


async def test_a_failure_reaches_every_waiter_and_the_next_request_tries_again(
        parts: tuple[VoiceStore, GatedInstaller, OnDemandVoices]) -> None:
    store, installer, on_demand = parts
    await store.refresh()
    installer.fail = True
    waiters = [asyncio.create_task(on_demand.ensure(JOE)) for _ in range(2)]
    await _started(installer)
    installer.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, VoiceDownloadFailed) and "boom" in r.message for r in results)
    assert len(installer.calls) == 1 and store.installed() == []
    await on_demand.ensure(JOE)  # not remembered as failed: the hub may be right again
    assert len(installer.calls) == 2 and [s.name for s in store.installed()] == [JOE]


async def test_names_not_offered_are_left_to_the_store(
        parts: tuple[VoiceStore, GatedInstaller, OnDemandVoices]) -> None:
    store, installer, on_demand = parts
    await store.refresh()
    for name in (None, "", "en_US-nobody-medium"):
        await on_demand.ensure(name)
    assert installer.calls == []


def test_an_offered_voice_describes_itself_like_an_installed_one_plus_its_cost() -> None:
    assert OFFERED.description == ("English (United States): joe, medium "
                                   "(downloaded on first use, 63.2 MB)")
