"""The desired-state voice manifest: which voices a volume should hold, and from where.

The operator writes it (JSON, camelCase keys because it is rendered from CRDs) into a
ConfigMap; the voice manager reads it and converges the volume to it. Both import this
module, so the format is defined exactly once. Parsing is strict: an unknown version,
an unknown key or an unsafe voice name or path is refused with a message naming the
offending field, because a half-understood manifest must never delete or replace voices.

A voice source is defined here and nowhere else: the source dataclasses' fields are the
table of kinds and keys (:data:`SOURCE_KINDS`, :data:`FILE_KINDS`, :func:`json_keys`) that
the parser reads, the serialiser writes, the operator's ``TTSVoice.spec.source`` is
validated by, and the CRD schema is compared with in the tests.

Each engine has its own source shape. A Piper voice is two files in one place (a repo
folder, two URLs, a directory). A Kokoro voice is a shared model plus the voice's style
vectors, two files that usually come from different places, so ``{"kokoro": {"model":
<file>, "style": <file>}}`` names each file on its own, each with its own sha256
(:class:`KokoroSource`). An XTTS voice is cloned from reference clips and spoken by a
checkpoint shared by every XTTS voice that names it: ``{"xtts": {"clips": [<file>, ...],
"language": ..., "checkpoint": {...}, "acceptLicense": "CPML"}}`` (:class:`XttsSource`).
Which engine takes which shape is :func:`check_engine`'s rule; whether a checkpoint may
be fetched at all (its licence accepted) is :func:`license_refusal`'s.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from .layout import is_valid_voice_name
from .xtts import (
    CHECKPOINT_OPTIONAL_FILES,
    DEFAULT_CHECKPOINT,
    HF_REPO,
    LANGUAGES,
    LICENSE_NAME,
    LICENSE_URL,
    MAX_CLIPS,
)

__all__ = [
    "CLIP_KINDS",
    "DEFAULT_HF_REPO",
    "DEFAULT_KOKORO_REPO",
    "ENGINES",
    "FILE_KINDS",
    "KOKORO_PARTS",
    "MANIFEST_VERSION",
    "PIPER_KINDS",
    "SOURCE_KINDS",
    "SOURCE_RECORDS",
    "XTTS_CHECKPOINT_KINDS",
    "XTTS_URL_FILES",
    "DesiredVoice",
    "Engine",
    "FileSource",
    "HuggingFaceClip",
    "HuggingFaceFile",
    "HuggingFaceSource",
    "JsonKey",
    "KokoroSource",
    "LocalFile",
    "LocalSource",
    "Manifest",
    "ManifestError",
    "Sha256",
    "Source",
    "UrlFile",
    "UrlSource",
    "XttsCheckpoint",
    "XttsHubCheckpoint",
    "XttsSource",
    "XttsUrlCheckpoint",
    "check_engine",
    "check_verifiable",
    "checkpoint_to_dict",
    "file_to_dict",
    "json_keys",
    "license_refusal",
    "load_manifest",
    "parse_file",
    "parse_manifest",
    "parse_sha256",
    "parse_source",
    "record_to_dict",
    "source_to_dict",
]

MANIFEST_VERSION = 1
DEFAULT_HF_REPO = "rhasspy/piper-voices"
DEFAULT_KOKORO_REPO = "onnx-community/Kokoro-82M-v1.0-ONNX"
"""Kokoro-82M v1.0 as ONNX (``onnx/model_quantized.onnx``) with every voice's style
vectors as raw float32 (``voices/<voice>.bin``), the files kokoro-js downloads."""
ENGINES = ("piper", "kokoro", "xtts")
"""The engines a manifest entry may name; the first is the default."""
Engine = Literal["piper", "kokoro", "xtts"]
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,255}$")


class ManifestError(ValueError):
    """The manifest is not valid; the message names the offending field."""


# --- checks of single values (each names the field it was given) ---------------------

Check = Callable[[Any, str], Any]
"""Validates one JSON value found at ``where`` and returns it, normalised."""


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


def _repo(value: Any, where: str) -> str:
    repo = _string(value, where)
    if not _REPO_RE.match(repo) or ".." in repo:
        raise ManifestError(f"{where}: expected OWNER/NAME, got {repo!r}")
    return repo


def _revision(value: Any, where: str) -> str:
    revision = _string(value, where)
    if not _REVISION_RE.match(revision) or ".." in revision:
        raise ManifestError(f"{where}: invalid revision {revision!r}")
    return revision


def _repo_path(value: Any, where: str) -> str:
    """A relative folder inside a repo: no leading slash, no ``..``, no empty parts."""
    text = _string(value, where)
    parts = text.rstrip("/").split("/")
    if (text.startswith("/") or "\\" in text
            or any(p in ("..", ".") or not re.fullmatch(r"[A-Za-z0-9_.+-]+", p) for p in parts)):
        raise ManifestError(f"{where}: unsafe repo path {text!r}")
    return "/".join(parts)


def _local_path(value: Any, where: str) -> str:
    path = _string(value, where)
    if not path.startswith("/") or "\x00" in path:
        raise ManifestError(f"{where}: expected an absolute directory path")
    return path


def _local_file(value: Any, where: str) -> str:
    path = _string(value, where)
    if not path.startswith("/") or "\x00" in path or path.endswith("/"):
        raise ManifestError(f"{where}: expected an absolute file path")
    return path


def _repo_file(value: Any, where: str) -> str:
    """A file in a repo: a safe relative path (:func:`_repo_path`) naming a file."""
    if isinstance(value, str) and value.endswith("/"):
        raise ManifestError(f"{where}: expected a file path, got {value!r}")
    return _repo_path(value, where)


def _hex64(value: Any, where: str) -> str:
    text = _string(value, where).lower()
    if not _SHA256_RE.match(text):
        raise ManifestError(f"{where}: expected 64 hex digits")
    return text


def _checked(check: Check) -> dict[str, Check]:
    """Field metadata: the check the parser runs on the field's JSON value."""
    return {"check": check}


