"""The state a restart finds: a runtime started and stopped once with the same settings,
which left the describe snapshot the next start's early door answers from."""

from __future__ import annotations

from chorus.server.early_door import EarlyDoor
from chorus.server.runtime import Runtime
from chorus.server.settings import ServerSettings


async def early_door_after_a_start(settings: ServerSettings) -> EarlyDoor:
    """Start and stop a runtime once, then open the early door the next start with
    these settings opens (asserted to open: the snapshot must hold)."""
    started = Runtime(settings)
    await started.start()
    await started.stop()
    door = await EarlyDoor.open(settings)
    assert door is not None, "the describe snapshot of the start just made did not hold"
    return door
