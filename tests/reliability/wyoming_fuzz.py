"""A Wyoming fuzzer against a real ``chorus serve``: framing, field types, event order.

Each case is the bytes one connection sends, with what the server owes in return,
derived from the protocol's rules (:func:`_owed`) and not from the server's code:

- **framing**: junk, non-objects, wrong ``type``/``data``, bad or lying
  ``data_length``/``payload_length``, truncated events, oversized headers, deep
  nesting, lone surrogates, huge numbers. The server owes a ``protocol-error``.
- **events**: one to five well-formed events of every kind (and unknown kinds), each
  field of the right type or of any JSON type, in any order. The server owes an
  ``error`` for every wrong field and every event out of order (``synthesize-chunk``
  or ``-stop`` outside a stream, a second ``synthesize-start``), an ``info`` for each
  ``describe`` and a ``pong`` for each ``ping``, up to the first plain ``synthesize``.
  Nothing is owed for what follows that one: when it fails, the server answers its
  ``error`` and closes the connection, as wyoming-piper does, so the events behind it
  stay unanswered by design.
- **speak**: a plain request or a whole stream with odd texts and voices, read to its
  end (``audio-stop``, ``synthesize-stopped`` or ``error``): the only cases that cost
  a synthesis, so they are rare. A connection that closes before that end is a
  violation, reported as "closed without audio-stop".

Case ``i`` of seed ``s`` is drawn from its own ``random.Random`` seeded with ``(s, i)``,
so a failure names its index and ``--replay i`` sends that one case again, alone.
``--concurrency`` connections (8 by default) run cases at once, and every
``health_every`` cases a fresh connection beside them must get ``describe`` → ``info``
and a short ``synthesize`` → audio.

Framing and event cases half-close after sending: the server answers what it read,
sees the end, cancels what is queued and closes, so a case costs milliseconds. Each must
end (the server closes) within ``CASE_BOUND`` seconds or it is a hang. A reset instead
of a close is counted but not judged: the reset may have destroyed what was owed. After
the run the process must be alive and its log free of tracebacks.

Run it alone with ``python -m tests.reliability.wyoming_fuzz --cases N --seed S``: it
starts its own server and prints a JSON summary (exit status 1 if anything failed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wyoming.event import Event, async_read_event

from chorus.server.wyoming_protocol import MAX_DATA_BYTES, MAX_LINE_BYTES, MAX_PAYLOAD_BYTES
from tests.conftest import JOE, ServerProcess

CASE_BOUND = 30.0
"""Seconds a case may take to be answered and closed: a few short syntheses at most."""
TEXT_SIZE = 16
"""Longest generated text: speakable texts are synthesized, which costs CPU."""
CONCURRENCY = 8
"""Connections running cases at once (the health check runs beside them)."""


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
    index: int = -1
    """Which case of its seed it is (``--replay INDEX``); -1 for a hand-written case."""


Rng = random.Random


# --- JSON values and texts -------------------------------------------------------------

_ALPHABETS = ("abcdefghijklmnopqrstuvwxyz ABCXYZ.,!?'\"-", "0123456789 .,:;",
              "\x00\x07\t\n\r\x1b\x7f\x85\x9f", "éüßñÅøçÿ", "你好日本語한국어",
              "😀🎉👍🏽\u200d❤️", "\u200b\u200e\u202e\u2028\ufeff\ufffd", "ɛʊʃθðŋ[]{}\\/\"")
"""Runs of characters from one script, as texts are; surrogates never (UTF-8 lacks them)."""


def _char(rng: Rng) -> str:
    if rng.random() < 0.15:  # any code point but a surrogate
        point = rng.randrange(0x110000 - 0x800)
        return chr(point + 0x800 if point >= 0xD800 else point)
    return rng.choice(rng.choice(_ALPHABETS))


def _text(rng: Rng, max_size: int) -> str:
    return "".join(_char(rng) for _ in range(rng.randint(0, max_size)))


_SPECIAL_NUMBERS = (0, 1, -1, 2**31, 2**63, -(2**64), 10**20, -(10**30), 10**400, 0.0, -0.0,
                    1e308, 5e-324, math.inf, -math.inf, math.nan)


def _leaf(rng: Rng) -> Any:
    roll = rng.randrange(6)
    if roll == 0:
        return None
    if roll == 1:
        return rng.random() < 0.5
    if roll == 2:
        return rng.choice((rng.randint(-1000, 1000), rng.randint(-(2**70), 2**70)))
    if roll == 3:
        return rng.choice((rng.uniform(-1e6, 1e6), rng.choice(_SPECIAL_NUMBERS)))
    return _text(rng, 6)


_KEY_NAMES = ("text", "voice", "name", "data", "type", "")


def _key(rng: Rng) -> str:
    return rng.choice(_KEY_NAMES) if rng.random() < 0.5 else _text(rng, 4)


def any_json(rng: Rng, depth: int = 0) -> Any:
    """A small JSON value of any type (lists and objects at most two deep)."""
    roll = rng.random()
    if depth >= 2 or roll < 0.6:
        return _leaf(rng)
    size = rng.randint(0, 3)
    if roll < 0.8:
        return [any_json(rng, depth + 1) for _ in range(size)]
    return {_key(rng): any_json(rng, depth + 1) for _ in range(size)}


_TEXTS = ("Hi.", "Hello there.", "", "   ", "\x00\x07", "😀", "...", "[[ hɛloʊ ]]",
          "Ünïcödé 你好")


def text(rng: Rng) -> str:
    return rng.choice(_TEXTS) if rng.random() < 0.5 else _text(rng, TEXT_SIZE)


def name(rng: Rng) -> str:
    if rng.random() < 0.5:
        return rng.choice((JOE, "en_US-joe-mediun", "", "../../etc/passwd"))
    return _text(rng, 8)


def _maybe_wrong(rng: Rng, right: Callable[[Rng], Any]) -> Any:
    """Mostly the right type, sometimes any JSON at all."""
    return any_json(rng) if rng.random() < 0.25 else right(rng)


def _optional(rng: Rng, fields: dict[str, Callable[[Rng], Any]]) -> dict[str, Any]:
    """Each field present or not, at random."""
    return {key: make(rng) for key, make in fields.items() if rng.random() < 0.5}


_VOICE_FIELDS: dict[str, Callable[[Rng], Any]] = {
    "name": lambda rng: _maybe_wrong(rng, name),
    "language": lambda rng: _maybe_wrong(rng, lambda r: r.choice(("en_US", "en", "xx"))),
    "speaker": lambda rng: _maybe_wrong(
        rng, lambda r: r.choice(("0", "nobody")) if r.random() < 0.5 else _text(r, 6)),
}


def voice(rng: Rng) -> Any:
    roll = rng.randrange(3)
    if roll == 0:
        return None
    return any_json(rng) if roll == 1 else _optional(rng, _VOICE_FIELDS)


def _with_voice(rng: Rng, data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "voice": voice(rng)} if rng.random() < 0.5 else data


_AUDIO_FIELDS: dict[str, Callable[[Rng], Any]] = {
    "rate": lambda rng: _maybe_wrong(rng, lambda r: r.choice((16000, 22050))),
    "width": lambda rng: _maybe_wrong(rng, lambda r: 2),
    "channels": lambda rng: _maybe_wrong(rng, lambda r: 1),
}


def _no_data(rng: Rng) -> dict[str, Any]:
    return {}


EVENT_DATA: dict[str, Callable[[Rng], dict[str, Any]]] = {
    "describe": lambda rng: {},
    "ping": lambda rng: _optional(rng, {"text": any_json}),
    "synthesize": lambda rng: _with_voice(rng, {"text": _maybe_wrong(rng, text)}),
    "synthesize-start": lambda rng: _with_voice(rng, {}),
    "synthesize-chunk": lambda rng: {"text": _maybe_wrong(rng, text)},
    "synthesize-stop": lambda rng: {},
    "audio-start": lambda rng: _optional(rng, _AUDIO_FIELDS),
    "audio-chunk": lambda rng: _optional(rng, _AUDIO_FIELDS),
    "audio-stop": lambda rng: {},
}
_KNOWN_TYPES = sorted(EVENT_DATA)
_OTHER_TYPES = ("info", "error", "pong", "synthesize-stopped", "transcribe", "run-pipeline")


def event(rng: Rng) -> Event:
    """A well-formed event of any type, each known field right or wrong."""
    roll = rng.randrange(3)
    event_type = (rng.choice(_KNOWN_TYPES) if roll == 0 else
                  rng.choice(_OTHER_TYPES) if roll == 1 else "")
    while not event_type:
        event_type = _text(rng, 12)
    data = EVENT_DATA.get(event_type, _no_data)(rng)
    if rng.random() < 0.5:  # one more key, which may replace a known field
        data[_key(rng)] = any_json(rng)
    payload = rng.randbytes(rng.randint(0, 64)) if rng.random() < 0.5 else None
    return Event(type=event_type, data=data, payload=payload)


def _dumps(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")


def framed(rng: Rng, sent: Event) -> bytes:
    """``sent`` in any of the legal framings: data inline, after the header, or split."""
    ascii_only = rng.random() < 0.5
    header: dict[str, Any] = {"type": sent.type}
    if rng.random() < 0.5:
        header["version"] = rng.choice(("1.5.2", "0.0.1"))
    inline, separate = dict(sent.data), {}
    where = rng.choice(("inline", "separate", "split"))
    if where == "separate":
        inline, separate = {}, inline
    elif where == "split":
        keys = sorted(inline)
        cut = rng.randint(0, len(keys))
        separate = {k: inline.pop(k) for k in keys[cut:]}
    if inline:
        header["data"] = inline
    data = _dumps(separate, ascii_only) if separate else b""
    if data:
        header["data_length"] = len(data)
    payload = sent.payload or b""
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
    for sent_event in sent:
        kind, data = sent_event.type, sent_event.data
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


# --- the cases -------------------------------------------------------------------------

def event_case(rng: Rng) -> Case:
    sent = [event(rng) for _ in range(rng.randint(1, 5))]
    errors, answers = _owed(sent)
    return Case("events", b"".join(framed(rng, e) for e in sent), errors=errors,
                answers=answers)


_HARMLESS = (Event("describe"), Event("ping", {"text": "x"}), Event("audio-stop"),
             Event("unknown-kind"))


def _junk_line(raw: bytes) -> bytes:
    """Bytes that cannot start a JSON object, so they are never an event by chance."""
    if not raw or raw[:1] in b" \t\r\n{":
        raw = b"#" + raw
    return raw


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


_NOT_OBJECTS = (b"[1, 2]", b'"describe"', b"42", b"null", b"true", b"[]", b"{", b"}", b"{}{}",
                b"NaN")


def _bad_length(rng: Rng) -> Any:
    """Never falsy: a missing or falsy length is read as no data at all."""
    roll = rng.randrange(6)
    if roll == 0:
        return -rng.choice((1, rng.randint(1, 2**40)))
    if roll == 1:
        return True
    if roll == 2:
        return rng.choice((rng.uniform(-1e9, 1e9) or 1.5, 0.5, 1e308, math.inf, -math.inf))
    if roll == 3:
        return _text(rng, 3) + "1"
    if roll == 4:
        return [rng.randint(-5, 10**6) for _ in range(rng.randint(1, 2))]
    return MAX_PAYLOAD_BYTES + rng.choice((1, rng.randint(1, 2**70)))


def _any_but(rng: Rng, unwanted: Callable[[Any], bool]) -> Any:
    while unwanted(value := any_json(rng)):
        pass
    return value


_FLAWS = ("junk", "not-object", "bad-type", "bad-data", "bad-length", "over-limit",
          "lying-length", "truncated", "long-line", "deep", "surrogate", "huge-number",
          "bad-utf8")


def _flawed(rng: Rng, flaw: str, where: str) -> bytes:
    """Bytes that are not a Wyoming event, flawed in the way ``flaw`` names."""
    if flaw == "junk":
        return _junk_line(rng.randbytes(rng.randint(0, 200))) + rng.choice((b"\n", b""))
    if flaw == "not-object":
        bad = rng.choice(_NOT_OBJECTS)
        return (bad + b"\n" if where == "header"
                else b'{"type": "ping", "data_length": %d}\n' % len(bad) + bad)
    if flaw == "bad-type":
        header = _optional(rng, {
            "type": lambda r: r.choice((None, "", _any_but(r, lambda v: isinstance(v, str)))),
            "data": any_json})
        return _dumps(header, True) + b"\n"
    if flaw == "bad-data":
        value = _any_but(rng, lambda v: isinstance(v, dict) or not v)
        return _dumps({"type": "synthesize", "data": value}, True) + b"\n"
    if flaw == "bad-length":
        key = rng.choice(("data_length", "payload_length"))
        return _dumps({"type": "audio-chunk", key: _bad_length(rng)}, True) + b"\n"
    if flaw == "over-limit":
        key, limit = rng.choice((("data_length", MAX_DATA_BYTES),
                                 ("payload_length", MAX_PAYLOAD_BYTES)))
        return _dumps({"type": "audio-chunk", key: limit + rng.randint(1, 10**30)},
                      True) + b"\n"
    if flaw == "lying-length":
        body = _dumps({"text": text(rng)}, rng.random() < 0.5)
        longer = rng.random() < 0.5
        claimed = (rng.randint(len(body) + 1, len(body) + 4096) if longer
                   else rng.randint(1, len(body) - 1))
        key = rng.choice(("data_length", "payload_length"))
        if key == "payload_length" and not longer:
            claimed += len(body)
        return _dumps({"type": "synthesize", key: claimed}, True) + b"\n" + body
    if flaw == "truncated":
        whole = framed(rng, event(rng))
        return whole[:rng.randint(1, len(whole) - 1)]
    if flaw == "long-line":
        size = rng.randint(MAX_LINE_BYTES + 16, 4 * MAX_LINE_BYTES)
        return b'{"type": "ping", "data": {"text": "' + b"a" * size + b'"}}\n'
    if flaw == "deep":
        nested = _deep(rng.randint(2000, 30000)).encode()
        if where == "header":  # 2 x 30,000 brackets still fit in one header line
            return b'{"type": "ping", "deep": ' + nested + b"}\n"
        body = b'{"deep": ' + nested + b"}"
        return b'{"type": "ping", "data_length": %d}\n' % len(body) + body
    if flaw == "surrogate":
        half = rng.choice(("\\ud800", "\\udfff", "\\udc00x", "\\ud83d")).encode()
        body = b'{"text": "' + half + b'"}'
        return (b'{"type": "ping", "data": ' + body + b"}\n" if where == "header" else
                b'{"type": "synthesize", "data_length": %d}\n' % len(body) + body)
    if flaw == "huge-number":
        digits = b"9" * rng.randint(4301, 20000)
        return b'{"type": "ping", "data": {"text": ' + digits + b"}}\n"
    # bad-utf8: a surrogate or a cut sequence, raw in the bytes
    raw = rng.choice((b"\xed\xa0\x80", b"\xff", b"\xc3", b"\xf0\x9f"))
    return b'{"type": "ping", "data": {"text": "' + raw + b'"}}\n'


def framing_case(rng: Rng) -> Case:
    """Bytes that are not Wyoming (after up to two harmless events): a protocol-error."""
    prefix = b"".join(framed(rng, rng.choice(_HARMLESS)) for _ in range(rng.randint(0, 2)))
    flaw = rng.choice(_FLAWS)
    bad = _flawed(rng, flaw, rng.choice(("header", "data")))
    return Case(f"framing/{flaw}", prefix + bad, protocol_error=True)


def speak_case(rng: Rng) -> Case:
    """A request read to its end: a wrong answer or a stuck synthesis shows here."""
    while not _voice_ok({"voice": (chosen := voice(rng))}):
        pass
    voice_data = {} if chosen is None else {"voice": chosen}
    if rng.random() < 0.5:
        plain = Event("synthesize", {"text": text(rng), **voice_data})
        return Case("speak/plain", framed(rng, plain), wait_for="audio-stop")
    chunks = [text(rng) for _ in range(rng.randint(0, 3))]
    sent = [Event("synthesize-start", voice_data),
            *(Event("synthesize-chunk", {"text": c}) for c in chunks),
            Event("synthesize", {"text": "".join(chunks), **voice_data}),
            Event("synthesize-stop")]
    return Case("speak/stream", b"".join(framed(rng, e) for e in sent),
                wait_for="synthesize-stopped")


def case(seed: int, index: int, speaking: bool = True) -> Case:
    """Case ``index`` of ``seed``: 12 event cases to 7 framing cases to 1 speaking case
    (a synthesis: the costly part); without ``speaking``, framing and event cases only,
    milliseconds each whatever the machine's load."""
    rng = random.Random(f"wyoming-fuzz:{seed}:{index}")
    roll = rng.randint(0, 19 if speaking else 18)
    made = (event_case(rng) if roll < 12 else framing_case(rng) if roll < 19
            else speak_case(rng))
    return Case(made.kind, made.data, made.errors, made.protocol_error, made.answers,
                made.wait_for, index)


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
    violations: int = 0
    """Cases answered without what they were owed."""
    tracebacks: int = 0
    slowest_case_s: float = 0.0
    slowest_case: int = -1
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    failed_indexes: list[int] = field(default_factory=list)
    """Indexes of the failed cases (the first 1,000), for ``--replay``."""

    def fail(self, what: str, failed: Case | None = None) -> None:
        if failed is not None and failed.index >= 0 and len(self.failed_indexes) < 1000:
            self.failed_indexes.append(failed.index)
        if len(self.failures) < 20:
            shown = "" if failed is None else (f" case {failed.index} {failed.kind}: "
                                               f"{failed.data[:300]!r}")
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
                "slowest_case_s": round(self.slowest_case_s, 2),
                "slowest_case": self.slowest_case,
                "kinds": dict(sorted(self.kinds.items())),
                "failed_indexes": self.failed_indexes, "failures": self.failures}


