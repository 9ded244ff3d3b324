"""The desired-state voice manifest: which voices a volume should hold, and from where.

The operator writes it (JSON, camelCase keys because it is rendered from CRDs) into a
ConfigMap; the voice manager reads it and converges the volume to it. Both import this
module, so the format is defined exactly once. Parsing is strict: an unknown version,
an unknown key or an unsafe voice name or path is refused with a message naming the
offending field, because a half-understood manifest must never delete or replace voices.
"""

from __future__ import annotations

import json
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Literal

from .layout import is_valid_voice_name

__all__ = [
    "DEFAULT_HF_REPO",
    "MANIFEST_VERSION",
    "DesiredVoice",
    "HuggingFaceSource",
    "LocalSource",
    "Manifest",
    "ManifestError",
    "Sha256",
    "Source",
    "UrlSource",
    "load_manifest",
    "parse_manifest",
]

MANIFEST_VERSION = 1
DEFAULT_HF_REPO = "rhasspy/piper-voices"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,255}$")


class ManifestError(ValueError):
    """The manifest is not valid; the message names the offending field."""


@dataclass(frozen=True)
class Sha256:
    """Expected sha256 (lower-case hex) of a voice's two files."""

    model: str
    config: str


@dataclass(frozen=True)
class HuggingFaceSource:
    """A voice in a Hugging Face repo at a pinned revision.

    ``path`` is the repo folder holding ``<name>.onnx`` and ``<name>.onnx.json``; when
    ``None`` it is derived from the Piper key (``en_US-amy-medium`` ->
    ``en/en_US/amy/medium``).
    """

    repo: str = DEFAULT_HF_REPO
    revision: str = "main"
    path: str | None = None


@dataclass(frozen=True)
class UrlSource:
    """Model and config at two HTTP(S) URLs; unverified downloads need an explicit opt-in."""

    model: str
    config: str
    allow_unverified: bool = False


@dataclass(frozen=True)
class LocalSource:
    """A directory (baked into an image or mounted) holding ``<name>.onnx`` and its config."""

    path: str


Source = HuggingFaceSource | UrlSource | LocalSource


@dataclass(frozen=True)
class DesiredVoice:
    """One manifest entry: a voice the volume should hold, and where it comes from.

    Not to be confused with the server's ``VoiceSpec`` (a voice already installed).
    """

    name: str
    source: Source
    engine: Literal["piper"] = "piper"
    required: bool = True
    sha256: Sha256 | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "engine": self.engine,
                                "required": self.required, "source": _source_to_dict(self.source)}
        if self.sha256 is not None:
            data["sha256"] = {"model": self.sha256.model, "config": self.sha256.config}
        return data

    def fingerprint(self) -> str:
        """Canonical text of everything that decides the installed bytes.

        ``required`` is left out: flipping it must not trigger a download.
        """
        data = self.to_dict()
        data.pop("required")
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Manifest:
    """The whole desired state; voice names are unique."""

    voices: tuple[DesiredVoice, ...] = ()
    version: int = MANIFEST_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "voices": [v.to_dict() for v in self.voices]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


def _source_to_dict(source: Source) -> dict[str, Any]:
    if isinstance(source, HuggingFaceSource):
        hf: dict[str, Any] = {"repo": source.repo, "revision": source.revision}
        if source.path is not None:
            hf["path"] = source.path
        return {"huggingFace": hf}
    if isinstance(source, UrlSource):
        url: dict[str, Any] = {"model": source.model, "config": source.config}
        if source.allow_unverified:
            url["allowUnverified"] = True
        return {"url": url}
    return {"local": {"path": source.path}}


# --- parsing -------------------------------------------------------------------------


