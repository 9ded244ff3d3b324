"""The Hugging Face source, through huggingface_hub's own client.

``get_hf_file_metadata`` (a HEAD on ``/{repo}/resolve/{revision}/{path}``) gives the
commit, the size and the ETag; for LFS files (the models) the ETag is the file's sha256,
for small git files (the configs) it is the git blob id (sha1 of ``blob <size>\\0`` +
content). Either is verified when the manifest carries no sha256, so a hub voice is
never installed unchecked. Both files are then fetched at the commit the first HEAD
resolved, so model and config always come from one commit even while a branch moves.

The bytes themselves are fetched from the same resolve URL by :func:`.sources.stage_url`
(hub token in an unredirected header, so a CDN redirect never sees it), not by
``hf_hub_download``: measured here, its resume loop resets its retry budget whenever
some bytes arrive, so a server that keeps dropping the connection halfway makes it
retry forever. Our stager hashes while writing, honours ``--timeout`` and fails into
the manager's own bounded retries like every other source.

A voice that the voice catalog (:mod:`.catalog`) lists for this very repo and path is
also compared with the catalog's size and md5, from the hub's own ``voices.json``: the
size before any byte is fetched, the md5 of what was written. When the catalog was made
at the very commit being downloaded (a refreshed catalog, a pinned revision), it
describes exactly these files and a difference is refused like any hash mismatch: that
check does not trust the server sending the bytes. A catalog of another or an unknown
commit (the bundled snapshot) may describe older files the hub has since replaced, so
there a difference is only logged as a warning; the hub's own hashes still decide. A
manifest sha256 pins exact files, perhaps of another revision, and then the catalog is
not asked.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

from chorus.common.layout import CONFIG_SUFFIX, MODEL_SUFFIX
from chorus.common.manifest import DesiredVoice, HuggingFaceSource

from .catalog import CatalogFile
from .errors import HashMismatchError, VoiceInstallError
from .install import CHUNK, StagedFile, discard, ensure_free_space
from .sources import FetchSettings, StagedVoice, stage_url

__all__ = ["fetch_hf", "fetch_hub_file", "hub_files_size", "piper_repo_folder"]

_LOGGER = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")


def piper_repo_folder(name: str) -> str:
    """The folder of a Piper voice in rhasspy/piper-voices, derived from its key.

    ``en_US-amy-medium`` -> ``en/en_US/amy/medium``: language family, locale, speaker
    dataset, quality.
    """
    parts = name.split("-")
    if len(parts) != 3 or not all(parts) or "_" not in parts[0]:
        raise VoiceInstallError(f"{name}: not a Piper key (LANG_REGION-NAME-QUALITY); "
                                "give huggingFace.path explicitly")
    locale, dataset, quality = parts
    return f"{locale.split('_')[0]}/{locale}/{dataset}/{quality}"


def _git_blob_id(path: Path) -> str:
    """Git's id of a file: sha1 of ``blob <size>\\0`` followed by the content."""
    blob = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            blob.update(chunk)
    return blob.hexdigest()


def _hub_error(label: str, err: BaseException) -> VoiceInstallError:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else None
        transient = status is None or status >= 500 or status in (408, 429)
        reason = f"HTTP {status}" if status is not None else "HTTP error"
        return VoiceInstallError(f"{label}: {reason} from the hub: {str(err).splitlines()[0]}",
                                 transient=transient)
    return VoiceInstallError(f"{label}: hub download failed: {err!r}", transient=True)


def _hub_exceptions() -> tuple[type[BaseException], ...]:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    return (HfHubHTTPError, httpx2.HTTPError, OSError, ValueError)


def _metadata(repo: str, filename: str, revision: str, settings: FetchSettings) -> Any:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo, filename, revision=revision, endpoint=settings.hf_endpoint)
    try:
        return get_hf_file_metadata(url, timeout=settings.timeout_s,
                                    endpoint=settings.hf_endpoint)
    except _hub_exceptions() as err:
        raise _hub_error(filename, err) from err


def _catalog_note(settings: FetchSettings) -> str:
    described = settings.catalog.describe() if settings.catalog else "none"
    return (f" (catalog: {described}; run `chorus voices catalog refresh` if the hub "
            "changed this voice since)")


