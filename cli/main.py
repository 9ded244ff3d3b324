"""Entry point of the ``chorus`` command.

Each component owns its subcommands in its own ``cli`` module, which imports only
argparse-level code; heavy imports (onnxruntime, kopf) happen inside the subcommand
that needs them, so ``chorus operator`` never loads a speech model and ``chorus
serve`` never loads kopf.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chorus.server.on_demand import VoiceInstaller
    from chorus.server.settings import ServerSettings

__all__ = ["build_parser", "main"]


def _voice_installer(settings: ServerSettings) -> VoiceInstaller:
    """``chorus serve --download-voices``: the voice manager installs what the server
    offers (the two components meet only here)."""
    from .voice_downloads import build_installer

    return build_installer(settings)


def build_parser() -> argparse.ArgumentParser:
    from chorus.operator import cli as operator_cli
    from chorus.server import cli as server_cli
    from chorus.voice_manager import cli as voices_cli

    parser = argparse.ArgumentParser(prog="chorus", description="Piper text-to-speech, "
                                     "run the Kubernetes way.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {metadata.version('chorus-tts')}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server_cli.register(subparsers, voice_installer=_voice_installer)
    voices_cli.register(subparsers)
    operator_cli.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from chorus.common.options import CommandError, OptionError

    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (CommandError, OptionError) as err:
        print(f"{args.prog}: error: {err}", file=sys.stderr)
        return err.code if isinstance(err, CommandError) else 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
