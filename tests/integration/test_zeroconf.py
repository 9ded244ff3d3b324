"""``--zeroconf``: the Wyoming door announced over mDNS, as Home Assistant discovers it.

The browsing side is the ``zeroconf`` library on the loopback interface (as Home
Assistant's zeroconf integration resolves ``_wyoming._tcp.local.`` services): a server
bound to 127.0.0.1 announces on that interface only, so nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from chorus.server.discovery import SERVICE_TYPE
from tests.conftest import CHORUS, ServerProcess


def _name() -> str:
    return f"chorus-test-{uuid.uuid4().hex[:8]}"


async def _resolve(zeroconf: AsyncZeroconf, name: str) -> AsyncServiceInfo | None:
    info = AsyncServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}")
    return info if await info.async_request(zeroconf.zeroconf, 5000) else None


async def test_home_assistant_finds_the_server_and_it_leaves_at_shutdown(
        tmp_path: Path) -> None:
    name = _name()
    server = ServerProcess(["--no-http", "--zeroconf", "--zeroconf-name", name],
                           tmp_path / "server.log")
    browser_zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    added, removed = asyncio.Event(), asyncio.Event()

    def changed(zeroconf: object, service_type: str, name: str,
                state_change: ServiceStateChange) -> None:
        if name == full_name:
            (removed if state_change is ServiceStateChange.Removed else added).set()

    full_name = f"{name}.{SERVICE_TYPE}"
    try:
        info = await _resolve(browser_zc, name)
        assert info is not None, server.output()
        assert (info.parsed_addresses(), info.port) == (["127.0.0.1"], server.port)
        # what Home Assistant does next: connect to the announced address and describe
        client = AsyncTcpClient(info.parsed_addresses()[0], server.port)
        await client.connect()
        try:
            await client.write_event(Describe().event())
            event = await asyncio.wait_for(client.read_event(), 10)
        finally:
            await client.disconnect()
        assert event is not None and Info.is_type(event.type)
        assert Info.from_event(event).tts[0].voices
        browser = AsyncServiceBrowser(browser_zc.zeroconf, SERVICE_TYPE, handlers=[changed])
        await asyncio.wait_for(added.wait(), 10)
        assert await asyncio.to_thread(server.terminate) == 0  # the loop keeps listening
        await asyncio.wait_for(removed.wait(), 10)  # the goodbye, not a TTL expiry (120 s)
        await browser.async_cancel()
        assert "Zeroconf announcement of" in server.output()
    finally:
        server.terminate()
        await browser_zc.async_close()


def test_zeroconf_needs_a_tcp_uri_and_says_so_before_loading_voices(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CHORUS, "serve", "--no-http", "--zeroconf",
         "--wyoming-uri", f"unix://{tmp_path / 'wyoming.sock'}"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "--zeroconf needs a tcp://HOST:PORT Wyoming URI" in result.stderr
    assert "Loading voice" not in result.stderr


def test_a_server_without_zeroconf_announces_nothing(tmp_path: Path) -> None:
    server = ServerProcess(["--no-http"], tmp_path / "server.log")
    try:
        assert "zeroconf" not in server.output().lower()
    finally:
        assert server.terminate() == 0
