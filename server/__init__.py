"""The Chorus speech server: engines, voice store, scheduler and front doors.

onnxruntime 1.32 sends telemetry unless ``ORT_DISABLE_TELEMETRY`` is set before it is
imported; every server module is imported through this package, so setting it here
covers the engines, piper-tts and anything else that loads onnxruntime later.
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