async def _exchange(port: int, sent: Case) -> tuple[list[Event], str]:
    """Send, then read the answers to the end.

    The outcome is ``closed``, ``reset``, ``hang`` or ``cut`` (the connection ended in
    the middle of an event). Answers are read as events, not searched for in the raw
    bytes: a header can arrive a moment before its data.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
    found: list[Event] = []
    try:
        try:
            writer.write(sent.data)
            if sent.wait_for is None:
                writer.write_eof()
            await writer.drain()
        except ConnectionError:
            return found, "reset"
        return found, await _read_answers(reader, found, sent.wait_for)
    finally:
        writer.transport.abort()


async def _read_answers(reader: asyncio.StreamReader, found: list[Event],
                        wait_for: str | None) -> str:
    """Events into ``found`` until the end, or ``wait_for`` or an ``error`` if given."""
    try:
        async with asyncio.timeout(CASE_BOUND):
            while (answer := await async_read_event(reader)) is not None:
                found.append(answer)
                if wait_for is not None and answer.type in (wait_for, "error"):
                    break
    except TimeoutError:
        return "hang"
    except ConnectionError:
        return "reset"
    except (ValueError, asyncio.IncompleteReadError):
        return "cut"
    return "closed"


def _judge(judged: Case, found: list[Event], outcome: str, summary: Summary) -> None:
    types = Counter(answer.type for answer in found)
    if types["error"]:
        summary.errors_answered += 1
    summary.closes += outcome == "closed"
    summary.resets += outcome == "reset"
    if outcome == "hang":
        summary.hangs += 1
        summary.fail("hang", judged)
        return
    if outcome == "reset":
        return  # what was owed may have been destroyed by the reset itself
    if outcome == "cut":
        summary.violations += 1
        summary.fail(f"closed in the middle of an event after {[e.type for e in found]}",
                     judged)
        return
    codes = {answer.data.get("code") for answer in found if answer.type == "error"}
    owed = Counter(judged.answers)
    missing = [kind for kind, count in owed.items() if types[kind] < count]
    if types["error"] < judged.errors or missing or (
            judged.protocol_error and "protocol-error" not in codes):
        summary.violations += 1
        summary.fail(f"owed {judged.errors} error(s) {sorted(owed.elements())}"
                     f"{' protocol-error' if judged.protocol_error else ''}, got "
                     f"{[e.type for e in found]} {sorted(map(str, codes))}", judged)
    if judged.wait_for is not None and not (types[judged.wait_for] or types["error"]):
        summary.violations += 1
        summary.fail(f"closed without {judged.wait_for}: got {dict(types)}", judged)


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
                answer = await async_read_event(reader)
                if answer is None:
                    return f"closed after {seen}"
                seen.append(answer.type)
                audio += len(answer.payload or b"") if answer.type == "audio-chunk" else 0
        if seen[0] != "info" or seen[-1] != "audio-stop" or not audio:
            return f"answered {seen} with {audio} bytes of audio"
        return None
    except (TimeoutError, OSError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    finally:
        writer.close()


@dataclass
class _Run:
    """One run's shared state: the next index to send, the figures, the server."""

    server: ServerProcess
    indexes: Iterable[int]
    seed: int
    speaking: bool
    summary: Summary
    health_every: int
    report: Path | None
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    """Every case has been sent and judged."""
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    """Notified when a case or a health check ends, and at the finish."""

    def stopped(self) -> bool:
        return self.summary.crashes > 0

    def checks_owed(self) -> int:
        return self.summary.cases // self.health_every - self.summary.health_checks

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def connection(self) -> None:
        """Send cases one after another until none are left (one connection at a time)."""
        port, summary = self.server.port, self.summary
        for index in self.indexes:  # shared: each index goes to one connection only
            async with self.changed:  # health checks stay spread over the run
                await self.changed.wait_for(lambda: self.checks_owed() <= 1 or self.stopped())
            if self.stopped():
                return
            sent = case(self.seed, index, self.speaking)
            began = time.monotonic()
            try:
                found, outcome = await _exchange(port, sent)
            except OSError as err:  # refused: the server is gone or full
                found, outcome = [], "hang"
                summary.fail(f"cannot connect: {err}")
            if (took := time.monotonic() - began) > summary.slowest_case_s:
                summary.slowest_case_s, summary.slowest_case = took, index
            summary.cases += 1
            summary.kinds[sent.kind.split("/")[0]] += 1
            _judge(sent, found, outcome, summary)
            if self.server.proc.poll() is not None:
                summary.crashes += 1
                summary.fail(f"server exited {self.server.proc.returncode} after", sent)
            await self.notify()

    async def health(self) -> None:
        """A fresh client every ``health_every`` cases, beside the fuzzing connections
        (they wait for it when it falls more than one check behind)."""
        while True:
            async with self.changed:
                await self.changed.wait_for(
                    lambda: self.finished or self.stopped() or self.checks_owed() > 0)
            if self.finished or self.stopped():
                return
            await self.check()
            await self.notify()

    async def check(self) -> None:
        summary = self.summary
        summary.health_checks += 1
        problem = await health_check(self.server.port)
        if problem is not None:
            summary.health_failures += 1
            summary.fail(f"health check {summary.health_checks} after {summary.cases} "
                         f"cases: {problem}")
        summary.seconds = time.monotonic() - self.started
        if self.report is not None:
            self.report.write_text(json.dumps({"seed": self.seed, **summary.as_dict()},
                                              indent=1))


