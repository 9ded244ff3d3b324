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
        await runtime.start(doors=False)
        runtime.synthesizer.check_text(text)
        rate = runtime.store.resolve(voice).sample_rate
        request = VoiceRequest(name=voice, speaker=speaker)
        audio = b"".join([pcm.tobytes()
                          async for pcm in runtime.synthesizer.speak(text, request)])
    finally:
        await runtime.stop()
    # The length goes into the header before the frames: stdout may be a pipe, where
    # the wave module could not seek back to patch it.
    with ExitStack() as stack:
        sink: BinaryIO = (sys.stdout.buffer if output == "-"
                          else stack.enter_context(open(output, "wb")))  # noqa: ASYNC230
        wav = stack.enter_context(wave.open(sink, "wb"))
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.setnframes(len(audio) // 2)
        wav.writeframes(audio)
