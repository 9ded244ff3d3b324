"""The catalog of known Piper voices: key, language, quality, speakers, sizes and md5s.

Its data is the hub's own index, ``voices.json`` at the root of rhasspy/piper-voices,
turned by :func:`from_hub_voices_json` into our compact format (one voice per line, only
what chorus uses). The same converter makes the snapshot bundled with the package
(``scripts/build-catalog``) and the copy ``chorus voices catalog refresh`` writes to
the cache, so both always read the same way. The hub publishes md5 digests there, not
sha256; the catalog keeps them as they are and never makes up a sha256 (that comes from
the hub's LFS metadata at download time, see :mod:`.hub`).

Which catalog a command uses, first match wins:

1. ``--catalog FILE`` (or ``CHORUS_CATALOG``): exactly that file, an error if unreadable;
2. the refreshed copy in :func:`default_cache_path`, unless the bundled snapshot was
   generated after it (a package upgrade brings newer data than an old refresh);
3. the snapshot bundled with the package.

This module needs nothing beyond the standard library, so listing voices stays cheap.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from chorus.common.layout import CONFIG_SUFFIX, MODEL_SUFFIX
from chorus.common.manifest import DEFAULT_HF_REPO
from chorus.common.xdg import cache_home

__all__ = [
    "BUNDLED",
    "FORMAT",
    "HUB_INDEX",
    "Catalog",
    "CatalogError",
    "CatalogFile",
    "CatalogSource",
    "CatalogVoice",
    "default_cache_path",
    "from_hub_voices_json",
    "key_language",
    "known_languages",
    "language_matches",
    "load_bundled",
    "load_catalog",
    "load_file",
    "parse_catalog",
]

_LOGGER = logging.getLogger(__name__)

FORMAT = "chorus-voice-catalog/1"
HUB_INDEX = "voices.json"
"""The index file at the root of the hub repo that the catalog is made from."""
BUNDLED = "catalog.json"
"""The snapshot's file name inside this package."""

_MD5 = re.compile(r"^[0-9a-f]{32}$")


class CatalogError(ValueError):
    """A catalog (or a hub ``voices.json``) could not be read, converted or written."""


@dataclass(frozen=True)
class CatalogFile:
    """One file of a voice in the hub repo, as the hub's index describes it."""

    path: str
    """Path inside the repo, e.g. ``en/en_US/joe/medium/en_US-joe-medium.onnx``."""
    size: int
    md5: str


@dataclass(frozen=True)
class CatalogVoice:
    """One Piper voice of the hub."""

    key: str
    """The voice key and the installed file name, e.g. ``en_US-joe-medium``."""
    language: str
    """Locale code, e.g. ``en_US``."""
    family: str
    """Language family, e.g. ``en``."""
    language_name: str
    """The language's English name, e.g. ``English``."""
    country: str
    """The country's English name, e.g. ``United States``."""
    quality: str
    num_speakers: int
    speakers: tuple[str, ...]
    """Speaker names in speaker-id order; empty for single-speaker voices."""
    model: CatalogFile
    config: CatalogFile

    @property
    def folder(self) -> str:
        """The voice's folder in the repo (``huggingFace.path`` of a manifest entry)."""
        return self.model.path.rpartition("/")[0]

    @property
    def size(self) -> int:
        """Bytes to download: model plus config."""
        return self.model.size + self.config.size

    def matches_language(self, query: str) -> bool:
        return language_matches(query, self.language, self.family, self.language_name)

    def to_dict(self) -> dict[str, Any]:
        """The voice in the catalog file format (without its key)."""
        return {"language": self.language, "family": self.family,
                "languageName": self.language_name, "country": self.country,
                "quality": self.quality, "numSpeakers": self.num_speakers,
                "speakers": list(self.speakers), "folder": self.folder,
                "model": {"size": self.model.size, "md5": self.model.md5},
                "config": {"size": self.config.size, "md5": self.config.md5}}


@dataclass(frozen=True)
class CatalogSource:
    """Provenance: which hub index this catalog was made from, and when."""

    repo: str
    """The hub repo whose ``voices.json`` this is; downloads from it are checked."""
    revision: str | None
    """Commit (or branch/tag) of that ``voices.json`` when known."""
    origin: str
    """Where that copy of ``voices.json`` came from (a URL, a package)."""
    generated: str
    """When the catalog was made, ISO 8601 UTC."""
    file: str = HUB_INDEX

    def to_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "file": self.file, "revision": self.revision,
                "origin": self.origin, "generated": self.generated}


