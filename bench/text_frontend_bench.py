"""What the text front end costs per 1,000 characters, in this process (target: 2 ms).

Run by hand from the repository root::

    .venv/bin/python -m bench.text_frontend_bench [--runs 300] [--json]

For three inputs (a plain paragraph with no markup or numbers, an LLM-style markdown
answer with emphasis, lists, a table, a code fence, links, emoji and numbers, and an SSML
document using every supported element), each of about 1,000 to 2,000 characters:

- the time to turn the whole text into segments, as a door with a whole text does;
- the same text streamed in 4-character chunks (LLM tokens), as a Wyoming stream does;
- streamed, the front end's time until the first speech segment comes out: what it adds
  to the time to first audio of a streamed paragraph (SSML is parsed whole, so it has
  none of its own).

Each figure is in milliseconds per 1,000 characters of input (the first-segment figure
in milliseconds), p50 and p99 over ``--runs`` runs after warm-up, each run with a fresh
stream so no cache of a previous run's text helps (the per-language normalisers are
built once per process, as in the server).

``--first-audio N`` adds the end-to-end view: two ``chorus serve`` processes, one as
shipped and one with every front-end step off (``--no-markdown --no-text-cleanup
--no-normalize --no-ssml``), each sent the plain paragraph and the markdown answer N
times as Wyoming streams in 4-character chunks, taking turns (the server with the front
end off is sent what the front end reads in the text, so both speak the same first
sentence, not "## Making" against "Making"); the time from
``synthesize-start`` to the first audio chunk, p50 and p99, and the ratio on/off
(target: within noise, i.e. the spread of the off runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from wyoming.tts import SynthesizeChunk, SynthesizeStart, SynthesizeStop

from bench.wyoming_bench import (
    PARAGRAPH_1000,
    RunningServer,
    chorus_spec,
    connected,
    running,
    wait_ready,
)
from chorus.server.text import Speech, TextFrontEnd

TARGET_MS_PER_1000 = 2.0
CHUNK = 4

MARKDOWN = """## Making a good cup of tea