# --- the records: sources and hashes --------------------------------------------------


@dataclass(frozen=True)
class Sha256:
    """Expected sha256 (lower-case hex) of a voice's two files."""

    model: str = field(metadata=_checked(_hex64))
    config: str = field(metadata=_checked(_hex64))


@dataclass(frozen=True)
class HuggingFaceSource:
    """A voice in a Hugging Face repo at a pinned revision.

    ``path`` is the repo folder holding ``<name>.onnx`` and ``<name>.onnx.json``; when
    ``None`` it is derived from the Piper key (``en_US-amy-medium`` ->
    ``en/en_US/amy/medium``).
    """

    repo: str = field(default=DEFAULT_HF_REPO, metadata=_checked(_repo))
    revision: str = field(default="main", metadata=_checked(_revision))
    path: str | None = field(default=None, metadata=_checked(_repo_path))


@dataclass(frozen=True)
class UrlSource:
    """Model and config at two HTTP(S) URLs; unverified downloads need an explicit opt-in."""

    model: str = field(metadata=_checked(_url))
    config: str = field(metadata=_checked(_url))
    allow_unverified: bool = field(default=False, metadata=_checked(_bool))


@dataclass(frozen=True)
class LocalSource:
    """A directory (baked into an image or mounted) holding ``<name>.onnx`` and its config."""

    path: str = field(metadata=_checked(_local_path))


@dataclass(frozen=True)
class HuggingFaceFile:
    """One file in a Hugging Face repo at a pinned revision; verified against the hub's
    LFS sha256 (or its git blob id) unless ``sha256`` pins it."""

    path: str = field(metadata=_checked(_repo_file))
    repo: str = field(default=DEFAULT_KOKORO_REPO, metadata=_checked(_repo))
    revision: str = field(default="main", metadata=_checked(_revision))
    sha256: str | None = field(default=None, metadata=_checked(_hex64))


@dataclass(frozen=True)
class UrlFile:
    """One file at an HTTP(S) URL; the sha256 is required, nothing else could verify it."""

    url: str = field(metadata=_checked(_url))
    sha256: str = field(metadata=_checked(_hex64))


@dataclass(frozen=True)
class LocalFile:
    """One file (baked into an image or mounted), copied into the volume; ``sha256``
    optionally pins it."""

    path: str = field(metadata=_checked(_local_file))
    sha256: str | None = field(default=None, metadata=_checked(_hex64))


FileSource = HuggingFaceFile | UrlFile | LocalFile

FILE_KINDS: dict[str, type[FileSource]] = {
    "huggingFace": HuggingFaceFile, "url": UrlFile, "local": LocalFile}
"""Kinds of one file's source, by the JSON key that selects them (``{"url": {...}}``)."""


