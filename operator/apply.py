"""Create-or-patch of rendered children: make the cluster match, touch nothing that does.

Level-based and idempotent, and a three-way merge like ``kubectl apply``: each child
carries the object it was last rendered as (annotation :data:`LAST_APPLIED`). The patch
(a JSON merge patch) is

* ``null`` for every field that was in the last rendered object but is not in the new
  one, so that removing a setting from a TTSService removes it from the child;
* the desired value wherever the live object differs (hand edits are undone);
* nothing else: fields the API server defaults or other controllers own (an HPA's
  replica count, a Service's clusterIP) stay as they are.

A pass where nothing differs sends no write at all. Resource quantities compare by
value (``0.5`` equals ``500m``), since the API server rewrites them to canonical form.
A create that races another create (409) falls back to the patch path, so a restarted
operator converges without duplicates. A name held by an object this TTSService does
not own is never adopted or touched (:class:`NotOwnedError`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, cast

import kopf

from .kube import ApiError, KubeClient

__all__ = ["LAST_APPLIED", "NotOwnedError", "Outcome", "apply_child", "delete_child",
           "is_subset", "merge_patch_for", "quantity"]

_LOGGER = logging.getLogger(__name__)

Outcome = Literal["created", "patched", "unchanged", "deleted", "absent"]

LAST_APPLIED = "tts.chorus.dev/last-applied"
"""Annotation holding the child as last rendered (JSON): the base of the three-way merge."""

_QUANTITY_KEYS = frozenset({"requests", "limits"})
"""Maps whose values are resource quantities (containers' and claims' ``resources``)."""

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_SUFFIX = {"": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
           "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"),
           "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"),
           **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti",
                                                                  "Pi", "Ei"))}}


class NotOwnedError(Exception):
    """A child's name is taken by an object this TTSService does not own."""


def quantity(text: Any) -> Decimal | None:
    """The value of a Kubernetes quantity (``500m``, ``1Gi``, ``1e3``); ``None`` if not one."""
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        value = Decimal(number)
    except InvalidOperation:
        return None
    if suffix[:1] in ("e", "E"):
        return value * Decimal(10) ** int(suffix[1:])
    return value * _SUFFIX[suffix]


def _same_scalar(desired: Any, actual: Any, as_quantity: bool) -> bool:
    if isinstance(desired, bool) or isinstance(actual, bool):
        return desired is actual
    if isinstance(desired, int | float) and isinstance(actual, int | float):
        return desired == actual
    if str(desired) == str(actual):
        return True
    if as_quantity:
        want, have = quantity(desired), quantity(actual)
        return want is not None and want == have
    return False


def is_subset(desired: Any, actual: Any, *, as_quantity: bool = False) -> bool:
    """True when every field of ``desired`` is present and equal in ``actual``.

    Lists compare element by element (same length): the API server adds defaults
    inside list items (a container's ``terminationMessagePath``, a port's ``protocol``)
    that must not count as drift. Values under ``requests``/``limits`` compare as
    quantities.
    """
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and is_subset(v, actual[k],
                                      as_quantity=as_quantity or k in _QUANTITY_KEYS)
            for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(actual, list) and len(desired) == len(actual)
                and all(is_subset(d, a) for d, a in zip(desired, actual, strict=True)))
    return _same_scalar(desired, actual, as_quantity)


def merge_patch_for(last: Any, desired: Any, live: Any, *,
                    as_quantity: bool = False) -> Any:
    """The three-way merge patch taking ``live`` to ``desired`` (``None``: no change).

    Maps recurse; a key of ``last`` that ``desired`` dropped becomes ``null`` (when
    ``live`` still has it). Lists are replaced whole (as merge patches do) when they
    differ from ``live`` or from ``last``: an item that lost a field (a container's
    memory limit) is then written without it.
    """
    if isinstance(desired, Mapping) and isinstance(live, Mapping):
        base = last if isinstance(last, Mapping) else {}
        patch: dict[str, Any] = {}
        for key, value in desired.items():
            if key not in live:
                patch[key] = value
                continue
            sub = merge_patch_for(base.get(key), value, live[key],
                                  as_quantity=as_quantity or key in _QUANTITY_KEYS)
            if sub is not None:
                patch[key] = sub
        for key in base.keys() - desired.keys():
            if key in live:
                patch[key] = None
        return patch or None
    if isinstance(desired, list) and isinstance(live, list):
        same_as_last = last is not None and is_subset(desired, last) and is_subset(last, desired)
        unchanged = is_subset(desired, live) and (last is None or same_as_last)
        return None if unchanged else desired
    if isinstance(desired, Mapping):
        return desired
    return None if _same_scalar(desired, live, as_quantity) else desired


def _owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any] | None) -> bool:
    if owner is None:
        return True
    uid = (owner.get("metadata") or {}).get("uid")
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def _last_applied(actual: Mapping[str, Any]) -> Any:
    text = ((actual.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        _LOGGER.warning("ignoring an unreadable %s annotation", LAST_APPLIED)
        return None


def _applied_form(desired: Mapping[str, Any]) -> dict[str, Any]:
    """What of ``desired`` is ours to write: a claim's spec is immutable except for
    growing its size, so for claims only that (and metadata)."""
    if desired["kind"] != "PersistentVolumeClaim":
        return dict(desired)
    meta = desired["metadata"]
    return {"apiVersion": desired["apiVersion"], "kind": desired["kind"],
            "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations",
                                              "ownerReferences") if k in meta},
            "spec": {"resources": {"requests": {
                "storage": desired["spec"]["resources"]["requests"]["storage"]}}}}