async def run_cases(server: ServerProcess, indexes: Iterable[int], seed: int,
                    health_every: int = 200, report: Path | None = None,
                    speaking: bool = True, concurrency: int = CONCURRENCY) -> Summary:
    """Send the cases ``indexes`` of ``seed`` over ``concurrency`` connections at once.

    ``report``: a JSON file of the figures so far, rewritten at each health check.
    """
    state = _Run(server, iter(indexes), seed, speaking, Summary(), health_every, report)
    health = asyncio.create_task(state.health())
    try:
        await asyncio.gather(*(state.connection() for _ in range(concurrency)))
    finally:
        state.finished = True
        await state.notify()
        await health
    if not state.stopped():
        await state.check()  # the final one, after the last case
    summary = state.summary
    summary.seconds = time.monotonic() - state.started
    _look_for_tracebacks(server, summary)
    return summary


def _look_for_tracebacks(server: ServerProcess, summary: Summary) -> None:
    """Count them, and show the first with the log lines just before it."""
    log = server.output()
    summary.tracebacks = log.count("Traceback")
    if summary.tracebacks:
        first = log.index("Traceback")
        summary.fail("server log: " + log[max(first - 1500, 0):first + 2500])


def run(server: ServerProcess, cases: int, seed: int, health_every: int = 200,
        report: Path | None = None, speaking: bool = True,
        concurrency: int = CONCURRENCY) -> Summary:
    """Cases 0 to ``cases`` - 1 of ``seed`` (see :func:`run_cases`)."""
    return asyncio.run(run_cases(server, range(cases), seed, health_every, report,
                                 speaking, concurrency))


