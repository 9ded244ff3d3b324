"""Command-line options that can also come from the environment or a config file.

The CLI contract says every option can be set from ``CHORUS_<OPTION>`` too, and
``--config FILE`` may hold the rest. Precedence, highest first: command line,
environment, config file, built-in default. Each component declares its options once
as :class:`Option` values and gets all three sources from that one declaration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ENV_PREFIX",
    "Bounded",
    "CommandError",
    "Option",
    "OptionError",
    "add_config",
    "add_options",
    "bounded_float",
    "command",
    "non_negative_float",
    "non_negative_int",
    "number",
    "port",
    "positive_float",
    "positive_int",
    "resolve_command",
    "resolve_options",
    "setup_logging",
]

ENV_PREFIX = "CHORUS_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class OptionError(ValueError):
    """An option value from the environment or config file could not be used."""


class CommandError(Exception):
    """A subcommand cannot go on. ``chorus`` prints ``<command>: error: <message>`` (as
    argparse does for bad flags) and exits with ``code``: 2 for bad usage or input, 1
    when the work itself failed. Option errors are printed the same way, with 2."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def command(parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int],
            ) -> None:
    """Route a subcommand to ``handler``, under its full name (``chorus voices sync``)
    for error messages."""
    parser.set_defaults(handler=handler, prog=parser.prog)


def add_config(parser: argparse.ArgumentParser) -> None:
    """The ``--config FILE`` flag every subcommand takes (see :func:`resolve_command`)."""
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML or JSON file of options [env CHORUS_CONFIG]")


@dataclass(frozen=True)
class Option:
    """One option, declared once for the command line, the environment and config files."""

    flag: str
    """Long flag, e.g. ``--http-port``; its dest, env name and config key derive from it."""
    help: str
    default: Any = None
    type: Callable[[str], Any] = str
    kind: Literal["value", "list", "flag"] = "value"
    metavar: str | None = None
    choices: Sequence[Any] | None = None
    separator: str = ","
    """Splits a list option's environment value; paths use ``os.pathsep`` like PATH does."""

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


@dataclass(frozen=True)
class Bounded:
    """A ``type=`` parser for numbers in a range, whose errors read well from argparse,
    the environment and config files alike.

    The bounds are data, not only code, so that what the server accepts can be compared
    with what the operator's CRD lets through (see ``chorus.common.server_options``).
    """

    kind: type[int] | type[float]
    what: str
    """How the expected value reads in an error: ``expected <what>, got '...'``."""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    """``minimum`` itself is refused (a positive number: above 0)."""

    @property
    def __name__(self) -> str:  # argparse names the type in some of its messages
        return self.what

    def accepts(self, value: float) -> bool:
        if self.minimum is not None and (
                value < self.minimum or (self.exclusive_minimum and value == self.minimum)):
            return False
        return self.maximum is None or value <= self.maximum

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.what}, got {text!r}") from None
        if not self.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {self.what}, got {text!r}")
        return value


number = Bounded(float, "a number")
positive_int = Bounded(int, "a positive integer", minimum=1)
non_negative_int = Bounded(int, "an integer of 0 or more", minimum=0)
non_negative_float = Bounded(float, "a number of 0 or more", minimum=0)
positive_float = Bounded(float, "a positive number", minimum=0, exclusive_minimum=True)
port = Bounded(int, "a port number (0-65535)", minimum=0, maximum=65535)


def bounded_float(low: float, high: float) -> Bounded:
    """Numbers in ``[low, high]``."""
    return Bounded(float, f"a number from {low:g} to {high:g}", minimum=low, maximum=high)


