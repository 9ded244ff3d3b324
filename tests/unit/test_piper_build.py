"""Building a Piper voice's streaming parts: measured contexts, the cache, the SNR."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from chorus.common.layout import TEMP_PREFIX
from chorus.server.engines.piper import CALIBRATION_PEAK, PiperLoadedVoice, calibration_key
from chorus.server.engines.piper_build import OPTIMIZED_PARTS, cpu_isa, snr_db
from tests.unit.piper_streaming import JOE_CONFIG, JOE_MODEL, engine, load, load_joe, quiet


@pytest.fixture(scope="module")
def joe(graph_cache_dir: Path) -> PiperLoadedVoice:
    return load_joe(graph_cache_dir)


def test_measured_contexts_cover_the_receptive_fields(joe: PiperLoadedVoice) -> None:
    report = joe.split_report
    assert report is not None and report.graph is not None and report.exact
    layout = report.graph.layout
    # Measured on the joe voice while designing this: decoder ±11 frames, flow ±32.
    assert 11 <= layout.dec_context <= 16
    assert 28 <= layout.flow_context <= 40
    assert (layout.upsample, layout.hop) == (8, 256)


def test_parts_are_cached_by_content_and_reused(tmp_path: Path) -> None:
    cache = tmp_path / "graphs"
    model_dir = tmp_path / "voices"
    model_dir.mkdir()
    shutil.copyfile(JOE_MODEL, model_dir / "copy.onnx")
    shutil.copyfile(JOE_CONFIG, model_dir / "copy.onnx.json")
    first = load(engine(cache), model_dir / "copy.onnx", model_dir / "copy.onnx.json",
                 "copy")
    [entry] = cache.iterdir()
    assert entry.name.startswith("v2-")
    assert sorted(p.name for p in entry.iterdir()) == [
        "dec1.onnx", "dec2.onnx", "encoder.onnx", "flow.onnx", "split.json"]
    meta = json.loads((entry / "split.json").read_text())
    [(key, outcome)] = meta["verified"].items()
    assert "1 thread(s)" in key
    assert outcome == {"exact": True, "calibrations": {calibration_key(): pytest.approx(
        CALIBRATION_PEAK / first.gain, rel=2e-3)}}
    again = load(engine(cache), model_dir / "copy.onnx", model_dir / "copy.onnx.json",
                 "copy")
    cached, built = again.split_report, first.split_report
    assert cached is not None and any("from" in n for n in cached.notes)
    assert cached.from_cache and built is not None and not built.from_cache
    assert cached.graph is not None and built.graph is not None
    assert cached.graph.layout == built.graph.layout
    assert again.gain == first.gain
    # A cache that cannot be written: parts built in memory, streaming all the same.
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    memory = load(engine(blocked / "graphs"), model_dir / "copy.onnx",
                  model_dir / "copy.onnx.json", "copy")
    assert memory.split_report is not None and memory.streaming
    assert any("not writable" in n for n in memory.split_report.notes)


def test_the_calibration_peak_is_kept_with_the_verification(tmp_path: Path) -> None:
    """A load reads the voice's gain from the peak recorded in the cache instead of
    rendering the calibration text again; a peak recorded for another phonemizer or
    text is not taken (measured again and added beside it)."""
    cache = tmp_path / "graphs"
    measured = load(engine(cache), JOE_MODEL, JOE_CONFIG, "joe")
    [entry] = cache.iterdir()
    record = entry / "split.json"
    meta = json.loads(record.read_text())
    [outcome] = meta["verified"].values()
    assert list(outcome["calibrations"]) == [calibration_key()]
    # A record is what the load goes by: half the peak, twice the gain.
    outcome["calibrations"] = {calibration_key(): CALIBRATION_PEAK / measured.gain / 2}
    record.write_text(json.dumps(meta))
    recorded = load(engine(cache), JOE_MODEL, JOE_CONFIG, "joe")
    assert recorded.gain == pytest.approx(2 * measured.gain, rel=2e-3)
    outcome["calibrations"] = {calibration_key(): "loud"}  # a damaged record: measured
    record.write_text(json.dumps(meta))
    assert load(engine(cache), JOE_MODEL, JOE_CONFIG, "joe").gain == measured.gain
    outcome["calibrations"] = {"piper-tts 0.0, text 0": 0.01}
    record.write_text(json.dumps(meta))
    again = load(engine(cache), JOE_MODEL, JOE_CONFIG, "joe")
    assert again.gain == measured.gain
    [outcome] = json.loads(record.read_text())["verified"].values()
    assert sorted(outcome["calibrations"]) == sorted([calibration_key(), "piper-tts 0.0, text 0"])


def _optimized(entry: Path) -> list[str]:
    return sorted(p.name.split(".")[0] for p in entry.glob("*.optimized-*.onnx"))


def _outcome(entry: Path) -> dict[str, object]:
    [outcome] = json.loads((entry / "split.json").read_text())["verified"].values()
    assert isinstance(outcome, dict)
    return outcome


def test_optimized_graphs_are_kept_once_bit_exact_and_loaded_as_they_are(
        tmp_path: Path) -> None:
    """The load after the cut saves each part as onnxruntime optimized it and keeps it
    once the calibration sentence sounds the same bit for bit; later loads run those
    graphs without optimizing again, with the same audio. A damaged file is saved
    again; a graph recorded as different is not tried again."""
    cache = tmp_path / "graphs"
    cut = load(engine(cache), JOE_MODEL, JOE_CONFIG, "joe")
    [entry] = cache.iterdir()
    assert _optimized(entry) == [] and "optimized" not in _outcome(entry)
    # what a process killed while saving left behind, and one another is writing now
    stale, fresh = entry / f"{TEMP_PREFIX}1-encoder.x", entry / f"{TEMP_PREFIX}2-flow.x"
    for path in (stale, fresh):
        path.write_bytes(b"partial")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    other_key = entry / "encoder.optimized-0123456789abcdef.onnx"  # an older onnxruntime's
    other_key.write_bytes(b"graph")
    saved = load(engine(cache), JOE_MODEL, JOE_CONFIG, "joe")
    assert not other_key.exists()
    assert _optimized(entry) == sorted(OPTIMIZED_PARTS) == ["encoder"]
    assert _outcome(entry)["optimized"] is True
    assert [p for p in entry.iterdir() if p.name.startswith(TEMP_PREFIX)] == [fresh]
    stale.write_bytes(b"partial")  # left by a writer killed after the graph was kept
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fast = load(engine(cache), JOE_MODEL, JOE_CONFIG, "joe")
    assert not stale.exists()
    report = fast.split_report
    assert report is not None and report.optimized and fast.streaming
    assert any("as optimized before" in note for note in report.notes)
    [unit] = cut.prepare("The optimized graph says the same.")
    heard = cut.render(unit, quiet())
    assert np.array_equal(fast.render(unit, quiet()), heard)
    assert np.array_equal(saved.render(unit, quiet()), heard)

    encoder = next(entry.glob("encoder.optimized-*.onnx"))
    encoder.write_bytes(b"not a graph")
    damaged = load(engine(cache), JOE_MODEL, JOE_CONFIG, "joe")
    assert damaged.split_report is not None and not damaged.split_report.optimized
    assert damaged.streaming and np.array_equal(damaged.render(unit, quiet()), heard)
    assert encoder.stat().st_size > 1000 and _outcome(entry)["optimized"] is True

    meta = json.loads((entry / "split.json").read_text())
    [key] = meta["verified"]
    meta["verified"][key]["optimized"] = False
    (entry / "split.json").write_text(json.dumps(meta))
    for path in entry.glob("*.optimized-*.onnx"):
        path.unlink()
    refused = load(engine(cache), JOE_MODEL, JOE_CONFIG, "joe")
    assert refused.split_report is not None and not refused.split_report.optimized
    assert _optimized(entry) == [] and _outcome(entry)["optimized"] is False


def test_a_prebuilt_cache_is_read_never_written(tmp_path: Path) -> None:
    """The server image's prebuilt parts serve a voice whose writable cache is empty;
    their verification is taken only when made for the same key (CPU features
    included). Else the parts are copied into the writable cache, where this machine's
    verification, peak and optimized graphs are then kept (without one, verified again
    at every load): the prebuilt cache stays as built."""
    prebuilt, cache = tmp_path / "prebuilt", tmp_path / "cache"
    built = load(engine(prebuilt), JOE_MODEL, JOE_CONFIG, "joe")
    [entry] = prebuilt.iterdir()
    record = entry / "split.json"
    meta = json.loads(record.read_text())
    [key] = meta["verified"]
    assert f"cpu {cpu_isa()}" in key

    files = sorted(p.name for p in entry.iterdir())
    trusted = load(engine(cache, prebuilt_graphs=prebuilt), JOE_MODEL, JOE_CONFIG, "joe")
    report = trusted.split_report
    assert report is not None and report.from_cache and report.cache_entry == entry
    assert report.exact and report.snr_db is None  # the record's verification, not a new one
    assert not cache.exists()
    assert trusted.gain == built.gain

    meta["verified"] = {key.replace(f"cpu {cpu_isa()}", "cpu other"): {"exact": True}}
    record.write_text(json.dumps(meta))
    before = record.read_bytes()
    # Without a writable cache: verified again at every load, nothing written.
    alone = load(engine(None, prebuilt_graphs=prebuilt), JOE_MODEL, JOE_CONFIG, "joe")
    report = alone.split_report
    assert report is not None and report.from_cache and report.snr_db == float("inf")
    assert report.cache_entry == entry and not report.recorded
    # With one: the parts are copied there first, and this CPU's records kept there.
    checked = load(engine(cache, prebuilt_graphs=prebuilt), JOE_MODEL, JOE_CONFIG, "joe")
    report = checked.split_report
    assert report is not None and report.from_cache and report.snr_db == float("inf")
    adopted = cache / entry.name
    assert report.cache_entry == adopted and report.recorded
    assert record.read_bytes() == before
    assert sorted(p.name for p in entry.iterdir()) == files  # no optimized graphs either
    for part in ("encoder", "flow", "dec1", "dec2"):
        assert (adopted / f"{part}.onnx").read_bytes() == (entry / f"{part}.onnx").read_bytes()
    # the load that verifies saves no optimized graph (often a pod's only load)
    assert _outcome(adopted)["exact"] is True and "optimized" not in _outcome(adopted)
    [verified_key] = json.loads((adopted / "split.json").read_text())["verified"]
    assert f"cpu {cpu_isa()}" in verified_key
    later = load(engine(cache, prebuilt_graphs=prebuilt), JOE_MODEL, JOE_CONFIG, "joe")
    report = later.split_report
    assert report is not None and report.cache_entry == adopted and report.snr_db is None
    assert not report.optimized and _outcome(adopted)["optimized"] is True
    fast = load(engine(cache, prebuilt_graphs=prebuilt), JOE_MODEL, JOE_CONFIG, "joe")
    assert fast.split_report is not None and fast.split_report.optimized
    assert fast.gain == later.gain == built.gain == checked.gain == alone.gain


def test_cpu_features_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma avx512f amx_tile\n")
    assert cpu_isa.__wrapped__(cpuinfo) == "avx2+fma+avx512f+amx_tile"
    cpuinfo.write_text("processor\t: 0\n")
    assert cpu_isa.__wrapped__(cpuinfo) == "unknown"
    assert cpu_isa.__wrapped__(tmp_path / "missing") == "unknown"


def _float(values: list[float]) -> npt.NDArray[np.float32]:
    return np.array(values, dtype=np.float32)


def test_snr() -> None:
    assert snr_db(_float([1, 2, 3]), _float([1, 2, 3])) == float("inf")
    assert 19 < snr_db(_float([1.1, 2, 3]), _float([1, 2, 3])) < 42