def _with_last_applied(desired: dict[str, Any]) -> dict[str, Any]:
    record = json.dumps(desired, sort_keys=True, separators=(",", ":"))
    meta = dict(desired["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), LAST_APPLIED: record}
    return {**desired, "metadata": meta}


def _strategy_fix(desired: Mapping[str, Any], live: Mapping[str, Any],
                  patch: dict[str, Any] | None) -> dict[str, Any] | None:
    """``Recreate`` forbids ``rollingUpdate``, which the API server defaults for
    ``RollingUpdate`` Deployments even when no one wrote it: null it when switching."""
    if desired["kind"] != "Deployment":
        return patch
    want = (desired.get("spec") or {}).get("strategy") or {}
    have = (live.get("spec") or {}).get("strategy") or {}
    if want.get("type") == "Recreate" and "rollingUpdate" not in want and "rollingUpdate" in have:
        patch = patch or {}
        strategy = patch.setdefault("spec", {}).setdefault("strategy", {})
        strategy["rollingUpdate"] = None
        strategy["type"] = "Recreate"
    return patch


_WHOLLY_OURS: dict[str, tuple[tuple[str, ...], ...]] = {
    "ConfigMap": (("data",), ("binaryData",)),
    "Service": (("spec", "selector"), ("spec", "externalIPs")),
}
"""Fields of a child that only the operator writes: anything else found in them (a key
added by hand, a Service's ``externalIPs``) is removed, not just what an earlier render
put there. Everything else that the render leaves out is left to defaults and others."""


def _drop_strays(desired: Mapping[str, Any], live: Mapping[str, Any],
                 patch: dict[str, Any] | None) -> dict[str, Any] | None:
    for path in _WHOLLY_OURS.get(str(desired["kind"]), ()):
        want: Any = desired
        have: Any = live
        for key in path:
            want = want.get(key) if isinstance(want, Mapping) else None
            have = have.get(key) if isinstance(have, Mapping) else None
        if have is None:
            continue
        if want is None:
            strays: Any = None  # the whole field goes
        elif isinstance(want, Mapping) and isinstance(have, Mapping):
            strays = dict.fromkeys(have.keys() - want.keys())
            if not strays:
                continue
        else:
            continue
        patch = patch or {}
        node = patch
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if strays is None or node.get(path[-1]) is None:
            node[path[-1]] = strays
        else:
            node[path[-1]].update(strays)
    return patch


async def apply_child(client: KubeClient, desired: dict[str, Any],
                      owner: Mapping[str, Any] | None) -> Outcome:
    """Make one child match ``desired`` (owned by ``owner`` when given).

    Raises :class:`NotOwnedError` when the name is held by an object ``owner`` does
    not own: that object is the user's, and is left exactly as it is.
    """
    if owner is not None:
        kopf.append_owner_reference(desired, owner=kopf.Body(cast(kopf.RawBody, dict(owner))))
    api, kind = desired["apiVersion"], desired["kind"]
    meta = desired["metadata"]
    applied = _applied_form(desired)
    actual = await client.get(api, kind, meta["namespace"], meta["name"])
    if actual is None:
        try:
            await client.create(_with_last_applied(desired))
        except ApiError as err:
            if err.status != 409:
                raise
            actual = await client.get(api, kind, meta["namespace"], meta["name"])
            if actual is None:
                raise
        else:
            _LOGGER.info("created %s %s/%s", kind, meta["namespace"], meta["name"])
            return "created"
    if not _owned_by(actual, owner):
        raise NotOwnedError(f"{kind} {meta['name']!r} exists and is not owned by this "
                            "TTSService; rename or delete it")
    last = _last_applied(actual)
    if (kind == "Deployment" and isinstance(last, dict) and isinstance(last.get("spec"), dict)
            and "replicas" not in desired["spec"]):
        # Left out because an HPA now sets it: handed over, not removed (a null would
        # snap the Deployment back to one replica until the HPA's next pass).
        last = {**last, "spec": {k: v for k, v in last["spec"].items() if k != "replicas"}}
    patch = merge_patch_for(last, _with_last_applied(applied), actual)
    patch = _strategy_fix(desired, actual, patch)
    patch = _drop_strays(desired, actual, patch)
    if patch is None:
        return "unchanged"
    _LOGGER.debug("patch for %s %s/%s: %s", kind, meta["namespace"], meta["name"], patch)
    await client.patch(api, kind, meta["namespace"], meta["name"], patch)
    _LOGGER.info("patched %s %s/%s back to the rendered state", kind, meta["namespace"],
             meta["name"])
    return "patched"


async def delete_child(client: KubeClient, api_version: str, kind: str, namespace: str,
                       name: str, owner_uid: str | None) -> Outcome:
    """Delete a child the spec no longer wants, but only if this owner owns it."""
    actual = await client.get(api_version, kind, namespace, name)
    if actual is None:
        return "absent"
    owners = (actual.get("metadata") or {}).get("ownerReferences") or []
    if owner_uid is not None and not any(o.get("uid") == owner_uid for o in owners):
        _LOGGER.warning("not deleting %s %s/%s: it is not owned by this TTSService", kind,
                    namespace, name)
        return "unchanged"
    await client.delete(api_version, kind, namespace, name)
    _LOGGER.info("deleted %s %s/%s (no longer wanted by the spec)", kind, namespace, name)
    return "deleted"
