"""Building a Piper voice's streaming parts: cut, measured, verified, cached.

How far each part reaches in time (its receptive field) is measured at load by
perturbing one frame and seeing which outputs change; the context used is that plus a
margin. Then the windowed output of a calibration text is compared with the whole
graph's: it must match bit for bit (or, with several onnxruntime threads per call, to at
least :data:`MIN_SNR_DB`), else the voice falls back to whole sentences with one log line.
:class:`Builder` says what it did in a :class:`SplitReport`.

**Cache.** The parts are written once per model content (sha256) to a cache directory
(``$XDG_CACHE_HOME/chorus/graphs`` by default; the voices volume may be read-only) with
atomic renames, together with the measured contexts and the verification result for the
onnxruntime version, thread count and window plan in use. A later load reads the parts
and skips the analysis, the whole-graph session and the verification (measured on
en_US-joe-medium: ~4 s on a miss; a hit costs a sha256 of the model, ~0.1 s, on top of
creating the part sessions, which takes as long as creating one for the whole graph).
When the directory is not writable, the parts are built in memory at every load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime

from chorus.common.files import file_sha256, remove_temp_files, write_atomic
from chorus.common.layout import TEMP_PREFIX

from .backends import OrtPart, Part
from .piper_graph import SplitError, SplitLayout, analyze, extract_parts
from .piper_windows import FloatArray, Sentence, SplitGraph, plan_windows

__all__ = [
    "MIN_SNR_DB",
    "OPTIMIZED_PARTS",
    "Builder",
    "SplitReport",
    "measure",
    "remember",
    "snr_db",
    "update_outcome",
    "verification_key",
    "verify",
]

FORMAT = 2
"""Version of the cut and of the cache layout; a change makes old cache entries unused."""

MIN_SNR_DB = 100.0
"""Windowed audio that is not bit-exact must still be this close to the whole sentence."""

CONTEXT_MARGIN = 2
"""Frames of context added to each measured receptive field."""

OPTIMIZED_PARTS = frozenset({"encoder"})
"""The parts whose graph is kept as onnxruntime optimized it: only the encoder's session
time pays for the disk (joe, measured: encoder 311 -> 71 ms for 28 MB; flow 18 -> 15 ms
for 28 MB; dec1 and dec2 3-5 -> 3 ms)."""


class SessionFactory(Protocol):
    """Makes a part's session (:func:`.onnx_runs.session` with the engine's settings)."""

    def __call__(self, model: bytes | str, *, optimized_to: str | None = None,
                 preoptimized: bool = False) -> onnxruntime.InferenceSession: ...


# -- measuring and verifying ------------------------------------------------------------


def snr_db(test: npt.NDArray[Any], reference: npt.NDArray[Any]) -> float:
    """Signal-to-noise ratio of ``test`` against ``reference`` (inf when equal)."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((test.astype(np.float64) - ref) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(float(np.sum(ref**2)), 1e-30) / noise)


def _reach(changed: npt.NDArray[np.bool_], at: int, per_frame: int, frames: int) -> int:
    """Frames from ``at`` to the farthest changed output position (in frames)."""
    where = np.nonzero(changed)[0]
    if where.size == 0:
        raise SplitError("a perturbation changed nothing downstream")
    first, last = int(where[0]) // per_frame, int(where[-1]) // per_frame
    if first <= 0 or last >= frames - 1:
        raise SplitError("receptive field too wide to measure on the calibration text")
    return max(at - first, last - at)


def _changed(a: FloatArray, b: FloatArray) -> npt.NDArray[np.bool_]:
    """Time positions (last axis) where any channel differs."""
    diff = a != b
    return np.asarray(diff.reshape(-1, diff.shape[-1]).any(axis=0))


