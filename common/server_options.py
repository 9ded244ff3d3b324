"""The speech server's options, each declared once: the contract of ``chorus serve``.

Every field of :class:`ServerOptions` is one server option and carries, next to its
type and default, how it is set: its flag, help and parser (:class:`Setting`, from which
the command line, the ``CHORUS_*`` environment and config-file keys derive), and, where
the operator passes it through from a TTSService unchanged, its CRD key
(:class:`PassThrough`). A new option is a field here, plus its CRD property when the
operator should expose it (a test holds the CRD to :data:`PASS_THROUGHS`).

Why this lives in ``common/`` and not beside the server: the operator writes
``server.json`` and the server reads it, so the option set is a contract between two
components that never import each other, as ``manifest.py`` is between the operator and
the voice manager. The server extends :class:`ServerOptions` with what only it can work
out (CPU counts, cache locations, the embedded voice); the operator reads
:data:`PASS_THROUGHS` to type its CRD model and render ``server.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from .options import (
    Bounded,
    Option,
    bounded_float,
    number,
    port,
    positive_float,
    positive_int,
)

__all__ = [
    "DEFAULT_STREAM_WINDOWS",
    "LOG_LEVELS",
    "PASS_THROUGHS",
    "PUBLIC_ROUTE_GROUPS",
    "PassThrough",
    "PassThroughOption",
    "ServerOptions",
    "Setting",
    "command_options",
    "parse_device",
    "parse_networks",
    "parse_route_groups",
]

DEFAULT_STREAM_WINDOWS = (16, 48, 96, 384)
"""Frames per streaming window, the last repeating (measured choice: see
``chorus.server.engines.piper_windows``)."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PUBLIC_ROUTE_GROUPS = ("voices", "models", "metrics")
"""Read-only routes ``--public-routes`` may open without the API key (the listings and the
Prometheus scrape); synthesis is never one."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

Command = Literal["serve", "say"]
_META = "chorus.setting"


@dataclass(frozen=True)
class PassThrough:
    """A server option the operator sets from ``TTSService.spec.server.<key>``.

    The CRD may accept a narrower range than the server does (a cluster has no use for
    10,000 workers); ``minimum``/``maximum`` say so, and default to the server's own.
    """

    key: str
    """camelCase property under ``spec.server``."""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    """The values the CRD admits, where the server parses a wider set than it lists
    (``--device`` takes ``cuda:N``; a pod sees only the GPUs it was given, from 0)."""


@dataclass(frozen=True)
class Setting:
    """How one :class:`ServerOptions` field is set from outside."""

    help: str
    flag: str = ""
    """Long flag; derived from the field name (``--no-<name>`` when ``invert``)."""
    parse: Callable[[str], Any] = str
    metavar: str | None = None
    choices: Sequence[str] | None = None
    invert: bool = False
    """A ``--no-<name>`` switch that turns a default-true field off."""
    repeat: bool = False
    """The flag may repeat (a list in env and config); the field is a tuple."""
    separator: str = ","
    commands: tuple[Command, ...] = ("serve",)
    pass_through: PassThrough | None = None


def _how(help: str, **how: Any) -> dict[str, Setting]:
    """Field metadata declaring how the option is set."""
    return {_META: Setting(help, **how)}


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


def _items(text: str) -> list[str]:
    """``a,b`` (also ``[a, b]`` or ``['a', 'b']``, as a config-file list reads as text)."""
    return [p.strip().strip("'\"") for p in text.strip().strip("[]()").split(",")
            if p.strip().strip("'\"")]


def parse_route_groups(text: str) -> tuple[str, ...]:
    """``voices,metrics`` -> ``("voices", "metrics")``; anything else is refused by name."""
    groups = tuple(dict.fromkeys(_items(text)))
    wrong = [g for g in groups if g not in PUBLIC_ROUTE_GROUPS]
    if wrong:
        raise argparse.ArgumentTypeError(
            f"{wrong[0]!r} cannot be public; choose from {', '.join(PUBLIC_ROUTE_GROUPS)} "
            "(synthesis always needs the key)")
    return groups


_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]{1,3})?")


def parse_device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``N``: the GPU's index), lower-cased;
    anything else is refused here, before onnxruntime is imported."""
    value = text.strip().lower()
    if not _DEVICE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"expected auto, cpu, cuda or cuda:N (N: a GPU index), got {text!r}")
    return value