@dataclass(frozen=True)
class Catalog:
    """Known voices sorted by key; ``location`` says where this copy was loaded from."""

    source: CatalogSource
    voices: tuple[CatalogVoice, ...]
    location: str = field(default="", compare=False)
    _by_key: dict[str, CatalogVoice] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_key = {v.key: v for v in self.voices}
        if len(by_key) != len(self.voices):
            raise CatalogError("a voice key appears twice")
        object.__setattr__(self, "voices", tuple(by_key[k] for k in sorted(by_key)))
        object.__setattr__(self, "_by_key", by_key)

    def __len__(self) -> int:
        return len(self.voices)

    def __iter__(self) -> Iterator[CatalogVoice]:
        return iter(self.voices)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def get(self, key: str) -> CatalogVoice | None:
        return self._by_key.get(key)

    def describes(self, repo: str) -> bool:
        """True when this catalog is the index of hub repo ``repo``."""
        return self.source.repo == repo

    def filter(self, language: str | None = None) -> list[CatalogVoice]:
        """Voices of ``language`` (see :func:`language_matches`), or all of them."""
        if not language:
            return list(self.voices)
        return [v for v in self.voices if v.matches_language(language)]

    def suggest(self, key: str, limit: int = 3) -> list[str]:
        """Keys close to ``key``: the same voice in other qualities first, then typos."""
        stem = key.rsplit("-", 1)[0] + "-"
        same = [k for k in self._by_key if "-" in key and k.startswith(stem)]
        close = difflib.get_close_matches(key, self._by_key, n=limit, cutoff=0.6)
        return (same + [k for k in close if k not in same])[:limit]

    def describe(self) -> str:
        """One line for people: what the catalog is and where it came from."""
        revision = f"@{self.source.revision}" if self.source.revision else ""
        return (f"{len(self)} voices from {self.source.repo}{revision} {self.source.file}, "
                f"generated {self.source.generated} ({self.location or 'in memory'})")

    def to_json(self) -> str:
        """The catalog file: a provenance header, then one voice per line (readable diffs)."""
        header = json.dumps({"format": FORMAT, "source": self.source.to_dict(),
                             "count": len(self)})
        lines = [f"{json.dumps(v.key, ensure_ascii=False)}: "
                 f"{json.dumps(v.to_dict(), ensure_ascii=False)}"
                 for v in self.voices]
        return header[:-1] + ', "voices": {\n' + ",\n".join(lines) + "\n}}\n"

    def save(self, path: Path) -> None:
        """Write the catalog file atomically: readers see the old or the new one, whole."""
        from chorus.common.files import write_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, self.to_json().encode())


def language_matches(query: str, code: str, family: str, name: str = "") -> bool:
    """``en_US`` (or ``en-us``) matches that locale, ``en`` the family, ``English`` the
    language's English name; case does not matter."""
    wanted = query.strip().lower().replace("-", "_")
    return wanted in {code.lower(), family.lower(), name.lower()}


def key_language(key: str) -> tuple[str, str] | None:
    """(locale, family) of a Piper-style key (``en_US-x-low`` -> ``en_US``, ``en``)."""
    locale = key.split("-", 1)[0]
    family, sep, region = locale.partition("_")
    return (locale, family) if sep and family and region else None


# --- the hub's voices.json -> our format ------------------------------------------------

def _usable_key(key: Any) -> bool:
    """A key that can only name one file: no separators, no leading dot, no ``..``.

    Looser than the volume's voice-name rule on purpose: the catalog lists what the hub
    has (``pt_PT-tugão-medium`` included); installing is where that rule applies.
    """
    return (isinstance(key, str) and key.isprintable() and key.strip() == key != ""
            and not key.startswith(".") and ".." not in key
            and not any(c in key for c in "/\\"))