def measure(graph: SplitGraph, feeds: dict[str, npt.NDArray[Any]]) -> SplitLayout:
    """Fill in rates and contexts by running the parts whole on one sentence."""
    layout = graph.layout
    encoded = graph.encode(feeds)
    frames = encoded.frames
    at = frames // 2
    base: dict[str, npt.NDArray[Any]] = {**encoded.conditioning, **encoded.arrays}

    flow_reach = 0
    if "flow" in layout.part_inputs:
        z = graph.run("flow", base)[0]
        for name in layout.encoder_outputs:
            bumped = dict(base)
            bumped[name] = base[name].copy()
            bumped[name][..., at] += 1.0
            flow_reach = max(flow_reach, _reach(
                _changed(z, graph.run("flow", bumped)[0]), at, 1, frames))
        base[layout.z] = z
    z = base[layout.z]
    if z.shape[-1] != frames:
        raise SplitError("decoder input is not at frame rate")
    bumped_z = dict(base)
    bumped_z[layout.z] = z.copy()
    bumped_z[layout.z][..., at] += 1.0

    def decode(feeds: dict[str, npt.NDArray[Any]]) -> tuple[FloatArray | None, FloatArray]:
        if layout.upsampled:
            up = graph.run("dec1", feeds)[0]
            return up, graph.run("dec2", {**feeds, layout.upsampled: up})[0]
        return None, graph.run("dec", feeds)[0]

    up, audio = decode(base)
    up_bumped, audio_bumped = decode(bumped_z)
    samples = audio.reshape(-1).shape[0]
    if samples % frames:
        raise SplitError(f"{samples} audio samples for {frames} frames")
    hop = samples // frames
    dec_reach = _reach(audio.reshape(-1) != audio_bumped.reshape(-1), at, hop, frames)
    upsample, dec1_reach = 1, 0
    if up is not None and up_bumped is not None:
        if up.shape[-1] % frames:
            raise SplitError("upsampled tensor is not a whole multiple of the frames")
        upsample = up.shape[-1] // frames
        dec1_reach = _reach(_changed(up, up_bumped), at, upsample, frames)
    return SplitLayout(
        encoder_outputs=layout.encoder_outputs, z=layout.z, upsampled=layout.upsampled,
        output=layout.output, part_inputs=layout.part_inputs,
        flow_context=flow_reach + CONTEXT_MARGIN if flow_reach else 0,
        dec1_context=dec1_reach + CONTEXT_MARGIN if up is not None else 0,
        dec_context=dec_reach + CONTEXT_MARGIN, upsample=upsample, hop=hop)


def verify(graph: SplitGraph, full: onnxruntime.InferenceSession,
           sentences: Sequence[dict[str, npt.NDArray[Any]]], windows: Sequence[int],
           ) -> float:
    """Worst SNR (dB, inf when bit-exact) of windowed against whole-graph audio; raises
    :class:`SplitError` below :data:`MIN_SNR_DB` or on a length mismatch."""
    worst = math.inf
    full_names = [i.name for i in full.get_inputs()]
    for feeds in sentences:
        expected = np.asarray(full.run(None, {n: feeds[n] for n in full_names})[0]).reshape(-1)
        encoded = graph.encode(feeds)
        sentence = Sentence(graph, encoded, plan_windows(encoded.frames, windows))
        got = np.concatenate([sentence.render(i) for i in range(len(sentence))])
        if got.shape != expected.shape:
            raise SplitError(f"windows gave {got.shape[0]} samples, the graph "
                             f"{expected.shape[0]}")
        worst = min(worst, snr_db(got, expected))
    if worst < MIN_SNR_DB:
        raise SplitError(f"windowed audio differs from the whole graph ({worst:.0f} dB SNR)")
    return worst


# -- building, with the cache -----------------------------------------------------------