@dataclass(frozen=True)
class KokoroSource:
    """A Kokoro voice: the model (shared by every voice that names the same file and
    sha256) and the voice's own style vectors, each from wherever it is published."""

    model: FileSource
    style: FileSource


@dataclass(frozen=True)
class HuggingFaceClip(HuggingFaceFile):
    """A reference clip in a Hugging Face repo: a :class:`HuggingFaceFile` whose repo is
    always given (no repo is where clips are by default)."""

    repo: str = field(metadata=_checked(_repo))


CLIP_KINDS: dict[str, type[FileSource]] = {
    "huggingFace": HuggingFaceClip, "url": UrlFile, "local": LocalFile}
"""Kinds of one reference clip's source, by the JSON key that selects them."""


@dataclass(frozen=True)
class XttsHubCheckpoint:
    """The checkpoint's files at the root of a Hugging Face repo at a pinned revision
    (the required files, :data:`chorus.common.xtts.CHECKPOINT_FILES`), each verified
    against the hub's LFS sha256 or git blob id."""

    repo: str = field(default=HF_REPO, metadata=_checked(_repo))
    revision: str = field(default="main", metadata=_checked(_revision))


@dataclass(frozen=True)
class XttsUrlCheckpoint:
    """The checkpoint's files at HTTP(S) URLs, each with its sha256; ``speakers`` (the
    built-in speakers file) is optional."""

    config: UrlFile
    model: UrlFile
    vocab: UrlFile
    speakers: UrlFile | None = None


XTTS_URL_FILES = {"config": "config.json", "model": "model.pth", "vocab": "vocab.json",
                  "speakers": CHECKPOINT_OPTIONAL_FILES[0]}
"""The file each key of :class:`XttsUrlCheckpoint` names in the checkpoint directory."""

XttsCheckpointSource = XttsHubCheckpoint | XttsUrlCheckpoint | LocalSource

XTTS_CHECKPOINT_KINDS = ("huggingFace", "url", "local")
"""Where a checkpoint comes from, by the JSON key that selects it; ``local`` is a
directory holding the files (a :class:`LocalSource`)."""


@dataclass(frozen=True)
class XttsCheckpoint:
    """The checkpoint an XTTS voice speaks with: where its files come from and the name
    of its directory in the volume (voices naming the same directory share it)."""

    source: XttsCheckpointSource
    name: str = DEFAULT_CHECKPOINT

    @property
    def fetched(self) -> bool:
        """True when the voice manager downloads it (from a hub or URLs)."""
        return not isinstance(self.source, LocalSource)


@dataclass(frozen=True)
class XttsSource:
    """An XTTS voice: reference clips (1 to :data:`~chorus.common.xtts.MAX_CLIPS`), the
    language it speaks by default (and any others it offers), the checkpoint, and the
    acceptance of the checkpoint's licence (:func:`license_refusal`)."""

    clips: tuple[FileSource, ...]
    language: str
    checkpoint: XttsCheckpoint
    languages: tuple[str, ...] = ()
    accept_license: str | None = None


Source = HuggingFaceSource | UrlSource | LocalSource | KokoroSource | XttsSource

PIPER_KINDS: dict[str, type[HuggingFaceSource | UrlSource | LocalSource]] = {
    "huggingFace": HuggingFaceSource, "url": UrlSource, "local": LocalSource}
"""A Piper voice's source kinds, by the one JSON key that selects them."""

SOURCE_KINDS: dict[str, type[Source]] = {**PIPER_KINDS, "kokoro": KokoroSource,
                                         "xtts": XttsSource}
"""Source kinds by the one JSON key that selects them (``{"url": {...}}``)."""

KOKORO_PARTS = ("model", "style")
"""The files of a :class:`KokoroSource`, its JSON keys and attributes alike."""

SOURCE_RECORDS: dict[tuple[str, ...], type[HuggingFaceSource | UrlSource | LocalSource
                                          | FileSource | XttsHubCheckpoint]] = {
    **{(kind,): record for kind, record in PIPER_KINDS.items()},
    **{("kokoro", part, kind): record for part in KOKORO_PARTS
       for kind, record in FILE_KINDS.items()},
    **{("xtts", "clips", "[]", kind): record for kind, record in CLIP_KINDS.items()},
    ("xtts", "checkpoint", "huggingFace"): XttsHubCheckpoint,
    ("xtts", "checkpoint", "local"): LocalSource,
    **{("xtts", "checkpoint", "url", key): UrlFile for key in XTTS_URL_FILES}}
