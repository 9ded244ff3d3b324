"""``chorus serve``'s process: open the early door, import and build the runtime, run
until SIGTERM or SIGINT, stop gracefully.

This module and what it imports stay light (no numpy, onnxruntime or engines): the
runtime (:mod:`.runtime`) is imported in a thread while the early door
(:mod:`.early_door`) already answers ``describe``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

from .early_door import EarlyDoor
from .settings import ServerSettings

if TYPE_CHECKING:
    from .on_demand import VoiceInstaller
    from .runtime import Runtime

__all__ = ["serve"]

_LOGGER = logging.getLogger(__name__)


def _runtime_class() -> type[Runtime]:
    from .runtime import Runtime

    return Runtime


async def serve(settings: ServerSettings, installer: VoiceInstaller | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    door: EarlyDoor | None = None
    runtime: Runtime | None = None
    try:
        door = await EarlyDoor.open(settings)
        # In a thread, so that the early door answers meanwhile: the imports hold the
        # GIL, but give it up every few milliseconds, enough for a describe.
        runtime = (await asyncio.to_thread(_runtime_class))(settings, installer)
        if not stop.is_set():  # a signal during the imports: nothing is loaded for it
            await runtime.start(early_door=door)
            await stop.wait()
        _LOGGER.info("Shutting down")
    finally:
        if runtime is not None:
            await runtime.stop()
        if door is not None:
            await door.close()
        # The loop's handlers go with the loop; a repeated SIGTERM while the interpreter
        # winds down must not turn a clean exit into death by signal.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
    _LOGGER.info("Stopped")