def parse_networks(text: str) -> tuple[Network, ...]:
    """``10.0.0.0/8,fd00::/8,192.0.2.7`` -> networks (a bare address is a /32 or /128)."""
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in _items(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected CIDRs separated by commas: {err}"
                                         ) from None


_BOTH: tuple[Command, ...] = ("serve", "say")


@dataclass(frozen=True)
class ServerOptions:
    """Everything ``chorus serve`` and ``chorus say`` can be told.

    Field order is the order of ``--help``: serve-only options first, then the ones
    ``chorus say`` shares.
    """

    wyoming_uri: str = field(default="tcp://127.0.0.1:10200", metadata=_how(
        "where to serve Wyoming: tcp://HOST:PORT or unix://PATH",
        metavar="URI"))
    max_requests: int = field(default=64, metadata=_how(
        "requests in progress before new ones are refused as busy",
        parse=positive_int, metavar="N", pass_through=PassThrough("maxRequests", maximum=10_000)))
    rescan_interval: float = field(default=1.0, metadata=_how(
        "seconds between voices-directory rescans",
        parse=positive_float, metavar="S"))
    shutdown_grace: float = field(default=20.0, metadata=_how(
        "seconds requests may finish after SIGTERM",
        parse=positive_float, metavar="S"))
    client_timeout: float = field(default=30.0, metadata=_how(
        "seconds a client may leave audio unread before it is dropped",
        parse=positive_float, metavar="S"))
    stream_idle_timeout: float = field(default=120.0, metadata=_how(
        "seconds an open stream may go without text before it is dropped",
        parse=positive_float, metavar="S"))
    idle_timeout: float = field(default=60.0, metadata=_how(
        "seconds a Wyoming connection with no request in progress may send nothing before it is"
        " closed",
        parse=positive_float, metavar="S", pass_through=PassThrough("idleTimeout")))
    max_connections: int = field(default=256, metadata=_how(
        "open Wyoming connections; at the limit the longest-idle one is closed to admit a new "
        "one, and a newcomer is refused as busy only when all are busy",
        parse=positive_int, metavar="N", pass_through=PassThrough("maxConnections")))
    max_http_connections: int = field(default=512, metadata=_how(
        "open HTTP connections, with the same policy as --max-connections (503 when all are "
        "busy)",
        parse=positive_int, metavar="N", pass_through=PassThrough("maxHttpConnections")))
    max_pipelined: int = field(default=16, metadata=_how(
        "events a Wyoming connection may queue behind its request in progress; one more is "
        "refused as busy and the connection closed",
        parse=positive_int, metavar="N", pass_through=PassThrough("maxPipelined")))
    http_keepalive_timeout: float = field(default=15.0, metadata=_how(
        "seconds an HTTP connection may stay idle or take to send its request headers",
        parse=positive_float, metavar="S"))
    http_body_timeout: float = field(default=30.0, metadata=_how(
        "seconds an HTTP client may take to send a request body",
        parse=positive_float, metavar="S"))
    http_host: str = field(default="127.0.0.1", metadata=_how(
        "address the HTTP API (and --metrics-port) listens on",
        metavar="HOST"))
    http_port: int = field(default=5000, metadata=_how(
        "port of the HTTP API",
        parse=port, metavar="PORT"))
    http: bool = field(default=True, metadata=_how(
        "do not serve the HTTP API",
        invert=True))
    api_key: str | None = field(default=None, metadata=_how(
        "require 'Authorization: Bearer KEY' on the HTTP API (except /health/*, the web page, "
        "the docs and --public-routes)",
        metavar="KEY"))
    public_routes: tuple[str, ...] = field(default=(), metadata=_how(
        "read-only routes answered without the API key, separated by commas: 'voices' "
        "(/voices, /voices/{name}, /v1/audio/voices), 'models' (/v1/models, "
        "/v1/audio/models), for clients such as Open WebUI that fetch them without a key; "
        "'metrics' (/metrics), for scrapers that cannot send one (--metrics-port keeps the "
        "scrape off the API's port instead); anyone who reaches the port then sees the "
        "installed voice names; synthesis still needs the key (default: none)",
        parse=parse_route_groups, metavar="GROUPS"))
    """Empty keeps every listing behind the key."""
    metrics_port: int | None = field(default=None, metadata=_how(
        "also serve /metrics, and nothing else, on this port of --http-host, without the API "
        "key (also with --no-http), for Prometheus scrapers that cannot send one; /metrics "
        "on the HTTP port stays behind the key (default: none)",
        parse=port, metavar="PORT"))
    """A door of its own, so the scrape can be opened to the monitoring network without
    opening the API (see ``chorus.server.metrics_http``)."""
    trusted_proxies: tuple[Network, ...] = field(default=(), metadata=_how(
        "proxies (CIDRs separated by commas) whose X-Forwarded-For names the client for the "
        "per-client limit; the header from any other peer is ignored (default: none)",
        parse=parse_networks, metavar="CIDRS"))
    """Behind an Ingress every request comes from the proxy's address."""
    cors_origins: tuple[str, ...] = field(default=(), metadata=_how(
        "browser origin allowed to call the HTTP API ('*' for any); repeatable",
        flag="--cors-origin", repeat=True, metavar="ORIGIN"))
    """Empty keeps CORS closed."""
    voice_cloning: bool = field(default=True, metadata=_how(
        "refuse POST /voices/clone and DELETE /voices/{name} (403): no cloned XTTS voice is "
        "created or deleted through the HTTP API; voices are then only what the voices "
        "directories hold",
        invert=True))
    """Cloning writes into the first --voices-dir; with --api-key it needs the key."""
    openai_voices: tuple[tuple[str, str], ...] = field(default=(), metadata=_how(
        "map an OpenAI voice name to an installed voice for /v1/audio/speech, e.g. alloy=en_US-"
        "joe-medium; repeatable",
        flag="--openai-voice", parse=_voice_mapping, repeat=True, metavar="NAME=VOICE"))
    cache_dir: Path | None = field(default=None, metadata=_how(
        "directory of the HTTP audio cache (default: chorus-cache under $XDG_CACHE_HOME or "
        "~/.cache)",
        parse=Path, metavar="DIR"))
    cache_max_mb: float = field(default=512.0, metadata=_how(
        "size limit of the audio cache; least recently used entries go first",
        parse=positive_float, metavar="MB"))
    cache_ttl: float = field(default=7 * 24 * 3600.0, metadata=_how(
        "seconds a cached answer is served after it was made",
        parse=positive_float, metavar="S"))
    cache: bool = field(default=True, metadata=_how(
        "do not cache HTTP audio",
        invert=True))
    """Keep encoded whole HTTP responses on disk and answer repeats from there."""
    max_requests_per_client: int = field(default=16, metadata=_how(
        "HTTP synthesis requests one client address may have in progress; more get 429. A "
        "quarter of the default --max-requests: one caller cannot take every slot, yet a "
        "front end that speaks for a whole household from one address (Open WebUI, several "
        "tabs each fetching sentences ahead) is not refused",
        parse=positive_int, metavar="N", pass_through=PassThrough("maxRequestsPerClient")))
    strict_speakers: bool = field(default=False, metadata=_how(
        "refuse an unknown speaker instead of speaking with speaker 0 and logging a warning"))
    """Off, an unknown speaker is spoken with speaker 0 and a warning, which is what
    wyoming-piper does and clients migrating from it expect."""

    zeroconf: bool = field(default=False, metadata=_how(
        "announce the Wyoming door over zeroconf (mDNS) so Home Assistant discovers it; needs a "
        "tcp:// --wyoming-uri"))
    zeroconf_name: str = field(default="chorus", metadata=_how(
        "name announced with --zeroconf (a taken name gets a number appended)",
        metavar="NAME"))
    preload_voices: tuple[str, ...] = field(default=(), metadata=_how(
        "voices to load ahead of their first request, also when installed later: 'all' or "
        "names separated by commas; repeatable",
        metavar="all|NAMES", repeat=True))
    """The default voice is always loaded; others otherwise load on first use (seconds)."""
    download_voices: bool = field(default=False, metadata=_how(
        "also offer every voice of the Piper voice catalog (rhasspy/piper-voices) and install "
        "one into the first --voices-dir on its first request, verified against the hub's "
        "sha256, as wyoming-piper does; also installs a missing --default-voice at start. For "
        "one host; in Kubernetes a TTSVoice installs voices"))
    """Off: only installed voices are offered (a voice manager or people install them)."""

    voices_dirs: tuple[Path, ...] = field(default=(), metadata=_how(
        "Piper voices directory (<voice>.onnx + .onnx.json); repeatable (env: colon-separated)",
        flag="--voices-dir", parse=Path, repeat=True, metavar="DIR", separator=os.pathsep,
        commands=_BOTH))
    embedded_voice: bool = field(default=True, metadata=_how(
        "do not use the embedded en_US-joe-medium voice",
        invert=True, commands=_BOTH))
    default_voice: str | None = field(default=None, metadata=_how(
        "voice used when a request names none",
        metavar="NAME", commands=_BOTH))
    workers: int | None = field(default=None, metadata=_how(
        "inference worker threads (default: one per usable CPU)",
        parse=positive_int, metavar="N", commands=_BOTH,
        pass_through=PassThrough("workers", maximum=64)))
    threads_per_worker: int = field(default=1, metadata=_how(
        "onnxruntime threads per model call",
        parse=positive_int, metavar="N", commands=_BOTH,
        pass_through=PassThrough("threadsPerWorker", maximum=64)))
    """Workers x threads should not exceed the CPUs."""
    max_sentence_phonemes: int = field(default=150, metadata=_how(
        "split sentences longer than this many phonemes",
        parse=positive_int, metavar="N", commands=_BOTH))
    """Longest phoneme sequence in one model call; longer sentences are split.

    ORT's memory arena never shrinks and grows with the longest call in flight: measured
    here with two workers, units of up to 757 phoneme ids (400 phonemes) peaked at 1.1 GB,
    265 ids (150 phonemes, ~7 s of speech) at 0.58 GB. Splits prefer clause punctuation,
    so most long sentences break where a speaker pauses anyway.
    """
    max_text_chars: int = field(default=10_000, metadata=_how(
        "longest text accepted in one request; a Wyoming stream has no total and may run this "
        "far ahead of the speech",
        parse=positive_int, metavar="N", commands=_BOTH,
        pass_through=PassThrough("maxTextChars", maximum=1_000_000)))
    """See ``synthesis.TextLimits``."""
    max_sentence_chars: int = field(default=1_000, metadata=_how(
        "longest text spoken as one sentence (text with no sentence end is broken at a space)",
        parse=positive_int, metavar="N", commands=_BOTH,
        pass_through=PassThrough("maxSentenceChars")))
    """Breaking at a space keeps a stream that never ends a sentence bounded."""
    voice_memory_mb: int = field(default=1024, metadata=_how(
        "memory budget for resident voices (LRU beyond it)",
        parse=positive_int, metavar="MB", commands=_BOTH,
        pass_through=PassThrough("voiceMemoryMB", minimum=64, maximum=1_048_576)))
    stream_windows: tuple[int, ...] = field(default=DEFAULT_STREAM_WINDOWS, metadata=_how(
        "frames per window when streaming below sentence level (256 samples each; the last size"
        " repeats; small sizes are skipped for sentences whose listener has enough audio ahead)",
        parse=_window_sizes, metavar="N,N,...", commands=_BOTH))
    """A small first window makes first audio early; larger ones after it keep the
    context frames each window recomputes cheap."""
    sub_sentence_streaming: bool = field(default=True, metadata=_how(
        "render whole sentences instead of windows (same audio, later first sound)",
        invert=True, commands=_BOTH))
    graph_cache_dir: Path | None = field(default=None, metadata=_how(
        "where voices' graph parts for streaming are cached, and the describe answer a "
        "restart gives before it has loaded (default: chorus/graphs under "
        "$XDG_CACHE_HOME or ~/.cache)",
        parse=Path, metavar="DIR", commands=_BOTH))
    prebuilt_graphs: Path | None = field(default=None, metadata=_how(
        "a read-only graph cache made ahead, used where --graph-cache-dir has no parts "
        "for a voice (the server image carries its embedded voice's, verified on the "
        "CPU it was built on)",
        parse=Path, metavar="DIR", commands=_BOTH))
    """Saves a pod the cut (about 4 s for joe) on its first start; the verification
    is taken from it only for the same onnxruntime, threads, windows and CPU features."""
    backend: str = field(default="onnxruntime", metadata=_how(
        "what runs Piper voices' streaming graph parts and Kokoro models: onnxruntime, "
        "openvino (the openvino extra), or auto (per part, the fastest that passes the "
        "quality gates at load); a part that fails a gate runs onnxruntime",
        choices=("auto", "onnxruntime", "openvino"), commands=_BOTH,
        pass_through=PassThrough("backend")))
    """onnxruntime stays the default: OpenVINO is an optional 56 MiB wheel (180 MB
    installed), and its gain is measured on this machine only (docs/benchmarks.md)."""
    precision: str = field(default="auto", metadata=_how(
        "precision of the flow and decoder parts on --backend openvino/auto: f32, bf16 (CPUs "
        "with AMX or AVX-512 bf16), or auto (bf16 where the CPU has it); the encoder "
        "stays f32, so durations stay exactly onnxruntime's",
        choices=("auto", "f32", "bf16"), commands=_BOTH,
        pass_through=PassThrough("precision")))
    device: str = field(default="cpu", metadata=_how(
        "where voices' models run: cpu, cuda or cuda:N (an NVIDIA GPU through "
        "onnxruntime-gpu, the gpu extra, and for XTTS a CUDA build of torch; start-up fails "
        "when one of them cannot run there), or auto (the GPU for each where it works, else "
        "the CPU with a line saying why); --backend openvino runs on the CPU only",
        parse=parse_device, metavar="auto|cpu|cuda[:N]", commands=_BOTH,
        pass_through=PassThrough("device", choices=("auto", "cpu", "cuda"))))
    """Resolved once at start-up (``chorus.server.engines.devices``), for onnxruntime and
    for torch: engines are built with ``cpu`` or ``cuda:N``, never ``auto``."""
    length_scale: float | None = field(default=None, metadata=_how(
        "default phoneme length scale (>1 is slower speech)",
        parse=positive_float, metavar="X", commands=_BOTH,
        pass_through=PassThrough("lengthScale", minimum=0.1, maximum=10)))
    """Defaults for every request; ``None`` keeps each voice's own config value."""
    noise_scale: float | None = field(default=None, metadata=_how(
        "default generator noise (0 makes output deterministic)",
        parse=number, metavar="X", commands=_BOTH,
        pass_through=PassThrough("noiseScale", minimum=0, maximum=2)))
    noise_w_scale: float | None = field(default=None, metadata=_how(
        "default phoneme width noise",
        parse=number, metavar="X", commands=_BOTH,
        pass_through=PassThrough("noiseWScale", minimum=0, maximum=2)))
    sentence_silence: float = field(default=0.0, metadata=_how(
        "seconds of silence after each sentence",
        parse=bounded_float(0, 10), metavar="S", commands=_BOTH,
        pass_through=PassThrough("sentenceSilence")))
    """A request may override it."""
    paragraph_silence: float = field(default=0.5, metadata=_how(
        "seconds of silence after a paragraph (a blank line, a heading, a list), instead of "
        "the sentence's",
        parse=bounded_float(0, 10), metavar="S", commands=_BOTH,
        pass_through=PassThrough("paragraphSilence")))
    """A request may override it; a paragraph of one sentence is still a paragraph."""
    markdown: bool = field(default=True, metadata=_how(
        "read text as plain text: asterisks, hashes and link targets are spoken as written",
        invert=True, commands=_BOTH))
    """On: LLM markdown is read as what it shows (``chorus.server.text.markdown``)."""
    text_cleanup: bool = field(default=True, metadata=_how(
        "leave emoji, web and mail addresses and runs of punctuation as they are",
        invert=True, commands=_BOTH))
    normalize: bool = field(default=True, metadata=_how(
        "leave numbers, dates, times, currencies and abbreviations to the voice",
        invert=True, commands=_BOTH))
    """On: they are written out as words in the voice's language where ``num2words`` and
    ``babel`` know it (``chorus.server.text.normalize``)."""
    ssml: bool = field(default=True, metadata=_how(
        "never read text as SSML, even when it starts with <speak> or a request says so",
        invert=True, commands=_BOTH))
    emoji: str = field(default="drop", metadata=_how(
        "what emoji become: nothing, their name in the voice's language, or themselves",
        choices=("drop", "describe", "keep"), commands=_BOTH,
        pass_through=PassThrough("emoji")))
    code_blocks: str = field(default="announce", metadata=_how(
        "what a markdown code block becomes: --code-notice, nothing, or its text read out",
        choices=("announce", "skip", "read"), commands=_BOTH,
        pass_through=PassThrough("codeBlocks")))
    code_notice: str = field(default="Code omitted.", metadata=_how(
        "what is said in place of a code block with --code-blocks announce",
        metavar="TEXT", commands=_BOTH))
    log_level: str = field(default="INFO", metadata=_how(
        "logging level",
        choices=LOG_LEVELS, commands=_BOTH, pass_through=PassThrough("logLevel")))

    @classmethod
    def from_options(cls, values: Mapping[str, object]) -> Self:
        """Settings from resolved options (by dest, see :func:`command_options`); options
        a command does not take keep their defaults."""
        given: dict[str, Any] = {}
        for item, setting in _settings(cls):
            option = _option(item, setting)
            if option.dest not in values:
                continue
            value = values[option.dest]
            if setting.invert:
                value = not value
            elif setting.repeat:
                value = tuple(value) if isinstance(value, list | tuple) else ()
            given[item.name] = value
        return cls(**given)