"""Every flat record a source may hold, by its path below ``source`` (``[]``: each item
of a list); the table the CRD schema is compared with."""

_KIND_NAMES = ", ".join(SOURCE_KINDS)
_FILE_KIND_NAMES = ", ".join(FILE_KINDS)
_R = TypeVar("_R", bound=HuggingFaceSource | UrlSource | LocalSource | Sha256
             | HuggingFaceFile | UrlFile | LocalFile | XttsHubCheckpoint)


@dataclass(frozen=True)
class JsonKey:
    """One key of a record's JSON object, read off the record's dataclass field.

    ``default`` is what an absent key means (``None``: absent, and never written).
    """

    key: str
    attribute: str
    type: type
    required: bool
    default: Any
    check: Check


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _json_type(annotation: Any) -> type:
    if isinstance(annotation, types.UnionType):
        (annotation,) = (a for a in typing.get_args(annotation) if a is not type(None))
    if not isinstance(annotation, type):  # pragma: no cover - the records use plain types
        raise TypeError(f"unsupported record field type {annotation!r}")
    return annotation


def json_keys(record: type[_R]) -> tuple[JsonKey, ...]:
    """The keys of ``record``'s JSON object, in field order."""
    hints = typing.get_type_hints(record)
    return tuple(
        JsonKey(_camel(f.name), f.name, _json_type(hints[f.name]),
                f.default is dataclasses.MISSING,
                None if f.default is dataclasses.MISSING else f.default, f.metadata["check"])
        for f in dataclasses.fields(record))


def record_to_dict(record: HuggingFaceSource | UrlSource | LocalSource | Sha256 | FileSource
                   | XttsHubCheckpoint) -> dict[str, Any]:
    """A record as its JSON object; absent optional values (``None``) are left out."""
    values = ((k.key, getattr(record, k.attribute)) for k in json_keys(type(record)))
    return {key: value for key, value in values if value is not None}


def file_to_dict(source: FileSource) -> dict[str, Any]:
    """``{"<kind>": {...}}``, the JSON shape of one file's source."""
    (kind,) = (k for k, record in FILE_KINDS.items() if isinstance(source, record))
    return {kind: record_to_dict(source)}


def checkpoint_to_dict(checkpoint: XttsCheckpoint) -> dict[str, Any]:
    """An XTTS checkpoint as its JSON object: its ``name`` and its one source kind."""
    source = checkpoint.source
    body: dict[str, Any]
    if isinstance(source, XttsUrlCheckpoint):
        body = {"url": {key: record_to_dict(getattr(source, key)) for key in XTTS_URL_FILES
                        if getattr(source, key) is not None}}
    else:
        body = {"huggingFace" if isinstance(source, XttsHubCheckpoint) else "local":
                record_to_dict(source)}
    return {"name": checkpoint.name, **body}


def _xtts_to_dict(source: XttsSource) -> dict[str, Any]:
    data: dict[str, Any] = {"clips": [file_to_dict(clip) for clip in source.clips],
                            "language": source.language}
    if source.languages:
        data["languages"] = list(source.languages)
    data["checkpoint"] = checkpoint_to_dict(source.checkpoint)
    if source.accept_license is not None:
        data["acceptLicense"] = source.accept_license
    return data


def source_to_dict(source: Source) -> dict[str, Any]:
    """``{"<kind>": {...}}``, the JSON shape of a source in the manifest and the CRD."""
    if isinstance(source, XttsSource):
        return {"xtts": _xtts_to_dict(source)}
    if isinstance(source, KokoroSource):
        return {"kokoro": {part: file_to_dict(getattr(source, part)) for part in KOKORO_PARTS}}
    (kind,) = (k for k, record in PIPER_KINDS.items() if isinstance(source, record))
    return {kind: record_to_dict(source)}


@dataclass(frozen=True)
class DesiredVoice:
    """One manifest entry: a voice the volume should hold, and where it comes from.

    Not to be confused with the server's ``VoiceSpec`` (a voice already installed).
    """

    name: str
    source: Source
    engine: Engine = "piper"
    required: bool = True
    sha256: Sha256 | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "engine": self.engine,
                                "required": self.required, "source": source_to_dict(self.source)}
        if self.sha256 is not None:
            data["sha256"] = record_to_dict(self.sha256)
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