def serve_for_fuzzing(log: Path) -> ServerProcess:
    """The server as a user runs it, without HTTP (its own fuzzer covers that door)."""
    return ServerProcess(["--no-http"], log)


async def _replay(server: ServerProcess, seed: int, indexes: list[int],
                  speaking: bool) -> Summary:
    """The given cases alone, one at a time, each shown with what came back."""
    summary, started = Summary(), time.monotonic()
    for index in indexes:
        sent = case(seed, index, speaking)
        found, outcome = await _exchange(server.port, sent)
        summary.cases += 1
        _judge(sent, found, outcome, summary)
        print(json.dumps({"index": index, "kind": sent.kind, "sent": repr(sent.data[:2000]),
                          "owed": {"errors": sent.errors, "answers": sent.answers,
                                   "protocol_error": sent.protocol_error},
                          "outcome": outcome,
                          "got": [[e.type, e.data] for e in found if e.type != "audio-chunk"]},
                         indent=1, default=repr))
    summary.seconds = time.monotonic() - started
    _look_for_tracebacks(server, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=None, help="default: random")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY,
                        help="connections running cases at once")
    parser.add_argument("--health-every", type=int, default=200)
    parser.add_argument("--no-speaking", action="store_true",
                        help="framing and event cases only (no synthesis)")
    parser.add_argument("--replay", type=int, action="append", default=[], metavar="INDEX",
                        help="send only case INDEX of --seed, alone (may be repeated)")
    parser.add_argument("--report", type=Path, default=None,
                        help="JSON file of the figures so far, rewritten as the run goes")
    parser.add_argument("--server-log", type=Path, default=None,
                        help="keep the server's log here (default: a temporary file)")
    args = parser.parse_args(argv)
    if args.replay and args.seed is None:
        parser.error("--replay needs the --seed of the run that found the case")
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    speaking = not args.no_speaking
    with tempfile.TemporaryDirectory() as work:
        server = serve_for_fuzzing(args.server_log or Path(work) / "server.log")
        try:
            summary = (asyncio.run(_replay(server, seed, args.replay, speaking)) if args.replay else
                       run(server, args.cases, seed, args.health_every, args.report,
                           speaking, args.concurrency))
        finally:
            code = server.terminate()
    figures = {"seed": seed, **summary.as_dict(), "exit_code": code}
    print(json.dumps(figures, indent=1))
    return 0 if summary.ok and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
