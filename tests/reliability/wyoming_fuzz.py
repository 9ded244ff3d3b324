"""A Wyoming fuzzer against a real ``chorus serve``: framing, field types, event order.

Hypothesis generates each case as the bytes one connection sends, with what the server
owes in return, derived from the protocol's rules (:func:`_owed`) and not from the
server's code:

- **framing**: junk, non-objects, wrong ``type``/``data``, bad or lying
  ``data_length``/``payload_length``, truncated events, oversized headers, deep
  nesting, lone surrogates, huge numbers. The server owes a ``protocol-error``.
- **events**: one to five well-formed events of every kind (and unknown kinds), each
  field of the right type or of any JSON type, in any order. The server owes an
  ``error`` for every wrong field and every event out of order (``synthesize-chunk``
  or ``-stop`` outside a stream, a second ``synthesize-start``), an ``info`` for each
  ``describe`` and a ``pong`` for each ``ping``, up to the first plain ``synthesize``
  (whose failure ends the connection, as wyoming-piper does).
- **speak**: a plain request or a whole stream with odd texts and voices, read to its
  end (``audio-stop``, ``synthesize-stopped`` or ``error``): the only cases that cost
  a synthesis, so they are rare.

Framing and event cases half-close after sending: the server answers what it read,
sees the end, cancels what is queued and closes, so a case costs milliseconds. Each must
end (the server closes) within ``CASE_BOUND`` seconds or it is a hang. Every
``health_every`` cases a fresh connection must get ``describe`` → ``info`` and a short
``synthesize`` → audio. After the run the process must be alive and its log free of
tracebacks.

Run it alone with ``python -m tests.reliability.wyoming_fuzz --cases N --seed S``: it
starts its own server and prints a JSON summary (exit status 1 if anything failed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from wyoming.event import Event, async_read_event

from chorus.server.wyoming_protocol import MAX_DATA_BYTES, MAX_LINE_BYTES, MAX_PAYLOAD_BYTES
from tests.conftest import JOE, ServerProcess

CASE_BOUND = 30.0
"""Seconds a case may take to be answered and closed: a few short syntheses at most."""
BATCH = 1000
"""Examples per hypothesis run: its record of what it generated stays small."""
TEXT_SIZE = 16
"""Longest generated text: speakable texts are synthesized, which costs CPU."""


@dataclass(frozen=True)
class Case:
    """What one connection sends, and what the server owes before it closes."""

    kind: str
    data: bytes
    errors: int = 0
    """``error`` events owed at least."""
    protocol_error: bool = False
    """A ``protocol-error`` is owed (the bytes are not Wyoming)."""
    answers: tuple[str, ...] = ()
    """Other event types owed (``info``, ``pong``), each at least as often as listed."""
    wait_for: str | None = None
    """Speak cases: read until this event type (or an ``error``), don't half-close."""


# --- JSON values and events ---------------------------------------------------------

_LEAVES = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.sampled_from([10**20, -(10**30), 10**400, 1e308, -0.0]) | st.text(max_size=6))
_KEYS = st.sampled_from(["text", "voice", "name", "data", "type", ""]) | st.text(max_size=4)
ANY_JSON = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(_KEYS, inner, max_size=3), max_leaves=4)
"""Small values: hypothesis's drawing, not the server, is most of a case's cost."""
TEXTS = st.sampled_from(["Hi.", "Hello there.", "", "   ", "\x00\x07", "😀", "...",
                         "[[ hɛloʊ ]]", "Ünïcödé 你好"]) | st.text(max_size=TEXT_SIZE)
NAMES = st.sampled_from([JOE, "en_US-joe-mediun", "", "../../etc/passwd"]) | st.text(max_size=8)