@dataclass(frozen=True)
class SplitReport:
    """What :meth:`Builder.build` did: the parts, or why there are none; what was
    verified; where the parts came from."""

    graph: SplitGraph | None
    """The parts; ``None`` when the voice must render whole sentences (see ``fallback``)."""
    verification: str
    """What the windows are verified for (see :func:`verification_key`)."""
    fallback: str | None = None
    """Why there are no parts: no cut, windows that do not match, or an error."""
    exact: bool = False
    """Windows equal the whole graph bit for bit (else to at least MIN_SNR_DB)."""
    snr_db: float | None = None
    """Worst SNR of windows against the whole graph, measured at this load (inf when
    bit-exact); ``None`` when the cache's record of an earlier verification was used."""
    cache_entry: Path | None = None
    """The cache entry holding the parts; ``None`` when they live in memory only."""
    from_cache: bool = False
    """The parts were read from ``cache_entry`` rather than cut from the model."""
    cache_error: str | None = None
    """Why the parts could not be written to the cache."""
    sources: Mapping[str, bytes | str] = field(default_factory=dict, repr=False)
    """Each part's ONNX model (a cache path, or bytes when not cached), for another
    backend to build its own parts from (:mod:`.backend_gates`); dropped once used."""
    calibrations: Mapping[str, float] = field(default_factory=dict)
    """Calibration peaks recorded with the verification, by what they were measured
    for (:func:`remember`): the voice's load reads its gain from here instead of
    rendering the calibration text again."""
    backends: Mapping[str, Any] = field(default_factory=dict)
    """Backend choices recorded with the verification, by what was asked for
    (:func:`remember`, :func:`.backend_gates.choice_key`)."""
    recorded: bool = False
    """The verification's outcome is kept in a writable cache entry (not the prebuilt
    one), where :func:`remember` can add to it."""
    optimized: bool = False
    """The sessions run the graphs onnxruntime optimized at an earlier load, as they are
    (kept in ``cache_entry`` once found bit-exact): most of their load time saved."""

    @property
    def notes(self) -> list[str]:
        """Where the parts came from and how closely they match, for the load log line."""
        notes = []
        if self.from_cache:
            notes.append(f"graph parts from {self.cache_entry}"
                         + (" (as optimized before)" if self.optimized else ""))
        elif self.cache_entry is not None:
            notes.append(f"graph parts cached in {self.cache_entry}")
        if self.cache_error is not None:
            notes.append(f"graph cache not writable ({self.cache_error}); parts built "
                         "in memory")
        if self.snr_db is not None and not self.exact:
            notes.append(f"windows match whole sentences to {self.snr_db:.0f} dB SNR, "
                         "not bit for bit")
        return notes


STALE_TEMP_S = 600.0
"""A temporary file older than this in a cache entry was left by a process that died
while writing it (saving a graph takes seconds)."""



_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd")
"""CPU features that change which kernels onnxruntime runs, and so its exact results."""