def _settings(cls: type[ServerOptions]) -> list[tuple[dataclasses.Field[Any], Setting]]:
    return [(item, item.metadata[_META]) for item in dataclasses.fields(cls)
            if _META in item.metadata]


def _option(item: dataclasses.Field[Any], setting: Setting) -> Option:
    name = item.name.replace("_", "-")
    if setting.invert:
        return Option(setting.flag or f"--no-{name}", setting.help, kind="flag",
                      default=False)
    if item.type in ("bool", bool):
        return Option(setting.flag or f"--{name}", setting.help, kind="flag",
                      default=item.default)
    if setting.repeat:
        return Option(setting.flag or f"--{name}", setting.help, type=setting.parse,
                      kind="list", metavar=setting.metavar, separator=setting.separator)
    return Option(setting.flag or f"--{name}", setting.help, default=item.default,
                  type=setting.parse, metavar=setting.metavar, choices=setting.choices)


def command_options(command: Command) -> list[Option]:
    """The options ``chorus <command>`` takes, in declaration order."""
    return [_option(item, setting) for item, setting in _settings(ServerOptions)
            if command in setting.commands]


@dataclass(frozen=True)
class PassThroughOption:
    """One row of :data:`PASS_THROUGHS`: a CRD property and the server option it sets."""

    key: str
    """camelCase property under ``TTSService.spec.server``."""
    name: str
    """The :class:`ServerOptions` field (and the operator model's attribute)."""
    option: str
    """Its key in ``server.json`` (the long flag without dashes)."""
    type: type[int] | type[float] | type[str]
    minimum: float | None
    maximum: float | None
    exclusive_minimum: bool
    choices: tuple[str, ...] | None
    parse: Callable[[str], Any]
    """The server's own parser, to check that every value the CRD admits is one the
    server accepts."""


