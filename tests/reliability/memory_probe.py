"""Resident memory of a voice store under voice churn and long texts, in a process of its
own so that nothing but the store and its voices is measured.

Run as ``python -m tests.reliability.memory_probe churn|long DIR``; prints one JSON
object of RSS figures in MiB.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from pathlib import Path

import psutil

from chorus.server.engines.base import SynthesisParams
from chorus.server.engines.native_memory import trim_heaps
from chorus.server.engines.piper import PiperEngine
from chorus.server.voices import VoiceStore
from tests.conftest import JOE, PARAGRAPH_SENTENCES, copy_joe

BUDGET_MB = 300
"""The ``--voice-memory-mb`` of the reported churn: the default voice plus one other fit."""


def rss_mib() -> float:
    """RSS in a quiet moment, as the server holds it once idle for a second: its
    scheduler then trims the heaps (``Scheduler.on_idle``), as done here."""
    gc.collect()
    trim_heaps()
    return float(psutil.Process().memory_info().rss) / (1 << 20)


def _store(work: Path, names: list[str]) -> VoiceStore:
    for name in names:
        copy_joe(work / "voices", name)
    engine = PiperEngine(threads_per_voice=1, max_phonemes=400,
                         graph_cache_dir=work / "graph-cache")
    return VoiceStore(engine, [work / "voices"], default_voice=names[0],
                      memory_budget=BUDGET_MB << 20, rescan_interval=3600)




async def churn(work: Path, evictions: int = 20) -> dict[str, float]:
    """Default voice plus two others alternating: each switch evicts the other one."""
    store = _store(work, [JOE, "churn_a", "churn_b"])
    await store.start()
    text = PARAGRAPH_SENTENCES[0]
    figures: dict[str, float] = {"after_default": rss_mib()}
    voice = await store.acquire(store.resolve("churn_a"))
    voice.prepare(text)
    for unit in voice.prepare(text):
        voice.render(unit, SynthesisParams())
    del voice
    figures["two_voices"] = rss_mib()
    for turn in range(evictions):
        name = "churn_b" if turn % 2 == 0 else "churn_a"
        voice = await store.acquire(store.resolve(name))
        for unit in voice.prepare(text):
            voice.render(unit, SynthesisParams())
        del voice
        figures[f"eviction_{turn + 1}"] = rss_mib()
    figures["resident_voices"] = float(len(store.resident()))
    figures["reported_mib"] = sum(v.memory_bytes for v in store.resident()) / (1 << 20)
    await store.close()
    return figures


async def long_texts(work: Path, rounds: int = 3) -> dict[str, float]:
    """One voice speaking ever longer paragraphs, then short sentences again."""
    store = _store(work, [JOE])
    await store.start()
    voice = await store.acquire(store.resolve(JOE))
    figures: dict[str, float] = {"after_load": rss_mib()}

    def speak(text: str) -> None:
        for unit in voice.prepare(text):
            voice.render(unit, SynthesisParams())

    for sentence in PARAGRAPH_SENTENCES:
        speak(sentence)
    figures["short_sentences"] = rss_mib()
    for turn in range(rounds):
        # One sentence per paragraph: each is a single, ever longer model call.
        speak(", and ".join(s.rstrip(".").lower() for s in PARAGRAPH_SENTENCES[: 4 + 4 * turn])
              + ".")
        figures[f"long_{turn + 1}"] = rss_mib()
    for sentence in PARAGRAPH_SENTENCES:
        speak(sentence)
    figures["short_again"] = rss_mib()
    await store.close()
    return figures


def main() -> None:
    kind, work = sys.argv[1], Path(sys.argv[2])
    probe = churn if kind == "churn" else long_texts
    print(json.dumps(asyncio.run(probe(work)), indent=1))


if __name__ == "__main__":
    main()
