"""``chorus render``: TTSService/TTSVoice YAML files in, the operator's objects out.

The same parsing, selection and ``build_children`` as the running operator, minus what
only a cluster has (owner references need the service's uid), so the output is exactly
what would be applied. Problems the operator would report as conditions (a missing
voice, a default voice not selected) come back as messages; the caller exits non-zero.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .models import GROUP, SpecError, VoiceResource, parse_service, parse_voice
from .render import RenderSettings, build_children, check_service_name, select_voices

__all__ = ["dump_documents", "load_documents", "render_files"]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the ConfigMap's JSON files) as readable literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_documents(objects: Iterable[dict[str, Any]]) -> str:
    """Multi-document YAML, keys in rendering order."""
    return "".join("---\n" + yaml.dump(obj, Dumper=_Dumper, sort_keys=False)
                   for obj in objects)


def load_documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every YAML document in ``paths`` ('-' is stdin), skipping empty ones."""
    docs: list[dict[str, Any]] = []
    for path in paths:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        try:
            loaded = list(yaml.safe_load_all(text))
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
        for doc in loaded:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ValueError(f"{path}: expected Kubernetes objects, got {type(doc).__name__}")
            docs.extend(doc.get("items") or [] if doc.get("kind", "").endswith("List")
                        else [doc])
    return docs


def _is(doc: dict[str, Any], kind: str) -> bool:
    return bool(doc.get("kind") == kind and str(doc.get("apiVersion", "")).startswith(GROUP))


def render_files(paths: Iterable[Path], namespace: str,
                 settings: RenderSettings) -> tuple[str, list[str]]:
    """(multi-document YAML of every child, problems found)."""
    docs = load_documents(paths)
    for doc in docs:
        doc.setdefault("metadata", {}).setdefault("namespace", namespace)
    problems: list[str] = []
    voices: dict[str, list[VoiceResource]] = {}
    invalid: dict[str, dict[str, str]] = {}
    for doc in (d for d in docs if _is(d, "TTSVoice")):
        meta = doc["metadata"]
        try:
            voice = parse_voice(doc)
        except SpecError as err:
            invalid.setdefault(meta["namespace"], {})[meta.get("name", "")] = str(err)
            problems.append(f"TTSVoice {meta['namespace']}/{meta.get('name')}: {err}")
            continue
        voices.setdefault(voice.namespace, []).append(voice)
    services = [d for d in docs if _is(d, "TTSService")]
    if not services:
        problems.append("no TTSService in the given files")
    out: list[dict[str, Any]] = []
    for doc in services:
        meta = doc["metadata"]
        name, ns = str(meta.get("name", "")), str(meta["namespace"])
        try:
            check_service_name(name)
            spec = parse_service(doc)
        except (SpecError, ValueError) as err:
            problems.append(f"TTSService {ns}/{name}: {err}")
            continue
        selection = select_voices(spec, voices.get(ns, []), invalid.get(ns))
        for missing in selection.missing:
            problems.append(f"TTSService {ns}/{name}: no TTSVoice named {missing}")
        for key in selection.conflicts:
            problems.append(f"TTSService {ns}/{name}: TTSVoices with different specs claim "
                            f"voice {key}")
        if spec.default_voice not in selection.keys:
            problems.append(f"TTSService {ns}/{name}: defaultVoice {spec.default_voice!r} is "
                            "not among the selected voices; the operator renders nothing")
            continue
        out.extend(c for c in build_children(name, ns, spec, selection, settings).values()
                   if c is not None)
    return dump_documents(out), problems
