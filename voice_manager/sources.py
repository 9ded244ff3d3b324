"""Local-path and HTTP(S) URL sources: stream a voice's two files into staged temp files.

Both use the standard library only (urllib with a socket timeout, so a stalled server
is a timeout rather than a hang; a body shorter than its Content-Length is an
``IncompleteRead``). The Hugging Face source lives in :mod:`.hub` because it brings
``huggingface_hub`` with it.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from chorus.common.layout import CONFIG_SUFFIX, MODEL_SUFFIX
from chorus.common.manifest import DesiredVoice, LocalSource, UrlSource

from .catalog import Catalog
from .errors import VoiceInstallError
from .install import CHUNK, Progress, StagedFile, discard, ensure_free_space, stage_chunks
from .integrity import check_config, check_model

__all__ = ["FetchSettings", "ProgressFactory", "StagedVoice", "fetch_local", "fetch_url",
           "stage_url"]

ProgressFactory = Callable[[str, int | None], Progress]
"""Makes a progress sink for one file: (label, total bytes or None)."""
USER_AGENT = "chorus-voice-manager/0.1"


@dataclass(frozen=True)
class FetchSettings:
    """How sources reach the network."""

    timeout_s: float = 30.0
    """Connect timeout and the longest wait for any single read."""
    hf_endpoint: str | None = None
    """Hugging Face endpoint; ``None`` lets huggingface_hub use ``HF_ENDPOINT``."""
    progress: ProgressFactory | None = None
    catalog: Catalog | None = None
    """Known hub voices: a download of one of them from the catalog's repo must also
    match its size and md5 there (see :mod:`.hub`); ``None`` skips that check."""


@dataclass(frozen=True)
class StagedVoice:
    """Both files of a voice, staged and verified, ready for :func:`install.commit_voice`."""

    model: StagedFile
    config: StagedFile

    @property
    def size(self) -> int:
        return self.model.size + self.config.size


def _check_unverified(spec: DesiredVoice, staged: StagedVoice) -> StagedVoice:
    """Without a sha256, a file cut short can look finished: refuse what is not whole
    (see :mod:`.integrity`), and leave nothing staged behind."""
    if spec.sha256 is not None:
        return staged
    try:
        check_model(staged.model.path, f"{spec.name}{MODEL_SUFFIX}")
        check_config(staged.config.path, f"{spec.name}{CONFIG_SUFFIX}")
    except BaseException:
        discard(staged.model, staged.config)
        raise
    return staged


def _read_chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def _progress(settings: FetchSettings, label: str, total: int | None) -> Progress | None:
    return settings.progress(label, total) if settings.progress else None


def fetch_local(spec: DesiredVoice, source: LocalSource, dest: Path,
                settings: FetchSettings) -> StagedVoice:
    """Copy ``<path>/<name>.onnx`` and its config from a local directory."""
    folder = Path(source.path)
    paths = [folder / f"{spec.name}{MODEL_SUFFIX}", folder / f"{spec.name}{CONFIG_SUFFIX}"]
    expected = [spec.sha256.model, spec.sha256.config] if spec.sha256 else [None, None]
    try:
        ensure_free_space(dest, sum(p.stat().st_size for p in paths))
    except OSError as err:
        raise VoiceInstallError(f"{spec.name}: cannot read local source: {err}") from err
    staged: list[StagedFile] = []
    try:
        for path, sha in zip(paths, expected, strict=True):
            with path.open("rb") as src:
                staged.append(stage_chunks(
                    dest, path.name, _read_chunks(src), expected_sha256=sha,
                    expected_size=path.stat().st_size,
                    progress=_progress(settings, path.name, path.stat().st_size)))
    except OSError as err:
        discard(*staged)
        raise VoiceInstallError(f"{spec.name}: cannot copy {err.filename}: {err}") from err
    except BaseException:
        discard(*staged)
        raise
    return _check_unverified(spec, StagedVoice(staged[0], staged[1]))


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def stage_url(url: str, label: str, dest: Path, expected_sha256: str | None,
              settings: FetchSettings, headers: dict[str, str] | None = None) -> StagedFile:
    """Download ``url`` into a verified temp file in ``dest``.

    ``headers`` go to ``url`` only, never to a host it redirects to (a CDN must not
    see a hub token).
    """
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310
    for key, value in (headers or {}).items():
        request.add_unredirected_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:  # noqa: S310
            size = _content_length(response)
            if size is not None:
                ensure_free_space(dest, size)
            return stage_chunks(dest, label, _read_chunks(response),
                                expected_sha256=expected_sha256, expected_size=size,
                                progress=_progress(settings, label, size))
    except urllib.error.HTTPError as err:
        transient = err.code >= 500 or err.code in (408, 429)
        raise VoiceInstallError(f"{label}: HTTP {err.code} {err.reason} from {url}",
                                transient=transient) from err
    except urllib.error.URLError as err:
        # An untrusted certificate stays untrusted on retry; trust it via SSL_CERT_FILE.
        untrusted = isinstance(err.reason, ssl.SSLCertVerificationError)
        raise VoiceInstallError(f"{label}: cannot reach {url}: {err.reason}",
                                transient=not untrusted) from err
    except TimeoutError as err:
        raise VoiceInstallError(f"{label}: timed out after {settings.timeout_s:g} s "
                                f"reading {url}", transient=True) from err
    except (http.client.HTTPException, OSError) as err:
        raise VoiceInstallError(f"{label}: download from {url} broke off: {err!r}",
                                transient=True) from err


def fetch_url(spec: DesiredVoice, source: UrlSource, dest: Path,
              settings: FetchSettings) -> StagedVoice:
    """Download model and config from their URLs, verifying sha256 when the manifest has
    it, else that both files are whole."""
    if spec.sha256 is None and not source.allow_unverified:
        raise VoiceInstallError(f"{spec.name}: URL source without sha256 needs allowUnverified")
    model = stage_url(source.model, f"{spec.name}{MODEL_SUFFIX}", dest,
                       spec.sha256.model if spec.sha256 else None, settings)
    try:
        config = stage_url(source.config, f"{spec.name}{CONFIG_SUFFIX}", dest,
                            spec.sha256.config if spec.sha256 else None, settings)
    except BaseException:
        discard(model)
        raise
    return _check_unverified(spec, StagedVoice(model, config))