def _record(record: type[_R], value: Any, where: str) -> _R:
    """Build ``record`` from its JSON object; absent optional keys take the field default."""
    keys = json_keys(record)
    obj = _object(value, where, {k.key for k in keys if k.required},
                  {k.key for k in keys if not k.required})
    return record(**{k.attribute: k.check(obj[k.key], f"{where}.{k.key}")
                     for k in keys if k.key in obj})


def parse_file(value: Any, where: str,
               kinds: dict[str, type[FileSource]] = FILE_KINDS) -> FileSource:
    """``{"<kind>": {...}}`` -> one file's source; raises :class:`ManifestError`."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ManifestError(f"{where} needs exactly one of {_FILE_KIND_NAMES}")
    kind, body = next(iter(value.items()))
    record = kinds.get(kind)
    if record is None:
        raise ManifestError(f"{where}.{kind}: unknown source kind (expected {_FILE_KIND_NAMES})")
    return _record(record, body, f"{where}.{kind}")


def _language(value: Any, where: str) -> str:
    if value not in LANGUAGES:
        raise ManifestError(f"{where}: expected one of {', '.join(LANGUAGES)}, got {value!r}")
    return str(value)


def _parse_checkpoint(value: Any, where: str) -> XttsCheckpoint:
    obj = _object(value, where, set(), {"name", *XTTS_CHECKPOINT_KINDS})
    kinds = [kind for kind in XTTS_CHECKPOINT_KINDS if kind in obj]
    if len(kinds) != 1:
        raise ManifestError(f"{where} needs exactly one of {', '.join(XTTS_CHECKPOINT_KINDS)}")
    name = _string(obj.get("name", DEFAULT_CHECKPOINT), f"{where}.name")
    if not is_valid_voice_name(name):
        raise ManifestError(f"{where}.name: unsafe directory name {name!r}")
    kind = kinds[0]
    at = f"{where}.{kind}"
    source: XttsCheckpointSource
    if kind == "huggingFace":
        source = _record(XttsHubCheckpoint, obj[kind], at)
    elif kind == "local":
        source = _record(LocalSource, obj[kind], at)
    else:
        urls = _object(obj[kind], at, {"config", "model", "vocab"}, {"speakers"})
        source = XttsUrlCheckpoint(**{key: _record(UrlFile, body, f"{at}.{key}")
                                      for key, body in urls.items()})
    return XttsCheckpoint(source, name)


def _parse_xtts(value: Any, where: str) -> XttsSource:
    obj = _object(value, where, {"clips", "language", "checkpoint"},
                  {"languages", "acceptLicense"})
    clips = obj["clips"]
    if not isinstance(clips, list) or not 1 <= len(clips) <= MAX_CLIPS:
        raise ManifestError(f"{where}.clips: expected a list of 1 to {MAX_CLIPS} clips")
    language = _language(obj["language"], f"{where}.language")
    languages = obj.get("languages", [])
    if not isinstance(languages, list):
        raise ManifestError(f"{where}.languages: expected a list")
    accepted = obj.get("acceptLicense")
    if accepted is not None and accepted != LICENSE_NAME:
        raise ManifestError(f"{where}.acceptLicense: the checkpoint's licence is "
                            f"{LICENSE_NAME} ({LICENSE_URL}); got {accepted!r}")
    return XttsSource(
        tuple(parse_file(clip, f"{where}.clips[{i}]", CLIP_KINDS) for i, clip in enumerate(clips)),
        language, _parse_checkpoint(obj["checkpoint"], f"{where}.checkpoint"),
        tuple(dict.fromkeys(_language(code, f"{where}.languages[{i}]")
                            for i, code in enumerate(languages))),
        accepted)


def parse_source(value: Any, where: str) -> Source:
    """``{"<kind>": {...}}`` -> a source; raises :class:`ManifestError` naming ``where``."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ManifestError(f"{where} needs exactly one of {_KIND_NAMES}")
    kind, body = next(iter(value.items()))
    if kind == "xtts":
        return _parse_xtts(body, f"{where}.xtts")
    if kind == "kokoro":
        obj = _object(body, f"{where}.kokoro", set(KOKORO_PARTS))
        return KokoroSource(*(parse_file(obj[part], f"{where}.kokoro.{part}")
                              for part in KOKORO_PARTS))
    record = PIPER_KINDS.get(kind)
    if record is None:
        raise ManifestError(f"{where}.{kind}: unknown source kind (expected {_KIND_NAMES})")
    return _record(record, body, f"{where}.{kind}")


