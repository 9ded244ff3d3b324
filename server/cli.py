"""``chorus serve`` and ``chorus say``: the server component's subcommands.

Importing this module is cheap (argparse and the option declarations only); the
engine, onnxruntime and wyoming are imported when a subcommand actually runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chorus.common.options import (
    CommandError,
    Option,
    add_config,
    add_options,
    command,
    resolve_command,
    setup_logging,
)
from chorus.common.server_options import command_options

from .settings import ServerSettings

if TYPE_CHECKING:
    from .on_demand import VoiceInstaller

__all__ = ["SAY_OPTIONS", "SERVE_OPTIONS", "InstallerFactory", "register"]

InstallerFactory = Callable[[ServerSettings], "VoiceInstaller"]
"""Builds the installer behind ``--download-voices`` (raises ``CommandError`` when it
cannot); the ``chorus`` command passes one made from the voice manager."""

SERVE_OPTIONS = command_options("serve")
"""``chorus serve``'s options, derived from the declaration of the server's settings."""

SAY_OPTIONS = [
    Option("--voice", "voice name (default: the default voice)", metavar="NAME"),
    Option("--speaker", "speaker name or id for multi-speaker voices", metavar="SPEAKER"),
    *command_options("say"),
]


def register(subparsers: Any, voice_installer: InstallerFactory | None = None) -> None:
    """Add ``serve`` and ``say`` to the ``chorus`` command.

    ``voice_installer`` makes ``--download-voices`` work: the server imports no voice
    manager, so the command that has both hands one in.
    """
    serve = subparsers.add_parser("serve", help="run the speech server (Wyoming and HTTP)")
    add_config(serve)
    add_options(serve, SERVE_OPTIONS)
    command(serve, _run_serve)
    serve.set_defaults(voice_installer=voice_installer)

    say = subparsers.add_parser("say", help="synthesize TEXT once and write a WAV file")
    say.add_argument("text", metavar="TEXT", help="text to speak ('-' reads stdin)")
    say.add_argument("-o", "--output", default="-", metavar="FILE",
                     help="WAV file to write ('-' for stdout, the default)")
    add_config(say)
    add_options(say, SAY_OPTIONS)
    command(say, _run_say)


def _resolve(args: argparse.Namespace, options: list[Option]) -> dict[str, Any]:
    return resolve_command(args, options, SERVE_OPTIONS + SAY_OPTIONS)


def _run_serve(args: argparse.Namespace) -> int:
    settings = ServerSettings.from_options(_resolve(args, SERVE_OPTIONS))
    setup_logging(settings.log_level)
    installer = None
    if settings.download_voices:
        factory: InstallerFactory | None = getattr(args, "voice_installer", None)
        if factory is None:
            raise CommandError("--download-voices needs the voice manager, which this "
                               "command was built without")
        installer = factory(settings)
    from .errors import ChorusError
    from .startup import serve

    try:
        asyncio.run(serve(settings, installer))
    except (ChorusError, ValueError, OSError) as err:
        raise CommandError(str(err)) from err
    return 0


def _run_say(args: argparse.Namespace) -> int:
    values = _resolve(args, SAY_OPTIONS)
    settings = ServerSettings.from_options(values)
    setup_logging(settings.log_level if settings.log_level != "INFO" else "WARNING")
    text = sys.stdin.read() if args.text == "-" else args.text
    if args.output == "-" and sys.stdout.isatty():
        raise CommandError("refusing to write audio to a terminal; use -o FILE")
    from .errors import ChorusError
    from .say import say

    try:
        asyncio.run(say(settings, text, values["voice"], values["speaker"], args.output))
    except (ChorusError, OSError, ValueError) as err:  # ValueError: --device cannot work
        raise CommandError(str(getattr(err, "message", err))) from err
    return 0