def _download(repo: str, filename: str, commit: str, dest: Path,
              expected_sha256: str | None, etag: str | None,
              settings: FetchSettings, listed: CatalogFile | None = None) -> StagedFile:
    from huggingface_hub import hf_hub_url

    # public API, exported lazily so mypy cannot see it
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    label = filename.rsplit("/", 1)[-1]
    hash_from_hub = expected_sha256 is None and etag is not None and bool(_SHA256.match(etag))
    if hash_from_hub:
        expected_sha256 = etag  # an LFS file: the hub's ETag is its sha256
    elif expected_sha256 is None and (etag is None or not _GIT_SHA1.match(etag)):
        raise HashMismatchError(f"{label}: the hub gave no usable hash (ETag {etag!r}) "
                                "and none was given")
    url = hf_hub_url(repo, filename, revision=commit, endpoint=settings.hf_endpoint)
    try:
        headers = build_hf_headers()  # token from HF_TOKEN or the login cache
    except _hub_exceptions() as err:
        raise _hub_error(label, err) from err
    auth = {k: v for k, v in headers.items() if k.lower() == "authorization"}
    try:
        staged = stage_url(url, label, dest, expected_sha256, settings, headers=auth)
    except HashMismatchError as err:
        if hash_from_hub:
            raise HashMismatchError(f"{err.message} (hash from the hub's LFS metadata)") from err
        raise
    if expected_sha256 is None and etag is not None:
        blob_sha1 = _git_blob_id(staged.path)
        if blob_sha1 != etag:
            discard(staged)
            raise HashMismatchError(f"{label}: git blob id mismatch with the hub: "
                                    f"expected {etag}, got {blob_sha1}")
    if listed is not None and (staged.size, staged.md5) != (listed.size, listed.md5):
        message = (f"{label}: md5 mismatch with the voice catalog: expected {listed.md5} "
                   f"({listed.size} bytes), got {staged.md5} ({staged.size} bytes)")
        if _authoritative(settings, commit):
            discard(staged)
            raise HashMismatchError(message + _catalog_note(settings))
        _LOGGER.warning("%s; the catalog is of another commit, so the hub's own hash decides"
                    "%s", message, _catalog_note(settings))
    return staged


def _authoritative(settings: FetchSettings, commit: str) -> bool:
    """True when the catalog was made at ``commit``: it then describes these very files."""
    return settings.catalog is not None and settings.catalog.source.revision == commit


def _listed(spec: DesiredVoice, source: HuggingFaceSource, names: list[str],
            settings: FetchSettings) -> list[CatalogFile | None]:
    """The catalog's entries for model and config when it vouches for this download."""
    catalog = settings.catalog
    if catalog is None or spec.sha256 is not None or not catalog.describes(source.repo):
        return [None, None]
    voice = catalog.get(spec.name)
    if voice is None or [voice.model.path, voice.config.path] != names:
        return [None, None]
    return [voice.model, voice.config]


def fetch_hf(spec: DesiredVoice, source: HuggingFaceSource, dest: Path,
             settings: FetchSettings) -> StagedVoice:
    """Stage both files of ``spec`` from the hub, verified (see module docstring)."""
    folder = source.path or piper_repo_folder(spec.name)
    names = [f"{folder}/{spec.name}{MODEL_SUFFIX}", f"{folder}/{spec.name}{CONFIG_SUFFIX}"]
    model_meta = _metadata(source.repo, names[0], source.revision, settings)
    commit = model_meta.commit_hash or source.revision
    config_meta = _metadata(source.repo, names[1], commit, settings)
    listed = _listed(spec, source, names, settings)
    for name, meta, entry in zip(names, (model_meta, config_meta), listed, strict=True):
        if entry is not None and meta.size is not None and meta.size != entry.size:
            message = (f"{name.rsplit('/', 1)[-1]}: the hub's file is {meta.size} bytes, "
                       f"the voice catalog says {entry.size}")
            if _authoritative(settings, commit):
                raise HashMismatchError(message + _catalog_note(settings))
            _LOGGER.warning("%s; the catalog is of another commit, so the hub's own hash "
                        "decides%s", message, _catalog_note(settings))
    sizes = [m.size for m in (model_meta, config_meta)]
    if all(s is not None for s in sizes):
        ensure_free_space(dest, sum(sizes))
    expected = [spec.sha256.model, spec.sha256.config] if spec.sha256 else [None, None]
    model = _download(source.repo, names[0], commit, dest, expected[0], model_meta.etag,
                      settings, listed[0])
    try:
        config = _download(source.repo, names[1], commit, dest, expected[1],
                           config_meta.etag, settings, listed[1])
    except BaseException:
        discard(model)
        raise
    return StagedVoice(model, config)


def fetch_hub_file(repo: str, filename: str, revision: str, dest: Path,
                   settings: FetchSettings, expected_sha256: str | None = None
                   ) -> tuple[StagedFile, str]:
    """Stage one file of a hub repo (the voice index, a Kokoro voice's model or style),
    verified against ``expected_sha256``, else the hub's ETag like a voice's files;
    returns it and the commit it came from."""
    meta = _metadata(repo, filename, revision, settings)
    if meta.size is not None:
        ensure_free_space(dest, meta.size)
    commit = meta.commit_hash or revision
    return _download(repo, filename, commit, dest, expected_sha256, meta.etag,
                     settings), commit


def hub_files_size(repo: str, filenames: list[str], revision: str,
                   settings: FetchSettings) -> tuple[str, int | None]:
    """The commit ``revision`` resolves to and the total size of ``filenames`` there
    (None when the hub does not say), asked before any byte is fetched: a download of
    several large files (an XTTS checkpoint) is refused at once when it cannot fit."""
    first = _metadata(repo, filenames[0], revision, settings)
    commit = first.commit_hash or revision
    sizes = [first.size, *(_metadata(repo, name, commit, settings).size
                           for name in filenames[1:])]
    known = [size for size in sizes if size is not None]
    return commit, sum(known) if len(known) == len(sizes) else None