def parse_sha256(value: Any, where: str) -> Sha256:
    """``{"model": ..., "config": ...}`` -> :class:`Sha256` (lower-cased)."""
    return _record(Sha256, value, where)


def check_verifiable(source: Source, sha256: Sha256 | None, where: str = "") -> None:
    """Refuse a URL source with nothing to verify its files against.

    The rule between a voice's ``source`` and ``sha256``, for every reader of either.
    """
    if isinstance(source, UrlSource) and sha256 is None and not source.allow_unverified:
        message = "URL sources need sha256 (or url.allowUnverified: true)"
        raise ManifestError(f"{where}: {message}" if where else message)


def check_engine(engine: str, source: Source, sha256: Sha256 | None, where: str = "") -> None:
    """Refuse a source of another engine's shape: a Kokoro voice has ``source.kokoro``
    (and pins each file there), an XTTS voice ``source.xtts`` (likewise), a Piper voice
    any other kind.

    The rule between ``engine``, ``source`` and ``sha256``, for every reader of them;
    the CRD's CEL rules say the same to the API server.
    """
    prefix = f"{where}: " if where else ""
    if engine not in ENGINES:
        raise ManifestError(f"{prefix}unsupported engine {engine!r} "
                            f"(expected one of {', '.join(ENGINES)})")
    if (engine == "kokoro") != isinstance(source, KokoroSource):
        raise ManifestError(
            f"{prefix}engine {engine!r} needs "
            + ("source.kokoro (model and style)" if engine == "kokoro"
               else f"{_engine_shape(engine)} as its source (source.kokoro is for engine "
                    "'kokoro')"))
    if (engine == "xtts") != isinstance(source, XttsSource):
        raise ManifestError(
            f"{prefix}engine {engine!r} needs {_engine_shape(engine)} as its source "
            "(source.xtts is for engine 'xtts')")
    if isinstance(source, KokoroSource | XttsSource) and sha256 is not None:
        raise ManifestError(f"{prefix}sha256 pins a Piper voice's model and config; a Kokoro "
                            "voice pins each file in source.kokoro, an XTTS voice each file "
                            "in source.xtts")


def _engine_shape(engine: str) -> str:
    if engine == "xtts":
        return "source.xtts (clips, language, checkpoint)"
    return "source.kokoro (model and style)" if engine == "kokoro" else (
        f"one of {', '.join(PIPER_KINDS)}")


def license_refusal(source: Source) -> str | None:
    """Why the voice manager must not fetch this source's checkpoint, or None.

    The XTTS v2 checkpoint is published under the Coqui Public Model License (CPML, non
    commercial): it is downloaded only for a voice whose source says
    ``acceptLicense: CPML``. A local checkpoint is not downloaded: whoever put it there
    obtained it, and accepted its licence, already; it needs no acceptance here.
    """
    if (not isinstance(source, XttsSource) or not source.checkpoint.fetched
            or source.accept_license == LICENSE_NAME):
        return None
    return (f"the XTTS checkpoint is licensed under the Coqui Public Model License "
            f"({LICENSE_NAME}, {LICENSE_URL}); set source.xtts.acceptLicense: {LICENSE_NAME} "
            "to accept it, or give a local checkpoint")


def _voice(value: Any, where: str) -> DesiredVoice:
    obj = _object(value, where, {"name", "source"}, {"engine", "required", "sha256"})
    name = _string(obj["name"], f"{where}.name")
    if not is_valid_voice_name(name):
        raise ManifestError(f"{where}.name: unsafe voice name {name!r}")
    where = f"voice {name!r}"
    engine = obj.get("engine", "piper")
    if engine not in ENGINES:
        raise ManifestError(f"{where}.engine: unsupported engine {engine!r} "
                            f"(expected one of {', '.join(ENGINES)})")
    required = _bool(obj.get("required", True), f"{where}.required")
    source = parse_source(obj["source"], f"{where}.source")
    sha = parse_sha256(obj["sha256"], f"{where}.sha256") if "sha256" in obj else None
    check_engine(engine, source, sha, where)
    check_verifiable(source, sha, where)
    return DesiredVoice(name, source, engine, required, sha)


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
