"""``chorus serve`` and ``chorus say``: the server component's subcommands.

Importing this module is cheap (argparse and the option declarations only); the
engine, onnxruntime and wyoming are imported when a subcommand actually runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from chorus.common.options import (
    CommandError,
    Option,
    add_config,
    add_options,
    bounded_float,
    command,
    port,
    positive_float,
    positive_int,
    resolve_command,
    setup_logging,
)

from .settings import ServerSettings

__all__ = ["register"]


_DEFAULTS = ServerSettings()


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _window_sizes(text: str) -> tuple[int, ...]:
    """``16,32,64`` -> ``(16, 32, 64)``: frames per streaming window, the last repeating."""
    parts = [p.strip() for p in text.strip().strip("[]()").split(",") if p.strip()]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = ()
    if not sizes or any(size < 1 or size > 100_000 for size in sizes):
        raise argparse.ArgumentTypeError(
            f"expected frame counts separated by commas, e.g. 16,32,64,128, got {text!r}")
    return sizes


def _voice_mapping(text: str) -> tuple[str, str]:
    """``alloy=en_US-joe-medium`` -> ``("alloy", "en_US-joe-medium")``."""
    name, sep, voice = text.partition("=")
    if not sep or not name.strip() or not voice.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VOICE, got {text!r}")
    return name.strip(), voice.strip()


VOICE_OPTIONS = [
    Option("--voices-dir", "Piper voices directory (<voice>.onnx + .onnx.json); repeatable "
           "(env: colon-separated)", type=Path, kind="list", metavar="DIR",
           separator=os.pathsep),
    Option("--no-embedded-voice", "do not use the embedded en_US-joe-medium voice",
           kind="flag", default=False),
    Option("--default-voice", "voice used when a request names none", metavar="NAME"),
    Option("--workers", "inference worker threads (default: one per usable CPU)",
           type=positive_int, metavar="N"),
    Option("--threads-per-worker", "onnxruntime threads per model call",
           default=_DEFAULTS.threads_per_worker,
           type=positive_int, metavar="N"),
    Option("--max-sentence-phonemes", "split sentences longer than this many phonemes",
           default=_DEFAULTS.max_sentence_phonemes, type=positive_int, metavar="N"),
    Option("--max-text-chars", "longest text accepted in one request; a Wyoming stream "
           "has no total and may run this far ahead of the speech",
           default=_DEFAULTS.max_text_chars,
           type=positive_int, metavar="N"),
    Option("--max-sentence-chars", "longest text spoken as one sentence (text with no "
           "sentence end is broken at a space)",
           default=_DEFAULTS.max_sentence_chars, type=positive_int, metavar="N"),
    Option("--voice-memory-mb", "memory budget for resident voices (LRU beyond it)",
           default=_DEFAULTS.voice_memory_mb, type=positive_int, metavar="MB"),
    Option("--stream-windows", "frames per window when streaming below sentence level "
           "(256 samples each; the last size repeats; small sizes are skipped for "
           "sentences whose listener has enough audio ahead)",
           default=",".join(map(str, _DEFAULTS.stream_windows)), type=_window_sizes,
           metavar="N,N,..."),
    Option("--no-sub-sentence-streaming", "render whole sentences instead of windows "
           "(same audio, later first sound)", kind="flag", default=False),
    Option("--graph-cache-dir", "where voices' graph parts for streaming are cached "
           "(default: chorus/graphs under $XDG_CACHE_HOME or ~/.cache)", type=Path,
           metavar="DIR"),
    Option("--length-scale", "default phoneme length scale (>1 is slower speech)",
           type=positive_float, metavar="X"),
    Option("--noise-scale", "default generator noise (0 makes output deterministic)",
           type=_float, metavar="X"),
    Option("--noise-w-scale", "default phoneme width noise", type=_float, metavar="X"),
    Option("--sentence-silence", "seconds of silence after each sentence",
           default=_DEFAULTS.sentence_silence, type=bounded_float(0, 10), metavar="S"),
    Option("--log-level", "logging level", default="INFO",
           choices=["DEBUG", "INFO", "WARNING", "ERROR"]),
]

SERVE_OPTIONS = [
    Option("--wyoming-uri", "where to serve Wyoming: tcp://HOST:PORT or unix://PATH",
           default=_DEFAULTS.wyoming_uri, metavar="URI"),
    Option("--max-requests", "requests in progress before new ones are refused as busy",
           default=_DEFAULTS.max_requests, type=positive_int, metavar="N"),
    Option("--rescan-interval", "seconds between voices-directory rescans",
           default=_DEFAULTS.rescan_interval,
           type=positive_float, metavar="S"),
    Option("--shutdown-grace", "seconds requests may finish after SIGTERM",
           default=_DEFAULTS.shutdown_grace,
           type=positive_float, metavar="S"),
    Option("--client-timeout", "seconds a client may leave audio unread before it is "
           "dropped", default=_DEFAULTS.client_timeout, type=positive_float, metavar="S"),
    Option("--stream-idle-timeout", "seconds an open stream may go without text before it "
           "is dropped", default=_DEFAULTS.stream_idle_timeout, type=positive_float, metavar="S"),
    Option("--idle-timeout", "seconds a Wyoming connection with no request in progress may "
           "send nothing before it is closed", default=_DEFAULTS.idle_timeout,
           type=positive_float, metavar="S"),
    Option("--max-connections", "open Wyoming connections; at the limit the longest-idle "
           "one is closed to admit a new one, and a newcomer is refused as busy only when "
           "all are busy", default=_DEFAULTS.max_connections, type=positive_int,
           metavar="N"),
    Option("--max-http-connections", "open HTTP connections, with the same policy as "
           "--max-connections (503 when all are busy)",
           default=_DEFAULTS.max_http_connections, type=positive_int, metavar="N"),
    Option("--max-pipelined", "events a Wyoming connection may queue behind its request "
           "in progress; one more is refused as busy and the connection closed",
           default=_DEFAULTS.max_pipelined, type=positive_int, metavar="N"),
    Option("--http-keepalive-timeout", "seconds an HTTP connection may stay idle or take "
           "to send its request headers", default=_DEFAULTS.http_keepalive_timeout,
           type=positive_float, metavar="S"),
    Option("--http-body-timeout", "seconds an HTTP client may take to send a request body",
           default=_DEFAULTS.http_body_timeout, type=positive_float, metavar="S"),
    Option("--http-host", "address the HTTP API listens on",
           default=_DEFAULTS.http_host, metavar="HOST"),
    Option("--http-port", "port of the HTTP API", default=_DEFAULTS.http_port, type=port,
           metavar="PORT"),
    Option("--no-http", "do not serve the HTTP API", kind="flag", default=False),
    Option("--api-key", "require 'Authorization: Bearer KEY' on the HTTP API "
           "(except /health/*)", metavar="KEY"),
    Option("--cors-origin", "browser origin allowed to call the HTTP API ('*' for any); "
           "repeatable", kind="list", metavar="ORIGIN"),
    Option("--openai-voice", "map an OpenAI voice name to an installed voice for "
           "/v1/audio/speech, e.g. alloy=en_US-joe-medium; repeatable",
           type=_voice_mapping, kind="list", metavar="NAME=VOICE"),
    Option("--cache-dir", "directory of the HTTP audio cache (default: chorus-cache under "
           "$XDG_CACHE_HOME or ~/.cache)", type=Path, metavar="DIR"),
    Option("--cache-max-mb", "size limit of the audio cache; least recently used entries "
           "go first", default=_DEFAULTS.cache_max_mb, type=positive_float, metavar="MB"),
    Option("--cache-ttl", "seconds a cached answer is served after it was made",
           default=_DEFAULTS.cache_ttl, type=positive_float, metavar="S"),
    Option("--no-cache", "do not cache HTTP audio", kind="flag", default=False),
    Option("--max-requests-per-client", "HTTP requests one client (address, or API key) "
           "may have in progress; more get 429", default=_DEFAULTS.max_requests_per_client,
           type=positive_int, metavar="N"),
    Option("--strict-speakers", "refuse an unknown speaker instead of speaking with "
           "speaker 0 and logging a warning", kind="flag", default=False),
]

SAY_OPTIONS = [
    Option("--voice", "voice name (default: the default voice)", metavar="NAME"),
    Option("--speaker", "speaker name or id for multi-speaker voices", metavar="SPEAKER"),
]


def register(subparsers: Any) -> None:
    """Add ``serve`` and ``say`` to the ``chorus`` command."""
    serve = subparsers.add_parser("serve", help="run the speech server (Wyoming and HTTP)")
    add_config(serve)
    add_options(serve, SERVE_OPTIONS + VOICE_OPTIONS)
    command(serve, _run_serve)

    say = subparsers.add_parser("say", help="synthesize TEXT once and write a WAV file")
    say.add_argument("text", metavar="TEXT", help="text to speak ('-' reads stdin)")
    say.add_argument("-o", "--output", default="-", metavar="FILE",
                     help="WAV file to write ('-' for stdout, the default)")
    add_config(say)
    add_options(say, SAY_OPTIONS + VOICE_OPTIONS)
    command(say, _run_say)


def _resolve(args: argparse.Namespace, options: list[Option]) -> dict[str, Any]:
    return resolve_command(args, options, SERVE_OPTIONS + SAY_OPTIONS + VOICE_OPTIONS)


def _settings(values: dict[str, Any]) -> Any:
    from .settings import ServerSettings

    fields = {
        "voices_dirs": tuple(values["voices_dir"] or ()),
        "embedded_voice": not values["no_embedded_voice"],
        "default_voice": values["default_voice"],
        "workers": values["workers"],
        "threads_per_worker": values["threads_per_worker"],
        "max_sentence_phonemes": values["max_sentence_phonemes"],
        "max_text_chars": values["max_text_chars"],
        "max_sentence_chars": values["max_sentence_chars"],
        "voice_memory_mb": values["voice_memory_mb"],
        "stream_windows": (_window_sizes(values["stream_windows"])
                           if isinstance(values["stream_windows"], str)
                           else tuple(values["stream_windows"])),
        "sub_sentence_streaming": not values["no_sub_sentence_streaming"],
        "graph_cache_dir": values["graph_cache_dir"],
        "length_scale": values["length_scale"],
        "noise_scale": values["noise_scale"],
        "noise_w_scale": values["noise_w_scale"],
        "sentence_silence": values["sentence_silence"],
    }
    for key in ("wyoming_uri", "max_requests", "rescan_interval", "shutdown_grace",
                "client_timeout", "stream_idle_timeout", "idle_timeout", "max_connections",
                "max_http_connections", "max_pipelined", "http_keepalive_timeout",
                "http_body_timeout", "http_host", "http_port", "api_key", "cache_dir",
                "cache_max_mb", "cache_ttl", "max_requests_per_client"):
        if key in values:
            fields[key] = values[key]
    if "no_http" in values:
        fields["http"] = not values["no_http"]
    if "no_cache" in values:
        fields["cache"] = not values["no_cache"]
    if "strict_speakers" in values:
        fields["strict_speakers"] = values["strict_speakers"]
    if "cors_origin" in values:
        fields["cors_origins"] = tuple(values["cors_origin"] or ())
    if "openai_voice" in values:
        fields["openai_voices"] = tuple(values["openai_voice"] or ())
    return ServerSettings(**fields)


def _run_serve(args: argparse.Namespace) -> int:
    values = _resolve(args, SERVE_OPTIONS + VOICE_OPTIONS)
    setup_logging(values["log_level"])
    from .errors import ChorusError
    from .runtime import serve

    try:
        asyncio.run(serve(_settings(values)))
    except (ChorusError, ValueError, OSError) as err:
        raise CommandError(str(err)) from err
    return 0


def _run_say(args: argparse.Namespace) -> int:
    values = _resolve(args, SAY_OPTIONS + VOICE_OPTIONS)
    setup_logging(values["log_level"] if values["log_level"] != "INFO" else "WARNING")
    text = sys.stdin.read() if args.text == "-" else args.text
    if args.output == "-" and sys.stdout.isatty():
        raise CommandError("refusing to write audio to a terminal; use -o FILE")
    from .errors import ChorusError
    from .say import say

    try:
        asyncio.run(say(_settings(values), text, values["voice"], values["speaker"],
                        args.output))
    except (ChorusError, OSError) as err:
        raise CommandError(str(getattr(err, "message", err))) from err
    return 0
