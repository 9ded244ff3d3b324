"""One-shot synthesis to a WAV file, through the same runtime as the server."""

from __future__ import annotations

import sys
import wave
from contextlib import ExitStack
from typing import BinaryIO

from .runtime import Runtime
from .settings import ServerSettings
from .synthesis import VoiceRequest

__all__ = ["say"]


async def say(settings: ServerSettings, text: str, voice: str | None, speaker: str | None,
              output: str) -> None:
    """Speak ``text`` into ``output`` (a path, or ``-`` for stdout)."""
    runtime = Runtime(settings)
    try:
        await runtime.start(wyoming=False)
        request = VoiceRequest(name=voice, speaker=speaker)
        runtime.synthesizer.check_text(text)
        rate = runtime.store.resolve(voice).sample_rate
        with ExitStack() as stack:
            sink: BinaryIO = (sys.stdout.buffer if output == "-"
                              else stack.enter_context(open(output, "wb")))  # noqa: ASYNC230
            wav = stack.enter_context(wave.open(sink, "wb"))
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            async for pcm in runtime.synthesizer.speak(text, request):
                wav.writeframes(pcm.tobytes())
    finally:
        await runtime.stop()