def _object(value: Any, where: str, required: AbstractSet[str],
            optional: AbstractSet[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: expected an object")
    missing = sorted(set(required) - value.keys())
    if missing:
        raise ManifestError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(str(key) for key in value.keys() - required - optional)
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {', '.join(unknown)}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where}: expected a non-empty string")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ManifestError(f"{where}: expected true or false")
    return value


def _url(value: Any, where: str) -> str:
    text = _string(value, where)
    if not text.lower().startswith(("https://", "http://")):
        raise ManifestError(f"{where}: only http:// and https:// URLs are supported")
    return text


def _repo_path(value: Any, where: str) -> str:
    """A relative folder inside a repo: no leading slash, no ``..``, no empty parts."""
    text = _string(value, where)
    parts = text.rstrip("/").split("/")
    if (text.startswith("/") or "\\" in text
            or any(p in ("..", ".") or not re.fullmatch(r"[A-Za-z0-9_.+-]+", p) for p in parts)):
        raise ManifestError(f"{where}: unsafe repo path {text!r}")
    return "/".join(parts)


def _source(value: Any, where: str) -> Source:
    if not isinstance(value, dict) or len(value) != 1:
        raise ManifestError(f"{where}: expected exactly one of huggingFace, url, local")
    kind, body = next(iter(value.items()))
    where = f"{where}.{kind}"
    if kind == "huggingFace":
        obj = _object(body, where, set(), {"repo", "revision", "path"})
        repo = _string(obj.get("repo", DEFAULT_HF_REPO), f"{where}.repo")
        if not _REPO_RE.match(repo) or ".." in repo:
            raise ManifestError(f"{where}.repo: expected OWNER/NAME, got {repo!r}")
        revision = _string(obj.get("revision", "main"), f"{where}.revision")
        if not _REVISION_RE.match(revision) or ".." in revision:
            raise ManifestError(f"{where}.revision: invalid revision {revision!r}")
        path = _repo_path(obj["path"], f"{where}.path") if "path" in obj else None
        return HuggingFaceSource(repo, revision, path)
    if kind == "url":
        obj = _object(body, where, {"model", "config"}, {"allowUnverified"})
        return UrlSource(_url(obj["model"], f"{where}.model"),
                         _url(obj["config"], f"{where}.config"),
                         _bool(obj.get("allowUnverified", False), f"{where}.allowUnverified"))
    if kind == "local":
        obj = _object(body, where, {"path"})
        path = _string(obj["path"], f"{where}.path")
        if not path.startswith("/") or "\x00" in path:
            raise ManifestError(f"{where}.path: expected an absolute directory path")
        return LocalSource(path)
    raise ManifestError(f"{where}: unknown source kind (expected huggingFace, url or local)")


def _sha256(value: Any, where: str) -> Sha256:
    obj = _object(value, where, {"model", "config"})
    hashes = []
    for key in ("model", "config"):
        text = _string(obj[key], f"{where}.{key}").lower()
        if not _SHA256_RE.match(text):
            raise ManifestError(f"{where}.{key}: expected 64 hex digits")
        hashes.append(text)
    return Sha256(hashes[0], hashes[1])


def _voice(value: Any, where: str) -> DesiredVoice:
    obj = _object(value, where, {"name", "source"}, {"engine", "required", "sha256"})
    name = _string(obj["name"], f"{where}.name")
    if not is_valid_voice_name(name):
        raise ManifestError(f"{where}.name: unsafe voice name {name!r}")
    where = f"voice {name!r}"
    engine = obj.get("engine", "piper")
    if engine != "piper":
        raise ManifestError(f"{where}.engine: unsupported engine {engine!r} (only piper)")
    required = _bool(obj.get("required", True), f"{where}.required")
    source = _source(obj["source"], f"{where}.source")
    sha = _sha256(obj["sha256"], f"{where}.sha256") if "sha256" in obj else None
    if isinstance(source, UrlSource) and sha is None and not source.allow_unverified:
        raise ManifestError(f"{where}: URL sources need sha256 (or url.allowUnverified: true)")
    return DesiredVoice(name, source, "piper", required, sha)


def parse_manifest(data: Any) -> Manifest:
    """Validate decoded JSON and build a :class:`Manifest`; raises :class:`ManifestError`."""
    obj = _object(data, "manifest", {"version"}, {"voices"})
    version = obj["version"]
    if version != MANIFEST_VERSION or isinstance(version, bool):
        raise ManifestError(f"manifest: unsupported version {version!r} "
                            f"(this Chorus reads version {MANIFEST_VERSION})")
    voices_raw = obj.get("voices", [])
    if not isinstance(voices_raw, list):
        raise ManifestError("manifest.voices: expected a list")
    voices = [_voice(v, f"voices[{i}]") for i, v in enumerate(voices_raw)]
    seen: set[str] = set()
    for voice in voices:
        if voice.name in seen:
            raise ManifestError(f"voice {voice.name!r}: listed twice")
        seen.add(voice.name)
    return Manifest(tuple(voices), version)


def load_manifest(text: str | bytes) -> Manifest:
    """Parse manifest JSON text; invalid JSON is a :class:`ManifestError` too."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise ManifestError(f"manifest is not valid JSON: {err}") from err
    return parse_manifest(data)
