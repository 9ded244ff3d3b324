"""``chorus operator`` and ``chorus render``: the operator's subcommands.

Importing this module is cheap (argparse and option declarations); kopf, pydantic and
YAML are imported inside the handler that runs. ``render`` prints exactly the objects
the operator would apply for the given files, so a GitOps review needs no cluster.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from chorus.common.options import (
    CommandError,
    Option,
    add_config,
    add_options,
    command,
    positive_float,
    resolve_command,
    setup_logging,
)

__all__ = ["register"]

_IMAGE_OPTIONS = [
    Option("--server-image", "image of the server and voice-manager containers when a "
           "TTSService names none", default="ghcr.io/chorus-tts/chorus-server:0.1.0",
           metavar="IMAGE"),
    Option("--image-pull-policy", "pull policy when a TTSService names none",
           choices=["Always", "IfNotPresent", "Never"]),
    Option("--hf-endpoint", "Hugging Face endpoint (a mirror) for every voice manager "
           "(HF_ENDPOINT in their containers)", metavar="URL"),
]

OPERATOR_OPTIONS = [
    *_IMAGE_OPTIONS,
    Option("--namespace", "namespace to watch; repeatable (default: the whole cluster)",
           kind="list", metavar="NS"),
    Option("--resync-interval", "seconds between level-based re-checks of every service "
           "(restores edited children, polls voice status)", default=15.0,
           type=positive_float, metavar="S"),
    Option("--poll-timeout", "seconds to wait for a pod's voice-manager status",
           default=3.0, type=positive_float, metavar="S"),
    Option("--liveness", "liveness endpoint served by kopf (empty to disable)",
           default="http://0.0.0.0:8080/healthz", metavar="URL"),
    Option("--log-level", "logging level", default="INFO",
           choices=["DEBUG", "INFO", "WARNING", "ERROR"]),
]

RENDER_OPTIONS = [
    *_IMAGE_OPTIONS,
    Option("--namespace", "namespace for objects whose metadata names none",
           kind="list", metavar="NS"),
]

_ALL = OPERATOR_OPTIONS + RENDER_OPTIONS


def register(subparsers: Any) -> None:
    """Add ``operator`` and ``render`` to the ``chorus`` command."""
    operator = subparsers.add_parser("operator", help="run the Kubernetes operator (kopf)")
    add_config(operator)
    add_options(operator, OPERATOR_OPTIONS)
    command(operator, _run_operator)

    render = subparsers.add_parser("render", help="print the objects the operator would "
                                   "apply for TTSService/TTSVoice files (no cluster)")
    render.add_argument("-f", "--filename", dest="files", action="append", type=Path,
                        required=True, metavar="FILE",
                        help="YAML with TTSService and TTSVoice objects ('-' for stdin); "
                        "repeatable")
    add_config(render)
    add_options(render, RENDER_OPTIONS)
    command(render, _run_render)


def _render_settings(values: dict[str, Any]) -> Any:
    from .render import RenderSettings

    return RenderSettings(server_image=values["server_image"],
                          image_pull_policy=values.get("image_pull_policy"),
                          hf_endpoint=values.get("hf_endpoint"))


def _run_operator(args: argparse.Namespace) -> int:
    values = resolve_command(args, OPERATOR_OPTIONS, _ALL)
    setup_logging(values["log_level"])
    import asyncio

    import kopf

    from .handlers import build_registry, configure
    from .reconciler import OperatorConfig

    # fail now, with the reason, rather than have kopf retry forever
    asyncio.run(_check_cluster())

    namespaces = tuple(values.get("namespace") or ())
    config = OperatorConfig(render=_render_settings(values), namespaces=namespaces,
                            resync_interval=values["resync_interval"],
                            poll_timeout=values["poll_timeout"])
    registry = build_registry(config)
    settings = configure(kopf.OperatorSettings())
    settings.watching.server_timeout = 300  # re-list now and then, well before proxies cut
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    asyncio.run(kopf.operator(registry=registry, settings=settings, standalone=True,
                              clusterwide=not namespaces, namespaces=list(namespaces),
                              liveness_endpoint=values["liveness"] or None))
    return 0


async def _check_cluster() -> None:
    """Log in and make one authenticated request (``GET /version``) with those credentials.

    A wrong CA, a refused certificate or token, or an unreachable server ends the command
    with exit 1 and the reason here, before kopf would retry it forever.
    """
    import aiohttp
    import kopf

    from .kube import ApiError, KubeClient, login

    try:
        info = login()
        async with KubeClient(info, timeout=15.0) as client:
            version = await client.request("GET", "/version")
    except (kopf.LoginError, ApiError, aiohttp.ClientError, OSError, ValueError,
            TimeoutError) as err:
        raise CommandError(f"cannot reach a cluster: {type(err).__name__}: {err}",
                           code=1) from err
    logging.getLogger(__name__).info("Cluster %s answers (version %s)", info.server,
                                     version.get("gitVersion", "unknown")
                                     if isinstance(version, dict) else "unknown")


def _run_render(args: argparse.Namespace) -> int:
    values = resolve_command(args, RENDER_OPTIONS, _ALL)
    from .render_files import render_files

    namespace = (values.get("namespace") or ["default"])[-1]
    try:
        documents, problems = render_files(args.files, namespace, _render_settings(values))
    except (OSError, ValueError) as err:
        raise CommandError(str(err), code=1) from err
    sys.stdout.write(documents)
    for problem in problems:
        print(f"chorus render: {problem}", file=sys.stderr)
    return 1 if problems else 0
