"""The XTTS engine in-process, on the tiny random checkpoint (:mod:`tests.xtts_files`):
text cut within the language's limit, a unit streamed in several chunks, streams of two
voices interleaved on their one shared model, a stop between chunks, the conditioning
cache's key (a changed clip computes it again), reading voices whose files are missing
or not audio, and the device torch gives XTTS (the CPU build's answers here; where torch
finds a CUDA GPU, a voice speaking on it).

Marked ``xtts``: run by ``scripts/dev test``'s xtts stage; skipped without the extra.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from chorus.common.xtts import latents_path
from chorus.server.engines.base import Cancelled, StopSignal, SynthesisParams, VoiceConfigError
from chorus.server.engines.registry import EngineOptions
from tests.xtts_files import (
    TINY_AUDIO_TOKENS,
    XTTS_MISSING,
    build_tiny_checkpoint,
    link_checkpoint,
    write_clip,
    write_cloned_voice,
    xtts_installed,
)

pytestmark = [pytest.mark.xtts, pytest.mark.skipif(not xtts_installed(), reason=XTTS_MISSING)]

LONG = ("Chorus reads long answers one sentence at a time, and this sentence is long "
        "enough to be streamed in several pieces before it is finished.")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("xtts-checkpoint"))


@pytest.fixture
def root(tmp_path: Path, checkpoint: Path) -> Path:
    link_checkpoint(checkpoint, tmp_path)
    return tmp_path


def test_split_text_keeps_within_the_limit_and_prefers_clauses() -> None:
    from chorus.server.engines.xtts import split_text

    text = ", ".join(f"clause number {i} of a very long sentence" for i in range(20))
    pieces = split_text(text, 100)
    assert all(len(piece) <= 100 for piece in pieces), pieces
    assert all(piece.endswith(",") for piece in pieces[:-1]), pieces
    assert " ".join(pieces) == text
    assert split_text("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]
    assert split_text("  short  text ", 100) == ["short text"]
    assert split_text("   ", 100) == []


def test_a_unit_streams_in_several_chunks_and_voices_share_one_model(root: Path) -> None:
    from chorus.server.engines.xtts import XttsChunks, XttsEngine

    engine = XttsEngine(EngineOptions())
    first = engine.load(engine.read_spec(write_cloned_voice(root, "first"), "first"))
    second = engine.load(engine.read_spec(
        write_cloned_voice(root, "second", language="de", languages=("de", "en"),
                           pitch=220.0), "second"))
    assert first.model is second.model  # one checkpoint, loaded once
    assert first.memory_bytes < first.spec.model_bytes * 1.5  # each has half the model

    [unit] = first.prepare(LONG)
    assert "".join(map(chr, unit)) == LONG
    assert len(first.prepare(LONG * 4)) >= 2
    assert all(len(u) <= 250 for u in first.prepare(LONG * 4))

    a = first.start(unit, SynthesisParams())
    b = second.start(second.prepare("Guten Tag.")[0], SynthesisParams(language="en"))
    assert isinstance(a, XttsChunks) and isinstance(b, XttsChunks)
    got: dict[str, list[int]] = {"a": [], "b": []}
    done = {"a": False, "b": False}
    while not all(done.values()):  # interleaved pulls on the one model
        for key, stream in (("a", a), ("b", b)):
            if not done[key]:
                chunk = stream.next()
                if chunk is None:
                    done[key] = True
                else:
                    assert chunk.dtype == np.int16 and chunk.ndim == 1
                    got[key].append(len(chunk))
    expected = (TINY_AUDIO_TOKENS - 3) * 1024 * 24000 / 22050  # the tiny model never stops
    for key in got:
        assert len(got[key]) > 1, got
        assert abs(sum(got[key]) - expected) < 0.1 * expected, (key, got)
    assert a.next() is None
    a.close()
    a.close()


def test_a_stop_ends_a_stream_between_chunks(root: Path) -> None:
    from chorus.server.engines.xtts import XttsEngine

    engine = XttsEngine(EngineOptions())
    voice = engine.load(engine.read_spec(write_cloned_voice(root, "v"), "v"))
    stop = StopSignal()
    stream = voice.start(voice.prepare(LONG)[0], SynthesisParams(), stop=stop)
    first = stream.next()
    assert first is not None and len(first) > 0
    stop.set()
    with pytest.raises(Cancelled):
        stream.next()
    stream.close()


def test_conditioning_is_cached_and_a_changed_clip_computes_it_again(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    from chorus.server.engines.xtts import XttsEngine

    entry = write_cloned_voice(root, "v", clips=2)
    cache = latents_path(root, "v")
    with caplog.at_level(logging.INFO, logger="chorus.server.engines.xtts"):
        engine = XttsEngine(EngineOptions())
        engine.load(engine.read_spec(entry, "v"))
        key = np.load(cache)["key"]
        XttsEngine(EngineOptions()).load(engine.read_spec(entry, "v"))
        assert np.load(cache)["key"] == key
        write_clip(root / "v.clip2.wav", pitch=300.0)
        spec = engine.read_spec(entry, "v")
        XttsEngine(EngineOptions()).load(spec)
    assert np.load(cache)["key"] != key
    said = [r.getMessage() for r in caplog.records if "speaker conditioning" in r.getMessage()]
    assert [m.split(": ")[1].split(" ")[2] for m in said] == ["computed", "read", "computed"]
    with np.load(cache, allow_pickle=False) as data:
        assert data["gpt_cond_latent"].shape[:2] == (1, 32)
        assert data["speaker_embedding"].shape == (1, 512, 1)


def test_voices_with_missing_or_unreadable_files_say_which(root: Path) -> None:
    from chorus.server.engines.xtts import XttsEngine

    engine = XttsEngine(EngineOptions())
    entry = write_cloned_voice(root, "gone")
    (root / "gone.clip1.wav").unlink()
    with pytest.raises(VoiceConfigError, match=r"clip .*gone\.clip1\.wav is missing") as err:
        engine.read_spec(entry, "gone")
    assert root / "gone.clip1.wav" in err.value.files  # its return is watched
    entry = write_cloned_voice(root, "noise")
    (root / "noise.clip1.wav").write_bytes(b"RIFF not really")
    with pytest.raises(VoiceConfigError, match=r"noise\.clip1\.wav is not audio"):
        engine.read_spec(entry, "noise")
    entry = write_cloned_voice(root, "elsewhere", checkpoint="nowhere")
    with pytest.raises(VoiceConfigError, match=r"nowhere/config\.json is missing.*CPML"):
        engine.read_spec(entry, "elsewhere")
    (root / "bad.xtts.json").write_text('{"clips": [], "language": "en"}')
    with pytest.raises(VoiceConfigError, match="'clips' must list"):
        engine.read_spec(root / "bad.xtts.json", "bad")


def test_torch_decides_xtts_device_on_its_own(root: Path, caplog: pytest.LogCaptureFixture,
                                              ) -> None:
    """This torch is the CPU build: ``auto`` keeps XTTS on the CPU with one INFO line that
    says why, and ``cuda`` is a start-up error naming torch, not onnxruntime."""
    import torch  # pyright: ignore[reportMissingImports]

    from chorus.server.engines.devices import DeviceError, resolve_torch
    from chorus.server.engines.xtts import XttsEngine

    if torch.version.cuda is not None:
        pytest.skip(f"torch {torch.__version__} is a CUDA build: the CPU build's answers "
                    "are this test's; test_xtts_speaks_on_a_cuda_gpu checks a GPU's")
    with caplog.at_level(logging.INFO, logger="chorus.server.engines.devices"):
        engine = XttsEngine(EngineOptions(requested_device="auto"))
    [line] = [r for r in caplog.records if "--device auto" in r.getMessage()]
    assert line.levelno == logging.INFO and "XTTS" in line.getMessage()
    assert "CPU build" in line.getMessage()
    voice = engine.load(engine.read_spec(write_cloned_voice(root, "auto"), "auto"))
    assert voice.device == "cpu"
    for wanted in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match=r"XTTS \(torch\) cannot run on CUDA GPU "
                                              r"\d: this torch .* is the CPU build"):
            resolve_torch(wanted)
        with pytest.raises(DeviceError):
            XttsEngine(EngineOptions(requested_device=wanted))


def _torch_has_a_gpu() -> bool:
    if not xtts_installed():
        return False
    import torch  # pyright: ignore[reportMissingImports]

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not _torch_has_a_gpu(), reason="torch finds no CUDA GPU here")
def test_xtts_speaks_on_a_cuda_gpu(root: Path) -> None:
    """Where torch has a GPU, ``auto`` takes it: the model, the conditioning and the
    stream run there, and the audio is as long as on the CPU."""
    from chorus.server.engines.xtts import XttsEngine

    engine = XttsEngine(EngineOptions(requested_device="auto"))
    voice = engine.load(engine.read_spec(write_cloned_voice(root, "gpu"), "gpu"))
    assert voice.device == "cuda:0"
    assert latents_path(root, "gpu").is_file()
    stream = voice.start(voice.prepare(LONG)[0], SynthesisParams())
    chunks = []
    while (chunk := stream.next()) is not None:
        assert chunk.dtype == np.int16 and chunk.ndim == 1
        chunks.append(chunk)
    stream.close()
    expected = (TINY_AUDIO_TOKENS - 3) * 1024 * 24000 / 22050  # the tiny model never stops
    assert len(chunks) > 1
    assert abs(sum(map(len, chunks)) - expected) < 0.1 * expected
    assert np.abs(np.concatenate(chunks)).max() > 0