def _maybe_wrong(right: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right type, sometimes any JSON at all."""
    return st.one_of(right, right, right, ANY_JSON)


VOICES = st.none() | ANY_JSON | st.fixed_dictionaries({}, optional={
    "name": _maybe_wrong(NAMES), "language": _maybe_wrong(st.sampled_from(["en_US", "en",
                                                                             "xx"])),
    "speaker": _maybe_wrong(st.sampled_from(["0", "nobody"]) | st.text(max_size=6))})
_AUDIO = {"rate": _maybe_wrong(st.sampled_from([16000, 22050])),
          "width": _maybe_wrong(st.just(2)), "channels": _maybe_wrong(st.just(1))}
EVENT_DATA: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "describe": st.just({}),
    "ping": st.fixed_dictionaries({}, optional={"text": ANY_JSON}),
    "synthesize": st.fixed_dictionaries({"text": _maybe_wrong(TEXTS)},
                                        optional={"voice": VOICES}),
    "synthesize-start": st.fixed_dictionaries({}, optional={"voice": VOICES}),
    "synthesize-chunk": st.fixed_dictionaries({"text": _maybe_wrong(TEXTS)}),
    "synthesize-stop": st.just({}),
    "audio-start": st.fixed_dictionaries({}, optional=_AUDIO),
    "audio-chunk": st.fixed_dictionaries({}, optional=_AUDIO),
    "audio-stop": st.just({}),
}
EVENT_TYPES = st.sampled_from(sorted(EVENT_DATA)) | st.sampled_from(
    ["info", "error", "pong", "synthesize-stopped", "transcribe", "run-pipeline"]) | st.text(
        min_size=1, max_size=12)


@st.composite
def events(draw: st.DrawFn) -> Event:
    """A well-formed event of any type, each known field right or wrong."""
    event_type = draw(EVENT_TYPES)
    data = dict(draw(EVENT_DATA.get(event_type, st.just({}))))
    data.update(draw(st.dictionaries(_KEYS, ANY_JSON, max_size=1)))
    payload = draw(st.none() | st.binary(max_size=64))
    return Event(type=event_type, data=data, payload=payload)


def _dumps(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")


@st.composite
def framed(draw: st.DrawFn, event: Event) -> bytes:
    """``event`` in any of the legal framings: data inline, after the header, or split."""
    ascii_only = draw(st.booleans())
    header: dict[str, Any] = {"type": event.type}
    if draw(st.booleans()):
        header["version"] = draw(st.sampled_from(["1.5.2", "0.0.1"]))
    inline, separate = dict(event.data), {}
    where = draw(st.sampled_from(["inline", "separate", "split"]))
    if where == "separate":
        inline, separate = {}, inline
    elif where == "split":
        keys = sorted(inline)
        cut = draw(st.integers(0, len(keys)))
        separate = {k: inline.pop(k) for k in keys[cut:]}
    if inline:
        header["data"] = inline
    data = _dumps(separate, ascii_only) if separate else b""
    if data:
        header["data_length"] = len(data)
    payload = event.payload or b""
    if payload:
        header["payload_length"] = len(payload)
    return _dumps(header, ascii_only) + b"\n" + data + payload


# --- what the server owes ------------------------------------------------------------

def _is_str_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _voice_ok(data: dict[str, Any]) -> bool:
    voice = data.get("voice")
    if voice is None:
        return True
    return isinstance(voice, dict) and all(_is_str_or_none(voice.get(key))
                                           for key in ("name", "language", "speaker"))


def _owed(sent: list[Event]) -> tuple[int, tuple[str, ...]]:
    """Errors and answers the protocol's rules promise for well-formed ``sent``.

    Stops at the first plain ``synthesize``: it is a request of its own, and when it
    fails the connection ends (after an ``error`` owed only for a wrong field type).
    """
    errors, answers, streaming = 0, [], False
    for event in sent:
        kind, data = event.type, event.data
        if kind == "describe":
            answers.append("info")
        elif kind == "ping":
            answers.append("pong")
        elif kind == "synthesize" and not streaming:
            if not isinstance(data.get("text"), str) or not _voice_ok(data):
                errors += 1
            break
        elif kind == "synthesize-start":
            if streaming or not _voice_ok(data):
                errors += 1
            else:
                streaming = True
        elif kind == "synthesize-chunk":
            if not isinstance(data.get("text"), str) or not streaming:
                errors += 1
        elif kind == "synthesize-stop":
            if streaming:
                streaming = False
            else:
                errors += 1
    return errors, tuple(answers)


# --- the generators --------------------------------------------------------------------

@st.composite
def event_cases(draw: st.DrawFn) -> Case:
    sent = draw(st.lists(events(), min_size=1, max_size=5))
    errors, answers = _owed(sent)
    data = b"".join(draw(framed(event)) for event in sent)
    return Case("events", data, errors=errors, answers=answers)


_HARMLESS = st.sampled_from([Event("describe"), Event("ping", {"text": "x"}),
                             Event("audio-stop"), Event("unknown-kind")])


def _junk_line(raw: bytes) -> bytes:
    """Bytes that cannot start a JSON object, so they are never an event by chance."""
    if not raw or raw[:1] in b" \t\r\n{":
        raw = b"#" + raw
    return raw


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


_NOT_OBJECTS = st.sampled_from([b"[1, 2]", b'"describe"', b"42", b"null", b"true", b"[]",
                                b"{", b"}", b"{}{}", b"NaN"])
_BAD_LENGTHS = (st.integers(max_value=-1) | st.just(True)
                | st.floats(allow_nan=False).filter(bool) | st.text(min_size=1, max_size=4)
                | st.lists(st.integers(), min_size=1, max_size=2)
                | st.integers(min_value=MAX_PAYLOAD_BYTES + 1))
"""Never falsy: a missing or falsy length is read as no data at all."""


@st.composite
def framing_cases(draw: st.DrawFn) -> Case:
    """Bytes that are not Wyoming (after up to two harmless events): a protocol-error."""
    prefix = b"".join(draw(framed(e)) for e in draw(st.lists(_HARMLESS, max_size=2)))
    flaw = draw(st.sampled_from(["junk", "not-object", "bad-type", "bad-data", "bad-length",
                                 "over-limit", "lying-length", "truncated", "long-line",
                                 "deep", "surrogate", "huge-number", "bad-utf8"]))
    where = draw(st.sampled_from(["header", "data"]))
    bad: bytes
    if flaw == "junk":
        bad = _junk_line(draw(st.binary(max_size=200))) + draw(st.sampled_from([b"\n", b""]))
    elif flaw == "not-object":
        bad = draw(_NOT_OBJECTS)
        bad = (bad + b"\n" if where == "header"
               else b'{"type": "ping", "data_length": %d}\n' % len(bad) + bad)
    elif flaw == "bad-type":
        header = draw(st.fixed_dictionaries({}, optional={
            "type": st.none() | st.just("") | ANY_JSON.filter(lambda v: not isinstance(v, str)),
            "data": ANY_JSON}))
        if isinstance(header.get("type"), str) and header["type"]:
            header["type"] = None
        bad = _dumps(header, True) + b"\n"
    elif flaw == "bad-data":
        value = draw(ANY_JSON.filter(lambda v: not isinstance(v, dict) and bool(v)))
        bad = _dumps({"type": "synthesize", "data": value}, True) + b"\n"
    elif flaw == "bad-length":
        key = draw(st.sampled_from(["data_length", "payload_length"]))
        bad = _dumps({"type": "audio-chunk", key: draw(_BAD_LENGTHS)}, True) + b"\n"
    elif flaw == "over-limit":
        key, limit = draw(st.sampled_from([("data_length", MAX_DATA_BYTES),
                                           ("payload_length", MAX_PAYLOAD_BYTES)]))
        bad = _dumps({"type": "audio-chunk", key: limit + draw(st.integers(1, 10**30))},
                     True) + b"\n"
    elif flaw == "lying-length":
        body = _dumps({"text": draw(TEXTS)}, draw(st.booleans()))
        claimed = draw(st.integers(len(body) + 1, len(body) + 4096)
                       | st.integers(1, len(body) - 1))
        key = draw(st.sampled_from(["data_length", "payload_length"]))
        bad = _dumps({"type": "synthesize", key: claimed}, True) + b"\n" + body
        if key == "payload_length" and claimed < len(body):
            bad = _dumps({"type": "synthesize", key: claimed + len(body)}, True) + b"\n" + body
    elif flaw == "truncated":
        whole = draw(framed(draw(events())))
        bad = whole[:draw(st.integers(1, len(whole) - 1))]
    elif flaw == "long-line":
        size = draw(st.integers(MAX_LINE_BYTES + 16, 4 * MAX_LINE_BYTES))
        bad = b'{"type": "ping", "data": {"text": "' + b"a" * size + b'"}}\n'
    elif flaw == "deep":
        depth = draw(st.integers(2000, 30000))
        nested = _deep(depth).encode()
        if where == "header":  # 2 x 30,000 brackets still fit in one header line
            bad = b'{"type": "ping", "deep": ' + nested + b"}\n"
        else:
            body = b'{"deep": ' + nested + b"}"
            bad = b'{"type": "ping", "data_length": %d}\n' % len(body) + body
    elif flaw == "surrogate":
        half = draw(st.sampled_from(["\\ud800", "\\udfff", "\\udc00x", "\\ud83d"])).encode()
        body = b'{"text": "' + half + b'"}'
        bad = (b'{"type": "ping", "data": ' + body + b"}\n" if where == "header" else
               b'{"type": "synthesize", "data_length": %d}\n' % len(body) + body)
    elif flaw == "huge-number":
        digits = b"9" * draw(st.integers(4301, 20000))
        bad = b'{"type": "ping", "data": {"text": ' + digits + b"}}\n"
    else:  # bad-utf8: a surrogate or a cut sequence, raw in the bytes
        raw = draw(st.sampled_from([b"\xed\xa0\x80", b"\xff", b"\xc3", b"\xf0\x9f"]))
        bad = b'{"type": "ping", "data": {"text": "' + raw + b'"}}\n'
    return Case(f"framing/{flaw}", prefix + bad, protocol_error=True)


@st.composite
def speak_cases(draw: st.DrawFn) -> Case:
    """A request read to its end: a wrong answer or a stuck synthesis shows here."""
    voice = draw(VOICES.filter(lambda v: _voice_ok({"voice": v})))
    text = draw(TEXTS)
    voice_data = {} if voice is None else {"voice": voice}
    if draw(st.booleans()):
        event = Event("synthesize", {"text": text, **voice_data})
        return Case("speak/plain", draw(framed(event)), wait_for="audio-stop")
    chunks = draw(st.lists(TEXTS, min_size=0, max_size=3))
    sent = [Event("synthesize-start", voice_data),
            *(Event("synthesize-chunk", {"text": c}) for c in chunks),
            Event("synthesize", {"text": "".join(chunks), **voice_data}),
            Event("synthesize-stop")]
    return Case("speak/stream", b"".join(draw(framed(e)) for e in sent),
                wait_for="synthesize-stopped")


@st.composite
def _weighted(draw: st.DrawFn, speaking: bool) -> Case:
    """12 event cases to 7 framing cases to 1 speaking case (a synthesis: the costly
    part). ``one_of`` would not weigh them: it merges repeated branches."""
    roll = draw(st.integers(0, 19 if speaking else 18))
    if roll < 12:
        return draw(event_cases())
    return draw(framing_cases() if roll < 19 else speak_cases())


CASES = _weighted(speaking=True)
NO_SPEAKING = _weighted(speaking=False)
"""Framing and event cases only: milliseconds each, whatever the machine's load."""


# --- running cases -------------------------------------------------------------------

@dataclass
class Summary:
    cases: int = 0
    seconds: float = 0.0
    errors_answered: int = 0
    """Cases answered with at least one ``error`` event."""
    closes: int = 0
    """Cases the server ended by closing the connection."""
    resets: int = 0
    """Cases the server ended with a reset: its ``error`` may be lost with it."""
    crashes: int = 0
    hangs: int = 0
    health_checks: int = 0
    health_failures: int = 0
    generator_errors: int = 0
    """Hypothesis batches that its own engine ended early (the next batch goes on)."""
    violations: int = 0
    """Cases answered without what they were owed."""
    tracebacks: int = 0
    slowest_case_s: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str, case: Case | None = None) -> None:
        if len(self.failures) < 20:
            shown = "" if case is None else f" {case.kind}: {case.data[:300]!r}"
            self.failures.append(what + shown)

    @property
    def ok(self) -> bool:
        return not (self.crashes or self.hangs or self.health_failures or self.violations
                    or self.tracebacks)

    def as_dict(self) -> dict[str, Any]:
        return {"cases": self.cases, "seconds": round(self.seconds, 1),
                "cases_per_second": round(self.cases / max(self.seconds, 1e-9), 1),
                "errors_answered": self.errors_answered, "closes": self.closes,
                "resets": self.resets, "crashes": self.crashes, "hangs": self.hangs,
                "violations": self.violations, "tracebacks": self.tracebacks,
                "health_checks": self.health_checks,
                "health_failures": self.health_failures,
                "generator_errors": self.generator_errors,
                "slowest_case_s": round(self.slowest_case_s, 2),
                "kinds": dict(sorted(self.kinds.items())), "failures": self.failures}


