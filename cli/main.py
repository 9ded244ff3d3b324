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

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from chorus.operator import cli as operator_cli
    from chorus.server import cli as server_cli
    from chorus.voice_manager import cli as voices_cli

    parser = argparse.ArgumentParser(prog="chorus", description="Piper text-to-speech, "
                                     "run the Kubernetes way.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {metadata.version('chorus-tts')}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server_cli.register(subparsers)
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