def _default_note(opt: Option) -> str:
    """`` (default: X)`` for a value option that has one and does not already say it.

    ``%`` is doubled: argparse formats help text with ``%``.
    """
    if opt.kind != "value" or opt.default is None or "default" in opt.help:
        return ""
    value = opt.default
    if isinstance(value, (tuple, list)):
        value = ",".join(str(v) for v in value)
    return f" (default: {value})".replace("%", "%%")


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Add ``options`` to ``parser`` with ``None`` defaults so unset ones can be layered."""
    for opt in options:
        help_text = f"{opt.help}{_default_note(opt)} [env {opt.env}]"
        if opt.kind == "flag":
            parser.add_argument(opt.flag, dest=opt.dest, action="store_const", const=True,
                                default=None, help=help_text)
        elif opt.kind == "list":
            parser.add_argument(opt.flag, dest=opt.dest, action="append", type=opt.type,
                                default=None, metavar=opt.metavar, help=help_text)
        else:
            parser.add_argument(opt.flag, dest=opt.dest, type=opt.type, default=None,
                                metavar=opt.metavar, choices=opt.choices, help=help_text)


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or JSON config file whose keys are option names (dashes or underscores)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise OptionError(f"cannot read config file {path}: {err.strerror}") from err
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as err:
        raise OptionError(f"config file {path} is not valid: {err}") from err
    if not isinstance(data, dict):
        raise OptionError(f"config file {path} must hold a table of options")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def _from_text(opt: Option, text: str, source: str) -> Any:
    if opt.kind == "flag":
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise OptionError(f"{source}: expected true or false, got {text!r}")
    try:
        if opt.kind == "list":
            return [opt.type(part.strip()) for part in text.split(opt.separator)
                    if part.strip()]
        value = opt.type(text)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
        raise OptionError(f"{source}: {err}") from err
    if opt.choices is not None and value not in opt.choices:
        raise OptionError(f"{source}: {value!r} is not one of {list(opt.choices)}")
    return value


def _from_config(opt: Option, value: Any, source: str) -> Any:
    if opt.kind == "flag":
        if not isinstance(value, bool):
            raise OptionError(f"{source}: expected true or false")
        return value
    if opt.kind == "list":
        items = value if isinstance(value, list) else [value]
        return [_from_text(Option(opt.flag, opt.help, type=opt.type), str(v), source)
                for v in items]
    return _from_text(opt, str(value), source)


def resolve_options(
    namespace: argparse.Namespace,
    options: Sequence[Option],
    environ: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge command line, environment, config file and defaults into one dict by dest."""
    environ = os.environ if environ is None else environ
    config = config or {}
    known = {opt.dest for opt in options}
    unknown = sorted(set(config) - known - {"config"})
    if unknown:
        raise OptionError(f"unknown option(s) in config file: {', '.join(unknown)}")
    resolved: dict[str, Any] = {}
    for opt in options:
        value = getattr(namespace, opt.dest, None)
        if value is None and opt.env in environ:
            value = _from_text(opt, environ[opt.env], f"environment variable {opt.env}")
        if value is None and opt.dest in config:
            value = _from_config(opt, config[opt.dest], f"config key {opt.dest!r}")
        if value is None:
            value = list(opt.default) if opt.kind == "list" and opt.default else opt.default
        resolved[opt.dest] = value
    return resolved


def resolve_command(args: argparse.Namespace, options: Sequence[Option],
                    siblings: Sequence[Option] = ()) -> dict[str, Any]:
    """Resolve one subcommand's options, its config file coming from ``--config`` or
    ``CHORUS_CONFIG``.

    One config file may serve several subcommands (``serve`` and ``say``, the ``voices``
    commands), so keys that belong only to ``siblings`` are dropped rather than refused.
    """
    path = getattr(args, "config", None) or (
        Path(os.environ["CHORUS_CONFIG"]) if os.environ.get("CHORUS_CONFIG") else None)
    config = load_config_file(path) if path else {}
    others = {o.dest for o in siblings} - {o.dest for o in options}
    return resolve_options(args, options,
                           config={k: v for k, v in config.items() if k not in others})


def setup_logging(level: str) -> None:
    """The one log format of every ``chorus`` command: to stderr, %-style records."""
    import logging

    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