async def _events_of(raw: bytes) -> tuple[list[Event], bool]:
    """The events in what the server said, and whether it all parsed."""
    reader = asyncio.StreamReader(limit=len(raw) + 2)
    reader.feed_data(raw)
    reader.feed_eof()
    found: list[Event] = []
    try:
        while (event := await async_read_event(reader)) is not None:
            found.append(event)
    except (ValueError, asyncio.IncompleteReadError):
        return found, False
    return found, True


async def _exchange(port: int, case: Case) -> tuple[list[Event], str]:
    """Send, then read to the end; the outcome is ``closed``, ``reset`` or ``hang``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
    received = bytearray()
    outcome = "closed"
    try:
        try:
            writer.write(case.data)
            if case.wait_for is None:
                writer.write_eof()
            await writer.drain()
        except ConnectionError:
            outcome = "reset"
        deadline = asyncio.get_running_loop().time() + CASE_BOUND
        while outcome == "closed":
            left = deadline - asyncio.get_running_loop().time()
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 16), max(left, 0.0))
            except TimeoutError:
                outcome = "hang"
                break
            except ConnectionError:
                outcome = "reset"
                break
            if not chunk:
                break
            received += chunk
            if case.wait_for is not None and _finished(received, case.wait_for):
                break
    finally:
        writer.transport.abort()
    found, _ = await _events_of(bytes(received))
    return found, outcome


def _finished(received: bytearray, wait_for: str) -> bool:
    """Cheap look for the end of a speak case in what came so far."""
    return (b'"type": "' + wait_for.encode() + b'"' in received
            or b'"type": "error"' in received)


def _judge(case: Case, found: list[Event], outcome: str, summary: Summary) -> None:
    types = Counter(event.type for event in found)
    if types["error"]:
        summary.errors_answered += 1
    summary.closes += outcome == "closed"
    summary.resets += outcome == "reset"
    if outcome == "hang":
        summary.hangs += 1
        summary.fail("hang", case)
        return
    if outcome == "reset":
        return  # what was owed may have been destroyed by the reset itself
    codes = {event.data.get("code") for event in found if event.type == "error"}
    owed = Counter(case.answers)
    missing = [kind for kind, count in owed.items() if types[kind] < count]
    if types["error"] < case.errors or missing or (
            case.protocol_error and "protocol-error" not in codes):
        summary.violations += 1
        summary.fail(f"owed {case.errors} error(s) {sorted(owed.elements())}"
                     f"{' protocol-error' if case.protocol_error else ''}, got "
                     f"{[e.type for e in found]} {sorted(map(str, codes))}", case)
    if case.wait_for is not None and not (types[case.wait_for] or types["error"]):
        summary.violations += 1
        summary.fail(f"speak case ended without {case.wait_for}: {dict(types)}", case)


async def health_check(port: int) -> str | None:
    """``None`` if a fresh client gets ``info`` and audio, else what went wrong."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as err:
        return f"cannot connect: {err}"
    try:
        writer.write(b'{"type": "describe"}\n'
                     b'{"type": "synthesize", "data": {"text": "Health check."}}\n')
        await writer.drain()
        seen: list[str] = []
        audio = 0
        async with asyncio.timeout(CASE_BOUND):
            while not seen or seen[-1] not in ("audio-stop", "error"):
                event = await async_read_event(reader)
                if event is None:
                    return f"closed after {seen}"
                seen.append(event.type)
                audio += len(event.payload or b"") if event.type == "audio-chunk" else 0
        if seen[0] != "info" or seen[-1] != "audio-stop" or not audio:
            return f"answered {seen} with {audio} bytes of audio"
        return None
    except (TimeoutError, OSError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    finally:
        writer.close()


def run(server: ServerProcess, cases: int, seed: int, health_every: int = 200,
        report: Path | None = None, strategy: st.SearchStrategy[Case] = CASES) -> Summary:
    """Send ``cases`` generated cases to ``server``; hypothesis in batches of ``BATCH``.

    ``report``: a JSON file of the figures so far, rewritten at each health check.
    """
    summary = Summary()
    loop = asyncio.new_event_loop()
    port = server.port
    started = time.monotonic()

    def one(case: Case) -> None:
        if summary.crashes or summary.cases >= cases:
            return
        began = time.monotonic()
        try:
            found, outcome = loop.run_until_complete(_exchange(port, case))
        except OSError as err:  # refused: the server is gone or full
            found, outcome = [], "hang"
            summary.fail(f"cannot connect: {err}")
        summary.slowest_case_s = max(summary.slowest_case_s, time.monotonic() - began)
        summary.cases += 1
        summary.kinds[case.kind.split("/")[0]] += 1
        _judge(case, found, outcome, summary)
        if server.proc.poll() is not None:
            summary.crashes += 1
            summary.fail(f"server exited {server.proc.returncode} after", case)
        elif summary.cases % health_every == 0:
            summary.health_checks += 1
            problem = loop.run_until_complete(health_check(port))
            if problem is not None:
                summary.health_failures += 1
                summary.fail(f"health check {summary.health_checks}: {problem}")
            if report is not None:
                summary.seconds = time.monotonic() - started
                report.write_text(json.dumps({"seed": seed, **summary.as_dict()}, indent=1))

    try:
        batch = 0
        while summary.cases < cases and not summary.crashes:
            test = settings(max_examples=min(BATCH, cases - summary.cases), database=None,
                            deadline=None, phases=[Phase.generate],
                            suppress_health_check=list(HealthCheck))(given(strategy)(one))
            try:
                hypothesis_seed(seed * 1_000_003 + batch)(test)()
            except Exception as err:  # noqa: BLE001 - the engine's own, seen in 6.170
                summary.generator_errors += 1
                summary.fail(f"hypothesis batch {batch} ended early: {err!r}")
            batch += 1
        if not summary.crashes:
            summary.health_checks += 1
            problem = loop.run_until_complete(health_check(port))
            if problem is not None:
                summary.health_failures += 1
                summary.fail(f"final health check: {problem}")
    finally:
        loop.close()
    summary.seconds = time.monotonic() - started
    summary.tracebacks = server.output().count("Traceback")
    if summary.tracebacks:
        summary.fail("server log: " + server.output()[-2000:])
    return summary


def serve_for_fuzzing(log: Path) -> ServerProcess:
    """The server as a user runs it, without HTTP (its own fuzzer covers that door)."""
    return ServerProcess(["--no-http"], log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=None, help="default: random")
    parser.add_argument("--health-every", type=int, default=200)
    parser.add_argument("--report", type=Path, default=None,
                        help="JSON file of the figures so far, rewritten as the run goes")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    with tempfile.TemporaryDirectory() as work:
        server = serve_for_fuzzing(Path(work) / "server.log")
        try:
            summary = run(server, args.cases, seed, args.health_every, args.report)
        finally:
            code = server.terminate()
    figures = {"seed": seed, **summary.as_dict(), "exit_code": code}
    print(json.dumps(figures, indent=1))
    return 0 if summary.ok and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