def _string(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise CatalogError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value


def _count(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CatalogError(f"{where}: expected an integer of {minimum} or more, got {value!r}")
    return value


def _file(path: str, size: Any, md5: Any, where: str) -> CatalogFile:
    """One file entry, validated the same way in the hub's format and ours."""
    if not isinstance(md5, str) or not _MD5.match(md5.lower()):
        raise CatalogError(f"{where}: expected an md5 of 32 hex digits, got {md5!r}")
    return CatalogFile(path, _count(size, f"{where}: size", 1), md5.lower())


def _hub_file(files: Mapping[str, Any], key: str, suffix: str, where: str) -> CatalogFile:
    matches = [p for p in files if p == f"{key}{suffix}" or p.endswith(f"/{key}{suffix}")]
    if len(matches) != 1:
        raise CatalogError(f"{where}.files: expected one {key}{suffix}, found {len(matches)}")
    path = matches[0]
    info = files[path]
    if not isinstance(info, Mapping):
        raise CatalogError(f"{where}.files[{path!r}]: expected an object")
    return _file(path, info.get("size_bytes"), info.get("md5_digest"),
                 f"{where}.files[{path!r}]")


def _speakers(id_map: Any, where: str) -> tuple[str, ...]:
    if not isinstance(id_map, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in id_map.items()):
        raise CatalogError(f"{where}.speaker_id_map: expected names mapped to integer ids")
    return tuple(sorted(id_map, key=lambda name: (id_map[name], name)))


def _hub_voice(key: Any, entry: Any) -> CatalogVoice:
    where = f"{HUB_INDEX}[{key!r}]"
    if not _usable_key(key):
        raise CatalogError(f"{where}: not a usable voice key")
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where}: expected an object")
    if entry.get("key", key) != key:
        raise CatalogError(f"{where}.key: {entry.get('key')!r} differs from its entry")
    language = entry.get("language")
    if not isinstance(language, Mapping):
        raise CatalogError(f"{where}.language: expected an object")
    lang_where = f"{where}.language"
    files = entry.get("files")
    if not isinstance(files, Mapping):
        raise CatalogError(f"{where}.files: expected an object")
    model = _hub_file(files, key, MODEL_SUFFIX, where)
    config = _hub_file(files, key, CONFIG_SUFFIX, where)
    if model.path.rpartition("/")[0] != config.path.rpartition("/")[0]:
        raise CatalogError(f"{where}.files: model and config are in different folders")
    return CatalogVoice(
        key=key, language=_string(language, "code", lang_where),
        family=_string(language, "family", lang_where),
        language_name=_string(language, "name_english", lang_where),
        country=_string(language, "country_english", lang_where),
        quality=_string(entry, "quality", where),
        num_speakers=_count(entry.get("num_speakers"), f"{where}.num_speakers", 1),
        speakers=_speakers(entry.get("speaker_id_map", {}), where),
        model=model, config=config)


def _utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def from_hub_voices_json(data: Any, *, origin: str, repo: str = DEFAULT_HF_REPO,
                         revision: str | None = None, generated: str | None = None,
                         strict: bool = False) -> Catalog:
    """Convert the hub's parsed ``voices.json`` into a :class:`Catalog`.

    A malformed entry raises :class:`CatalogError` when ``strict`` (the bundled snapshot
    must be whole); otherwise it is skipped with a warning, so one odd new entry on the
    hub does not block a refresh of all the others. A document that is not an object of
    voices, or that yields no voice at all, always raises.
    """
    if not isinstance(data, Mapping):
        raise CatalogError(f"{HUB_INDEX}: expected an object of voices, "
                           f"got {type(data).__name__}")
    voices = []
    skipped = []
    for key, entry in data.items():
        try:
            voices.append(_hub_voice(key, entry))
        except CatalogError as err:
            if strict:
                raise
            skipped.append(str(err))
    for reason in skipped:
        _LOGGER.warning("skipping a voice: %s", reason)
    if not voices:
        raise CatalogError(f"{HUB_INDEX}: no usable voice in it"
                           + (f" (first problem: {skipped[0]})" if skipped else ""))
    source = CatalogSource(repo=repo, revision=revision, origin=origin,
                           generated=generated or _utc_now())
    return Catalog(source, tuple(voices))


# --- our format -> Catalog --------------------------------------------------------------

def _our_file(key: str, folder: str, suffix: str, value: Any) -> CatalogFile:
    if not isinstance(value, Mapping):
        raise CatalogError(f"{key}: expected a file object")
    path = f"{folder}/{key}{suffix}" if folder else f"{key}{suffix}"
    return _file(path, value.get("size"), value.get("md5"), f"{key}{suffix}")


def _our_voice(key: str, entry: Any) -> CatalogVoice:
    if not isinstance(entry, Mapping) or not _usable_key(key):
        raise CatalogError(f"{key!r}: not a catalog voice")
    folder = entry.get("folder", "")
    speakers = entry.get("speakers", [])
    if not isinstance(folder, str) or not isinstance(speakers, list) or not all(
            isinstance(s, str) for s in speakers):
        raise CatalogError(f"{key}: bad folder or speakers")
    return CatalogVoice(
        key=key, language=_string(entry, "language", key), family=_string(entry, "family", key),
        language_name=_string(entry, "languageName", key),
        country=_string(entry, "country", key), quality=_string(entry, "quality", key),
        num_speakers=_count(entry.get("numSpeakers"), f"{key}.numSpeakers", 1),
        speakers=tuple(speakers),
        model=_our_file(key, folder, MODEL_SUFFIX, entry.get("model")),
        config=_our_file(key, folder, CONFIG_SUFFIX, entry.get("config")))


def parse_catalog(raw: bytes, location: str) -> Catalog:
    """Read a catalog file; :class:`CatalogError` names ``location`` and the problem."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CatalogError(f"not a {FORMAT} file")
        src = data.get("source")
        voices = data.get("voices")
        if not isinstance(src, dict) or not isinstance(voices, dict):
            raise CatalogError("expected 'source' and 'voices' objects")
        revision = src.get("revision")
        source = CatalogSource(
            repo=_string(src, "repo", "source"), revision=revision if isinstance(
                revision, str) else None, origin=_string(src, "origin", "source"),
            generated=_string(src, "generated", "source"),
            file=_string(src, "file", "source"))
        catalog = Catalog(source, tuple(_our_voice(k, v) for k, v in voices.items()),
                          location)
        if data.get("count") != len(catalog):
            raise CatalogError(f"count {data.get('count')!r} but {len(catalog)} voices")
    except (ValueError, UnicodeDecodeError) as err:  # CatalogError is a ValueError
        raise CatalogError(f"{location}: not a usable voice catalog: {err}") from err
    return catalog


# --- which catalog ------------------------------------------------------------------------

def default_cache_path() -> Path:
    """Where ``catalog refresh`` writes: ``$XDG_CACHE_HOME/chorus/catalog.json``, else
    ``~/.cache/chorus/catalog.json`` (XDG's default)."""
    try:
        return cache_home() / "chorus" / "catalog.json"
    except (RuntimeError, KeyError) as err:  # no HOME and a uid unknown to passwd
        raise CatalogError("no cache directory: set XDG_CACHE_HOME or HOME") from err


def load_file(path: Path) -> Catalog:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CatalogError(f"cannot read catalog {path}: {err.strerror or err}") from err
    return parse_catalog(raw, str(path))


def load_bundled() -> Catalog:
    """The snapshot shipped inside this package."""
    resource = resources.files(__package__ or "chorus.voice_manager") / BUNDLED
    try:
        raw = resource.read_bytes()
    except OSError as err:
        raise CatalogError(f"the bundled voice catalog is missing: {err}") from err
    return parse_catalog(raw, "bundled snapshot")


def _generated(catalog: Catalog) -> datetime:
    try:
        stamp = datetime.fromisoformat(catalog.source.generated)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def load_catalog(explicit: Path | None = None, cache: Path | None = None) -> Catalog:
    """The catalog a command should use (precedence in the module docstring).

    An unreadable refreshed copy is not fatal: it is logged and the bundled one used.
    """
    if explicit is not None:
        return load_file(explicit)
    bundled = load_bundled()
    try:
        cache = cache or default_cache_path()
    except CatalogError:
        return bundled  # a container with no home: nothing was refreshed there
    if not cache.exists():
        return bundled
    try:
        refreshed = load_file(cache)
    except CatalogError as err:
        _LOGGER.warning("ignoring the refreshed catalog: %s", err)
        return bundled
    return refreshed if _generated(refreshed) >= _generated(bundled) else bundled


def known_languages(voices: Iterable[CatalogVoice]) -> list[str]:
    """Sorted locale codes, for 'no voice matches' messages."""
    return sorted({v.language for v in voices})