@cache
def cpu_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """This CPU's :data:`_ISA_FLAGS`, e.g. ``avx2+fma`` (``unknown`` where not told):
    a verification made on another kind of CPU is not taken on trust."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown"
    flags: set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
            break
    return "+".join(flag for flag in _ISA_FLAGS if flag in flags) or "unknown"


def verification_key(threads: int, windows: Sequence[int], device: str = "cpu") -> str:
    """What a verification holds for: on the CPU, this CPU's features; on a GPU, the
    device (a verification made on the CPU is not taken for CUDA, nor the reverse)."""
    where = f"cpu {cpu_isa()}" if device == "cpu" else f"device {device}"
    return (f"onnxruntime {onnxruntime.__version__}, {threads} thread(s), "
            f"windows {','.join(map(str, windows))}, {where}")


@dataclass
class Builder:
    """Builds (or reads from the cache) a voice's :class:`SplitGraph`."""

    session: SessionFactory
    threads: int
    windows: Sequence[int]
    cache_dir: Path | None
    full_session: Callable[[], onnxruntime.InferenceSession]
    calibration: Callable[[], list[dict[str, npt.NDArray[Any]]]]
    """Model inputs of the calibration sentences (noise 0)."""
    prebuilt_dir: Path | None = None
    """A read-only cache made ahead (the server image's, for its embedded voice): its
    parts are used when ``cache_dir`` has none, and its verification when it was made
    for the same key (onnxruntime, threads, windows, CPU features or GPU); for another
    key they are copied into ``cache_dir`` first (:meth:`_adopted`)."""
    device: str = "cpu"
    """Where ``session`` runs the parts (part of the verification key)."""

    def build(self, model_path: Path) -> SplitReport:
        """The voice's parts and how they were made; never raises for a graph that
        cannot stream (the report says why instead)."""
        key = verification_key(self.threads, self.windows, self.device)
        try:
            return self._build(model_path, key)
        except Exception as err:  # noqa: BLE001 - onnx and onnxruntime raise assorted errors
            reason = str(err) if isinstance(err, SplitError) else f"{type(err).__name__}: {err}"
            return SplitReport(graph=None, verification=key, fallback=reason)

    def _build(self, model_path: Path, key: str) -> SplitReport:
        entry, meta = self._lookup(model_path)
        if meta is not None and entry is not None:
            entry, meta = self._adopted(entry, meta, key)
            return self._from_entry(entry, meta, key)
        import onnx

        model = onnx.load(str(model_path))
        layout = analyze(model)
        blobs = extract_parts(model, layout)
        del model
        sessions = self._sessions(blobs)
        graph = SplitGraph(measure(SplitGraph(layout, sessions), self.calibration()[-1]),
                           sessions)
        cache_error = None
        sources = dict[str, bytes | str](blobs)
        if entry is not None:
            try:
                entry.mkdir(parents=True, exist_ok=True)
                for part, blob in blobs.items():
                    write_atomic(entry / f"{part}.onnx", blob)
                sources = {part: str(entry / f"{part}.onnx") for part in blobs}
            except OSError as err:
                cache_error = err.strerror or str(err)
                entry = None
        return self._verified(graph, key, entry, {}, from_cache=False,
                              cache_error=cache_error, sources=sources)

    def _adopted(self, entry: Path, meta: dict[str, Any], key: str,
                 ) -> tuple[Path, dict[str, Any]]:
        """The entry to load from: a prebuilt entry not verified for ``key`` (an image
        built on another CPU) is copied into the writable cache first, so that this
        machine's verification, calibration peak and optimized graphs are kept, and
        later loads take ~0.2 s instead of ~3 s (joe). Where that cannot be written, the
        prebuilt entry as it is (verified again at every load)."""
        if (self.cache_dir is None or self.prebuilt_dir is None
                or entry.parent != self.prebuilt_dir or key in meta.get("verified", {})):
            return entry, meta
        target = self.cache_dir / entry.name
        layout = SplitLayout.from_json(meta["layout"])
        try:
            target.mkdir(parents=True, exist_ok=True)
            for part in layout.parts:
                write_atomic(target / f"{part}.onnx", (entry / f"{part}.onnx").read_bytes())
        except OSError:
            return entry, meta
        save_meta(target, layout, {})
        adopted = read_meta(target)
        return (target, adopted) if adopted is not None else (entry, meta)

    def _from_entry(self, entry: Path, meta: dict[str, Any], key: str) -> SplitReport:
        """The parts of a cache entry: as onnxruntime optimized them at an earlier load
        when that load kept them (bit-exact, for this key), else as cut, their optimized
        graphs then saved once into a writable entry (a graph that did not run bit for
        bit like the parts is recorded as such and not tried again)."""
        layout = SplitLayout.from_json(meta["layout"])
        verified = meta.get("verified", {})
        outcome = verified.get(key)
        if outcome is not None and "error" in outcome:
            raise SplitError(f"{outcome['error']} (recorded in {entry})")
        sources: dict[str, bytes | str] = {part: str(entry / f"{part}.onnx")
                                           for part in layout.parts}
        prebuilt = self.prebuilt_dir is not None and entry.parent == self.prebuilt_dir
        if not prebuilt:
            with contextlib.suppress(OSError):  # best effort: the next load tries again
                remove_temp_files(entry, older_than=STALE_TEMP_S)
        optimized = self._optimized_paths(entry, layout, key)
        state = outcome.get("optimized") if outcome is not None else None
        if outcome is not None and state is True and optimized:
            try:
                parts = self._sessions(
                    {**sources, **{part: str(path) for part, path in optimized.items()}},
                    preoptimized=frozenset(optimized))
            except Exception:  # noqa: BLE001 - a file gone or damaged: saved again below
                state = None
            else:
                return self._cached(SplitGraph(layout, parts), key, entry, outcome, sources,
                                    prebuilt, optimized=True)
        # Not at the load that verifies (the first on this machine, often the only one
        # a pod makes): saving costs that load ~1 s more, and pays back from the next.
        saving = ({part: path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{path.name}")
                   for part, path in optimized.items()}
                  if state is None and outcome is not None and not prebuilt else {})
        try:
            try:
                parts = self._sessions(sources, saving)
            except Exception:  # e.g. an entry onnxruntime cannot write into
                if not saving:
                    raise
                parts, saving = self._sessions(sources), {}
            graph = SplitGraph(layout, parts)
            report = (self._cached(graph, key, entry, outcome, sources, prebuilt)
                      if outcome is not None else
                      self._verified(graph, key, entry, verified, from_cache=True,
                                     sources=sources, record=not prebuilt))
            if saving:
                self._keep_optimized(report, saving, optimized)
            return report
        finally:
            for path in saving.values():
                path.unlink(missing_ok=True)

    def _sessions(self, sources: Mapping[str, bytes | str],
                  optimized_to: Mapping[str, Path] | None = None, *,
                  preoptimized: frozenset[str] = frozenset()) -> dict[str, Part]:
        """A session per part, made side by side: onnxruntime lets go of the GIL while
        it builds one, and a voice's load is then ~30% shorter (0.46 s -> 0.30 s for
        joe's four parts on two cores). ``optimized_to``: where a part's optimized graph
        is written; ``preoptimized``: the parts whose source is such a graph."""
        def make(part: str) -> onnxruntime.InferenceSession:
            target = (optimized_to or {}).get(part)
            return self.session(sources[part], optimized_to=str(target) if target else None,
                                preoptimized=part in preoptimized)

        with ThreadPoolExecutor(len(sources) or 1, thread_name_prefix="parts") as pool:
            made = dict(zip(sources, pool.map(make, sources), strict=True))
        return {part: OrtPart(session) for part, session in made.items()}

    def _optimized_paths(self, entry: Path, layout: SplitLayout, key: str,
                         ) -> dict[str, Path]:
        """Where the :data:`OPTIMIZED_PARTS` are kept as onnxruntime optimized them, for
        ``key`` (onnxruntime's version and this CPU's features among it): CPU only."""
        if self.device != "cpu":
            return {}
        tag = hashlib.sha256(key.encode()).hexdigest()[:16]
        return {part: entry / f"{part}.optimized-{tag}.onnx" for part in layout.parts
                if part in OPTIMIZED_PARTS}

    @staticmethod
    def _cached(graph: SplitGraph, key: str, entry: Path, outcome: Mapping[str, Any],
                sources: dict[str, bytes | str], prebuilt: bool, *,
                optimized: bool = False) -> SplitReport:
        """The report of parts whose verification the cache recorded."""
        peaks, choices = outcome.get("calibrations"), outcome.get("backends")
        # a damaged record is no record: the peak is measured again
        numbers = {k: float(v) for k, v in peaks.items() if isinstance(v, int | float)} \
            if isinstance(peaks, dict) else {}
        return SplitReport(graph=graph, verification=key, exact=bool(outcome["exact"]),
                           cache_entry=entry, from_cache=True, sources=sources,
                           calibrations=numbers,
                           backends=choices if isinstance(choices, dict) else {},
                           recorded=not prebuilt, optimized=optimized)

    def _keep_optimized(self, report: SplitReport, saved: Mapping[str, Path],
                        final: Mapping[str, Path]) -> None:
        """Keep the optimized graphs onnxruntime just wrote if, run as they are, they
        give the calibration sentence's audio bit for bit as the parts do; record the
        outcome either way (a later load then takes them, or does not try again)."""
        graph = report.graph
        if graph is None or not report.recorded or report.cache_entry is None:
            return
        try:
            optimized = SplitGraph(graph.layout, self._sessions(
                {**report.sources, **{part: str(path) for part, path in saved.items()}},
                preoptimized=frozenset(saved)))
            feeds = self.calibration()[-1]
            same = bool(np.array_equal(optimized.whole(feeds), graph.whole(feeds)))
        except Exception:  # noqa: BLE001 - a graph onnxruntime cannot read back is not kept
            same = False
        if same:
            try:
                for part, path in saved.items():
                    os.replace(path, final[part])
            except OSError:
                return  # the cache went away or filled up: a later load tries again
            # Those kept for another key (an onnxruntime before an upgrade) go.
            for path in report.cache_entry.glob("*.optimized-*.onnx"):
                if path not in final.values():
                    path.unlink(missing_ok=True)
        update_outcome(report.cache_entry, report.verification,
                       lambda outcome: {**outcome, "optimized": same})

    def _lookup(self, model_path: Path) -> tuple[Path | None, dict[str, Any] | None]:
        """The cache entry to use and its record: the writable cache's, else the
        prebuilt one's (never written: see :meth:`_adopted` for a key it was not
        verified for)."""
        if self.cache_dir is None and self.prebuilt_dir is None:
            return None, None
        name = f"v{FORMAT}-{file_sha256(model_path)}"
        entry = self.cache_dir / name if self.cache_dir is not None else None
        meta = read_meta(entry) if entry is not None else None
        if meta is None and self.prebuilt_dir is not None:
            prebuilt = read_meta(self.prebuilt_dir / name)
            if prebuilt is not None:
                return self.prebuilt_dir / name, prebuilt
        return entry, meta


    def _verified(self, graph: SplitGraph, key: str, entry: Path | None,
                  verified: dict[str, Any], *, from_cache: bool,
                  sources: dict[str, bytes | str], cache_error: str | None = None,
                  record: bool = True) -> SplitReport:
        """Compare with the whole graph; record the outcome (failures too) in the cache
        (``record``: the entry is the writable cache's, not the prebuilt one)."""
        try:
            snr = verify(graph, self.full_session(), self.calibration(), self.windows)
        except SplitError as err:
            if entry is not None and record:
                save_meta(entry, graph.layout, {**verified, key: {"error": str(err)}})
            raise
        exact = math.isinf(snr)
        if entry is not None and record:
            save_meta(entry, graph.layout, {**verified, key: {"exact": exact}})
        return SplitReport(graph=graph, verification=key, exact=exact, snr_db=snr,
                           cache_entry=entry, from_cache=from_cache,
                           cache_error=cache_error, sources=sources,
                           recorded=entry is not None and record)


