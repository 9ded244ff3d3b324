"""Create-or-patch of rendered children: make the cluster match, touch nothing that does.

Level-based and idempotent: the desired object is compared with what the API holds and
only a real difference is patched (a JSON merge patch of the desired fields, so fields
the API server defaults or other controllers own, e.g. an HPA's replica count or a
Service's clusterIP, stay as they are). A create that races another create (409) falls
back to the patch path, so a restarted operator converges without duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal, cast

import kopf

from .kube import ApiError, KubeClient

__all__ = ["Outcome", "apply_child", "delete_child", "is_subset"]

log = logging.getLogger(__name__)

Outcome = Literal["created", "patched", "unchanged", "deleted", "absent"]


def is_subset(desired: Any, actual: Any) -> bool:
    """True when every field of ``desired`` is present and equal in ``actual``.

    Lists compare element by element (same length): the API server adds defaults
    inside list items (a container's ``terminationMessagePath``, a port's ``protocol``)
    that must not count as drift.
    """
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and is_subset(v, actual[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(actual, list) and len(desired) == len(actual)
                and all(is_subset(d, a) for d, a in zip(desired, actual, strict=True)))
    if isinstance(desired, bool) or isinstance(actual, bool):
        return desired is actual
    if isinstance(desired, int | float) and isinstance(actual, int | float):
        return desired == actual
    return str(desired) == str(actual)


def _pvc_patch(desired: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any]:
    """A claim's spec is immutable except for growing its size: patch only that."""
    patch: dict[str, Any] = {"metadata": {k: desired["metadata"][k] for k in
                                          ("labels", "ownerReferences") if k in
                                          desired["metadata"]}}
    want = desired["spec"]["resources"]["requests"]["storage"]
    have = (actual.get("spec") or {}).get("resources", {}).get("requests", {}).get("storage")
    if have != want:
        patch["spec"] = {"resources": {"requests": {"storage": want}}}
    return patch


async def apply_child(client: KubeClient, desired: dict[str, Any],
                      owner: Mapping[str, Any] | None) -> Outcome:
    """Make one child match ``desired`` (owned by ``owner`` when given)."""
    if owner is not None:
        kopf.append_owner_reference(desired, owner=kopf.Body(cast(kopf.RawBody, dict(owner))))
    api, kind = desired["apiVersion"], desired["kind"]
    meta = desired["metadata"]
    actual = await client.get(api, kind, meta["namespace"], meta["name"])
    if actual is None:
        try:
            await client.create(desired)
        except ApiError as err:
            if err.status != 409:
                raise
            actual = await client.get(api, kind, meta["namespace"], meta["name"])
            if actual is None:
                raise
        else:
            log.info("created %s %s/%s", kind, meta["namespace"], meta["name"])
            return "created"
    patch = _pvc_patch(desired, actual) if kind == "PersistentVolumeClaim" else desired
    if is_subset(patch, actual):
        return "unchanged"
    await client.patch(api, kind, meta["namespace"], meta["name"], patch)
    log.info("patched %s %s/%s back to the rendered state", kind, meta["namespace"],
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
        log.warning("not deleting %s %s/%s: it is not owned by this TTSService", kind,
                    namespace, name)
        return "unchanged"
    await client.delete(api_version, kind, namespace, name)
    log.info("deleted %s %s/%s (no longer wanted by the spec)", kind, namespace, name)
    return "deleted"