def _pass_through(item: dataclasses.Field[Any], setting: Setting) -> PassThroughOption:
    given = setting.pass_through
    if given is None:
        raise ValueError(f"{item.name} is not passed through")
    if item.type in ("bool", bool):
        raise TypeError(f"{item.name}: a switch has no pass-through (the CRD would need "
                        "an object that turns it on and off)")
    bounds = setting.parse if isinstance(setting.parse, Bounded) else None
    kind: type[int] | type[float] | type[str] = bounds.kind if bounds else str
    return PassThroughOption(
        key=given.key, name=item.name, option=_option(item, setting).flag.lstrip("-"),
        type=kind,
        minimum=given.minimum if given.minimum is not None else (
            bounds.minimum if bounds else None),
        maximum=given.maximum if given.maximum is not None else (
            bounds.maximum if bounds else None),
        exclusive_minimum=(given.minimum is None and bounds is not None
                           and bounds.exclusive_minimum),
        choices=given.choices or (tuple(setting.choices) if setting.choices else None),
        parse=setting.parse)


PASS_THROUGHS: tuple[PassThroughOption, ...] = tuple(
    _pass_through(item, setting) for item, setting in _settings(ServerOptions)
    if setting.pass_through is not None)
"""Every server option a TTSService sets as is, in declaration order."""