Tea is **simple**, but a few *details* matter. The water should be fresh, and the pot \
warm. See [the guide](https://example.com/tea/guide?lang=en) for more. 🍵

1. Boil 500 ml of fresh water.
2. Warm the pot for 30 seconds, then empty it.
3. Add 1 spoon per cup, plus 1 for the pot.
4. Steep for 3 to 5 minutes; black tea likes 95°C.

| Tea | Minutes | Price |
|-----|---------|-------|
| Black | 4 | $3.50 |
| Green | 2 | $4.25 |

> A cup at 10:30 and another at 4:15 pm keeps the day going. Dr. Brown said so on the 21st.

```python
def brew(minutes: int) -> str:
    return "tea" * minutes
```

Questions? Mail tea@example.com or call +1 555-123-4567!!! About 1,250 people asked \
last year, e.g. about milk first. That is 12.5% more than in 2024. 👍
"""

SSML = """<?xml version="1.0" encoding="UTF-8"?>
<speak version="1.1" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">
  <p><s>Welcome to the <emphasis>morning</emphasis> report.</s>
     <s>It is <say-as interpret-as="time">7:30</say-as> on
        <say-as interpret-as="date" format="mdy">12/05/2026</say-as>.</s></p>
  <p><s>Today we read the <say-as interpret-as="ordinal">21</say-as> chapter.</s>
     <break time="500ms"/>
     <s><prosody rate="slow">Listen carefully,</prosody> <prosody rate="120%">then
        answer quickly.</prosody></s>
     <s>Your code is <say-as interpret-as="characters">XK7</say-as>, and the number is
        <say-as interpret-as="telephone">555-0123</say-as>.</s></p>
  <p><voice name="en_GB-alan-medium">This part is read by another voice,
     <sub alias="World Wide Web Consortium">W3C</sub> style.</voice>
     <lang xml:lang="de-DE">Guten Morgen, es ist 8 Uhr.</lang>
     <break strength="strong"/>
     <s>There are <say-as interpret-as="cardinal">1,250</say-as> listeners, and
        <say-as interpret-as="digits">42</say-as> called in.</s></p>
  <p><s>That is all for now. <mark name="end"/>Goodbye.</s></p>
</speak>
"""


def _whole(front_end: TextFrontEnd, text: str) -> None:
    front_end.process(text, language="en_US")


def _streamed(front_end: TextFrontEnd, text: str) -> None:
    stream = front_end.stream(language="en_US")
    for start in range(0, len(text), CHUNK):
        stream.feed(text[start:start + CHUNK])
    stream.finish()


def _to_first_speech(front_end: TextFrontEnd, text: str) -> float:
    """Seconds spent in the front end until it hands out its first speech segment."""
    stream = front_end.stream(language="en_US")
    spent = 0.0
    for start in range(0, len(text), CHUNK):
        began = time.perf_counter()
        out = stream.feed(text[start:start + CHUNK])
        spent += time.perf_counter() - began
        if any(isinstance(s, Speech) for s in out):
            return spent
    began = time.perf_counter()
    stream.finish()
    return spent + time.perf_counter() - began


def _timed(run: Callable[[], object], runs: int) -> list[float]:
    for _ in range(max(5, runs // 10)):
        run()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return times


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass(frozen=True)
class Row:
    input: str
    chars: int
    whole: tuple[float, float]
    """p50 and p99, ms per 1,000 characters, whole text."""
    streamed: tuple[float, float]
    """p50 and p99, ms per 1,000 characters, in chunks."""
    first: tuple[float, float]
    """p50 and p99, ms in the front end until the first speech segment (streamed)."""


def measure(front_end: TextFrontEnd, name: str, text: str, runs: int) -> Row:
    per_k = 1000 / len(text)
    whole = [t * 1000 * per_k for t in _timed(partial(_whole, front_end, text), runs)]
    streamed = [t * 1000 * per_k for t in _timed(partial(_streamed, front_end, text), runs)]
    first = [_to_first_speech(front_end, text) * 1000 for _ in range(runs)]
    return Row(name, len(text), (_p(whole, 50), _p(whole, 99)),
               (_p(streamed, 50), _p(streamed, 99)), (_p(first, 50), _p(first, 99)))


FRONT_END_OFF = ["--no-markdown", "--no-text-cleanup", "--no-normalize", "--no-ssml"]


async def _first_audio(port: int, text: str) -> float:
    """Seconds from synthesize-start to the first audio chunk of a streamed text."""
    async with connected(port) as client:
        began = time.perf_counter()
        await client.write_event(SynthesizeStart().event())
        for start in range(0, len(text), CHUNK):
            await client.write_event(SynthesizeChunk(text[start:start + CHUNK]).event())
        await client.write_event(SynthesizeStop().event())
        first: float | None = None
        while (event := await client.read_event()) is not None:
            if event.type == "audio-chunk" and first is None:
                first = time.perf_counter() - began
            elif event.type == "error":
                raise RuntimeError(f"error event: {event.data}")
            elif event.type == "synthesize-stopped":
                break
    if first is None:
        raise RuntimeError("no audio")
    return first


def reading(text: str) -> str:
    """What the front end makes of ``text``, as plain text: the server with every step
    off, sent this, speaks the same first unit as the one with the front end on sent
    ``text``, so their first audio differs by the front end's work alone."""
    segments = TextFrontEnd().process(text, language="en_US")
    return "\n\n".join(s.text for s in segments if isinstance(s, Speech))


async def _first_audio_rows(on: RunningServer, off: RunningServer, runs: int) -> list[str]:
    await wait_ready(on)
    await wait_ready(off)
    lines = []
    for name, text in (("plain", PARAGRAPH_1000), ("markdown", MARKDOWN)):
        sent = {on.port: text, off.port: reading(text)}
        times: dict[int, list[float]] = {on.port: [], off.port: []}
        for run in range(runs + 2):  # two warm-up rounds each
            for port in (on.port, off.port) if run % 2 else (off.port, on.port):
                took = await _first_audio(port, sent[port])
                if run >= 2:
                    times[port].append(took * 1000)
        a, b = times[on.port], times[off.port]
        lines.append(f"| {name} | {_p(a, 50):.0f} / {_p(a, 99):.0f} "
                     f"| {_p(b, 50):.0f} / {_p(b, 99):.0f} "
                     f"| {_p(a, 50) / _p(b, 50):.2f} |")
    return lines


def first_audio(runs: int) -> list[str]:
    """Markdown rows: first audio of streamed texts with the front end on and off."""
    with tempfile.TemporaryDirectory() as tmp, \
            running(chorus_spec(), Path(tmp) / "on.log") as on, \
            running(chorus_spec(FRONT_END_OFF), Path(tmp) / "off.log") as off:
        rows = asyncio.run(_first_audio_rows(on, off, runs))
    return ["| input | front end on p50 / p99 (ms) | off p50 / p99 (ms) | on/off p50 |",
            "|---|---:|---:|---:|", *rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--first-audio", type=int, default=0, metavar="N",
                        help="also time first audio end to end, N streams per input and "
                             "server (about 1 s each)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    front_end = TextFrontEnd()
    rows = [measure(front_end, name, text, args.runs)
            for name, text in (("plain", PARAGRAPH_1000), ("markdown", MARKDOWN),
                               ("ssml", SSML))]
    print(f"| input | chars | whole p50 / p99 (ms per 1,000 chars) | streamed in {CHUNK}-char "
          "chunks p50 / p99 | to first speech p50 / p99 (ms) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.input} | {r.chars} | {r.whole[0]:.2f} / {r.whole[1]:.2f} "
              f"| {r.streamed[0]:.2f} / {r.streamed[1]:.2f} "
              f"| {r.first[0]:.2f} / {r.first[1]:.2f} |")
    over = [r.input for r in rows if max(r.whole[0], r.streamed[0]) > TARGET_MS_PER_1000]
    print(f"target {TARGET_MS_PER_1000} ms per 1,000 characters (p50): "
          + ("met" if not over else f"missed for {', '.join(over)}"))
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    if args.first_audio:
        print("\n".join(first_audio(args.first_audio)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
