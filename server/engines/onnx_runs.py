"""onnxruntime calls that stop when their job's :class:`~.base.StopSignal` fires.

A model call on a long sentence takes up to a second or more; when its client has left,
finishing it is CPU spent for nobody (measured: a server stayed busy up to 4 s after a
client with 3,000 pipelined requests left). onnxruntime checks a run's
``RunOptions.terminate`` between graph nodes, so setting it from another thread ends a
running ``session.run`` within milliseconds; it then raises, and that is reported here
as :class:`~.base.Cancelled`.

Each call gets RunOptions of its own, hooked to the signal only while the call runs:
options are never shared between calls, and a job's signal holds no hooks once its
calls have returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy.typing as npt
import onnxruntime

from .base import Cancelled, StopSignal

__all__ = ["run"]


def run(session: onnxruntime.InferenceSession, feeds: Mapping[str, npt.NDArray[Any]],
        stop: StopSignal | None = None, outputs: Sequence[str] | None = None,
        ) -> list[Any]:
    """``session.run(outputs, feeds)``, stopped part-way (raising
    :class:`~.base.Cancelled`) when ``stop`` fires before or during the call."""
    if stop is None:
        return list(session.run(outputs, dict(feeds)))
    stop.check()
    options = onnxruntime.RunOptions()

    def terminate() -> None:
        options.terminate = True

    with stop.hooked(terminate):
        try:
            return list(session.run(outputs, dict(feeds), options))
        except Exception as err:
            if stop.is_set():
                raise Cancelled("model call stopped: the request ended") from err
            raise
