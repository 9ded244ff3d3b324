"""A Wyoming client that pipelines long requests and leaves: the server stops working
for it at once, model calls already running included (real server, real client).

Whole-sentence rendering and long sentences make each model call last seconds, so a
call left to finish would keep the CPU busy long after the close; stopped, the server
rests within a fraction of that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from wyoming.tts import Synthesize

from tests.conftest import ServerProcess, read_until, tcp_client
from tests.cpu_idle import cpu_seconds, seconds_until_idle

PIPELINED = 300
SENTENCE = "The " + ", ".join(["quick brown fox jumps over the lazy dog"] * 8) + ". "
"""~870 phoneme ids: one model call of 3-5 s on a core."""
TEXT = SENTENCE * 2
"""Two such sentences, so that both workers have a long call running."""
IDLE_WITHIN = 1.5
"""Seconds after the close by which the server must rest. A stopped call ends within
milliseconds; the rest is taking in the events still buffered. Left to finish, the
calls running at the close took ~3 s or more."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("departed") / "server.log"
    server = ServerProcess(["--workers", "2", "--no-sub-sentence-streaming",
                            "--max-sentence-phonemes", "1000",
                            "--max-pipelined", str(PIPELINED + 10),
                            "--max-requests", str(PIPELINED + 10)], log)
    yield server
    code = server.terminate()
    log_text = server.output()
    assert code == 0, log_text[-4000:]
    for bad in ("Task was destroyed", "Traceback", "ERROR"):
        assert bad not in log_text, log_text[-4000:]


async def _metrics(server: ServerProcess) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, \
            session.get(f"{server.http_url}/metrics") as response:
        text = await response.text()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if not sample.labels}


async def _when(server: ServerProcess, name: str, at_least: float, within: float) -> float:
    started = time.monotonic()
    while (value := (await _metrics(server))[name]) < at_least:
        assert time.monotonic() - started < within, f"{name} = {value}"
        await asyncio.sleep(0.05)
    return value


async def test_a_departed_pipelining_client_stops_its_running_model_calls(
        server: ServerProcess) -> None:
    before = (await _metrics(server))["chorus_cancelled_model_calls_total"]
    client = tcp_client(server.port)
    await client.connect()
    for _ in range(PIPELINED):
        await client.write_event(Synthesize(TEXT).event())
    await _when(server, "chorus_busy_workers", 2, within=30)  # both long calls running
    await client.disconnect()
    closed = cpu_seconds(server.proc.pid)
    idle_after = await seconds_until_idle(server.proc.pid, IDLE_WITHIN)
    spent = cpu_seconds(server.proc.pid) - closed
    print(f"\n{PIPELINED} pipelined requests, then a close with 2 long model calls "
          f"running: CPU idle {idle_after:.2f} s after it ({spent:.2f} CPU s)")
    assert idle_after < IDLE_WITHIN
    after = await _metrics(server)
    assert after["chorus_cancelled_model_calls_total"] >= before + 2
    for gauge in ("chorus_active_requests", "chorus_queued_units", "chorus_busy_workers"):
        assert after[gauge] == 0, (gauge, after)
    async with server.client() as fresh:  # the workers took new work
        await fresh.write_event(Synthesize("Still here.").event())
        events = await read_until(fresh, "audio-stop", limit=30)
    assert events[-1].type == "audio-stop", events[-1]