def read_meta(entry: Path) -> dict[str, Any] | None:
    """A cache entry's record, or ``None`` when it is missing, of another format or
    lacks a part's file."""
    try:
        meta = json.loads((entry / "split.json").read_text("utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return None
        layout = SplitLayout.from_json(meta["layout"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not all((entry / f"{part}.onnx").is_file() for part in layout.parts):
        return None
    return meta


def save_meta(entry: Path, layout: SplitLayout, verified: dict[str, Any]) -> None:
    """Write a cache entry's record (best effort: a cache that cannot be written only
    costs the next load the work again)."""
    meta = {"format": FORMAT, "layout": layout.to_json(), "verified": verified}
    with contextlib.suppress(OSError):
        write_atomic(entry / "split.json", json.dumps(meta, indent=1).encode())


def update_outcome(entry: Path, key: str,
                   change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Replace the outcome recorded in ``entry`` for the verification ``key`` with
    ``change(outcome)`` (nothing when there is none)."""
    meta = read_meta(entry)
    if meta is None:
        return
    verified = meta.get("verified", {})
    outcome = verified.get(key)
    if not isinstance(outcome, dict) or "exact" not in outcome:
        return
    save_meta(entry, SplitLayout.from_json(meta["layout"]),
              {**verified, key: change(outcome)})


def remember(report: SplitReport, kind: str, key: str, value: Any) -> None:
    """Keep ``value`` under ``key`` in the ``kind`` record (``calibrations``: a peak,
    ``backends``: a backend choice) beside the verification it was measured under (same
    onnxruntime, threads and CPU), so that the next load of the voice skips measuring it
    again. ``key`` names what else the value depends on. Only a writable entry keeps."""
    if report.cache_entry is None or not report.recorded:
        return

    def add(outcome: dict[str, Any]) -> dict[str, Any]:
        kept = outcome.get(kind)
        return {**outcome, kind: {**(kept if isinstance(kept, dict) else {}), key: value}}

    update_outcome(report.cache_entry, report.verification, add)
