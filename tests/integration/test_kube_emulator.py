"""The Kubernetes API emulator (``emulators.kube``): each gap closed over kmock 0.8, then a
real kopf operator running against it in the test's event loop."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf
import pytest

from emulators.kube import (
    KUBECONFIG_TOKEN,
    STRATEGIC_MERGE_PATCH,
    ThreadedEmulator,
    canonical_quantity,
    merge_patch,
    parse_label_selector,
    resource_path,
)
from tests.integration.operator_fixtures import (
    POD_MONITOR_CRD,
    EmulatedCluster,
    KubeAPIError,
    login_handler,
    operator_settings,
    running_operator,
)

pytest_plugins = ["tests.integration.operator_fixtures"]

GROUP, VERSION = "tts.chorus.dev", "v1alpha1"
TTS = f"{GROUP}/{VERSION}"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def configmap(name: str, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, **extra}


def tts_service(name: str, replicas: int = 1) -> dict[str, Any]:
    return {"apiVersion": TTS, "kind": "TTSService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas}}


def rv(obj: dict[str, Any] | None) -> int:
    assert obj is not None
    return int(obj["metadata"]["resourceVersion"])


async def collect(events: AsyncIterator[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(event["type"], event["object"]["metadata"].get("name", ""))
            async for event in events]


# --- 1. server-stamped metadata, generation, status subresource ------------------------------

async def test_writes_stamp_metadata_and_generation(kube_emulator: EmulatedCluster) -> None:
    kube = kube_emulator
    created = await kube.create({**tts_service("svc"), "status": {"phase": "forged"}})
    meta = created["metadata"]
    assert uuid.UUID(meta["uid"]).version == 4
    assert RFC3339.match(meta["creationTimestamp"])
    assert meta["generation"] == 1
    assert "status" not in created  # a create does not write the status subresource
    other = await kube.create(configmap("cm"))
    assert rv(other) > rv(created)

    spec = await kube.patch(TTS, "ttsservices", "default", "svc",
                            {"spec": {"replicas": 2}, "status": {"phase": "ignored"}})
    assert spec["metadata"]["generation"] == 2 and rv(spec) > rv(other)
    assert "status" not in spec  # the main resource does not write .status

    labelled = await kube.patch(TTS, "ttsservices", "default", "svc",
                                {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 2 and rv(labelled) > rv(spec)

    status = await kube.patch(TTS, "ttsservices", "default", "svc",
                              {"spec": {"replicas": 7}, "metadata": {"labels": {"a": "c"}},
                               "status": {"phase": "Ready"}}, subresource="status")
    assert status["status"] == {"phase": "Ready"}
    assert status["spec"] == {"replicas": 2}  # /status changes .status only
    assert status["metadata"]["labels"] == {"a": "b"}
    assert status["metadata"]["generation"] == 2 and rv(status) > rv(labelled)
    for field in ("uid", "creationTimestamp"):
        assert status["metadata"][field] == meta[field]

    # A write that changes nothing is a no-op: no new resourceVersion, as in Kubernetes.
    same = await kube.patch(TTS, "ttsservices", "default", "svc", {"spec": {"replicas": 2}})
    assert rv(same) == rv(status)
    assert kube.emulator.resource_version == str(rv(status))

    # Resources without the status subresource write .status through the main resource.
    cm = await kube.patch("v1", "configmaps", "default", "cm", {"status": {"x": 1}})
    assert cm["status"] == {"x": 1}
    with pytest.raises(KubeAPIError) as info:
        await kube.patch("v1", "configmaps", "default", "cm", {"a": 1}, subresource="status")
    assert info.value.status == 404


# --- 2. JSON patches --------------------------------------------------------------------------

async def test_json_patch_failures_answer_422(kube_emulator: EmulatedCluster) -> None:
    kube = kube_emulator
    cm = await kube.create(configmap("cm", data={"a": "1"}))
    current = cm["metadata"]["resourceVersion"]

    with pytest.raises(KubeAPIError) as info:  # kopf's optimistic lock, lost: kmock said 500
        await kube.json_patch("v1", "configmaps", "default", "cm", [
            {"op": "test", "path": "/metadata/resourceVersion", "value": "999"},
            {"op": "replace", "path": "/data/a", "value": "2"}])
    assert info.value.status == 422
    with pytest.raises(KubeAPIError) as info:
        await kube.json_patch("v1", "configmaps", "default", "cm",
                              [{"op": "remove", "path": "/data/missing"}])
    assert info.value.status == 422
    assert (await kube.get("v1", "configmaps", "default", "cm"))["data"] == {"a": "1"}

    patched = await kube.json_patch("v1", "configmaps", "default", "cm", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": current},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
        {"op": "replace", "path": "/data/a", "value": "2"}])
    assert patched["data"] == {"a": "2"} and patched["metadata"]["finalizers"] == ["x/y"]

    status, _ = await kube.request("PATCH", resource_path("v1", "configmaps", "default", "cm"),
                                   body={"data": {}}, content_type="application/apply-patch+yaml")
    assert status == 415


# --- 3. watch: subscribe before the snapshot, resume from resourceVersion ---------------------

async def test_list_carries_the_resource_version(kube_emulator: EmulatedCluster) -> None:
    kube = kube_emulator
    await kube.create(configmap("a"))
    listing = await kube.list("v1", "configmaps")
    assert listing["kind"] == "ConfigMapList" and listing["apiVersion"] == "v1"
    assert listing["metadata"]["resourceVersion"] == kube.emulator.resource_version
    assert [item["metadata"]["name"] for item in listing["items"]] == ["a"]


async def test_watch_resumes_from_resource_version(kube_emulator: EmulatedCluster) -> None:
    kube = kube_emulator
    await kube.create(configmap("old"))
    await kube.create(configmap("gone"))
    since = (await kube.list("v1", "configmaps"))["metadata"]["resourceVersion"]
    await kube.patch("v1", "configmaps", "default", "old", {"data": {"k": "v"}})
    await kube.delete("v1", "configmaps", "default", "gone")
    await kube.create(configmap("new"))

    # Only what happened after `since`, with the real event types (the deletion included).
    resumed = await collect(kube.watch("v1", "configmaps", resource_version=since,
                                       timeout_seconds=0.2))
    assert resumed == [("MODIFIED", "old"), ("DELETED", "gone"), ("ADDED", "new")]
    # Without a resourceVersion: the current state as ADDED events.
    fresh = await collect(kube.watch("v1", "configmaps", timeout_seconds=0.2))
    assert fresh == [("ADDED", "new"), ("ADDED", "old")]
    # Up to date: nothing to replay.
    latest = kube.emulator.resource_version
    assert await collect(kube.watch("v1", "configmaps", resource_version=latest,
                                    timeout_seconds=0.2)) == []


async def test_watch_loses_nothing_while_it_starts(kube_emulator: EmulatedCluster) -> None:
    kube = kube_emulator
    names = [f"cm-{index}" for index in range(40)]

    async def create_all() -> None:
        for name in names:
            await kube.create(configmap(name))

    seen: list[str] = []
    writer = asyncio.create_task(create_all())
    async for event in kube.watch("v1", "configmaps", timeout_seconds=3):
        seen.append(event["object"]["metadata"]["name"])
        if len(set(seen)) == len(names):
            break
    await writer
    assert sorted(seen) == sorted(names)  # each exactly once: no loss, no duplicates


async def test_watch_answers_410_once_history_is_compacted(
        kube_emulator: EmulatedCluster) -> None:
    kube = kube_emulator
    kube.emulator.history_limit = 2
    first = await kube.create(configmap("a"))
    for value in "xyz":
        await kube.patch("v1", "configmaps", "default", "a", {"data": {"v": value}})
    events = [event async for event in kube.watch(
        "v1", "configmaps", resource_version=first["metadata"]["resourceVersion"])]
    assert [event["type"] for event in events] == ["ERROR"]
    assert events[0]["object"]["code"] == 410


async def test_watch_sends_initial_events_and_a_bookmark(kube_emulator: EmulatedCluster) -> None:
    kube = kube_emulator
    await kube.create(configmap("a"))
    events = [event async for event in kube.watch(
        "v1", "configmaps", timeout_seconds=0.2, sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan")]
    assert [event["type"] for event in events] == ["ADDED", "BOOKMARK"]
    bookmark = events[1]["object"]["metadata"]
    assert bookmark["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert bookmark["resourceVersion"] == kube.emulator.resource_version


# --- 4. label and field selectors -------------------------------------------------------------

@pytest.mark.parametrize(("selector", "expected"), [
    ("app=tts", ["a", "b"]),
    ("app==tts,tier=web", ["a"]),
    ("tier!=web", ["b", "c"]),
    ("tier", ["a"]),
    ("!tier", ["b", "c"]),
    ("app in (tts, other)", ["a", "b", "c"]),
    ("app notin (other),tier", ["a"]),
])
async def test_label_selectors(kube_emulator: EmulatedCluster, selector: str,
                               expected: list[str]) -> None:
    kube = kube_emulator
    await kube.create(configmap("a", {"app": "tts", "tier": "web"}))
    await kube.create(configmap("b", {"app": "tts"}))
    await kube.create(configmap("c", {"app": "other"}))
    listing = await kube.list("v1", "configmaps", label_selector=selector)
    assert [item["metadata"]["name"] for item in listing["items"]] == expected
    watched = await collect(kube.watch("v1", "configmaps", labelSelector=selector,
                                       timeout_seconds=0.1))
    assert [name for _, name in watched] == expected


async def test_field_selectors_and_malformed_selectors(kube_emulator: EmulatedCluster) -> None:
    kube = kube_emulator
    await kube.create(configmap("a"))
    await kube.create({**configmap("b"), "metadata": {"name": "b", "namespace": "other"}})
    names = await kube.list("v1", "configmaps", field_selector="metadata.name=b")
    assert [item["metadata"]["name"] for item in names["items"]] == ["b"]
    spaces = await kube.list("v1", "configmaps", field_selector="metadata.namespace!=other")
    assert [item["metadata"]["name"] for item in spaces["items"]] == ["a"]
    in_other = await kube.list("v1", "configmaps", "other")
    assert [item["metadata"]["name"] for item in in_other["items"]] == ["b"]
    status, body = await kube.request("GET", resource_path("v1", "configmaps"),
                                      params={"labelSelector": "a in (b"})
    assert status == 400 and body["reason"] == "BadRequest"
    assert parse_label_selector("")({"anything": "x"})


async def test_watch_sees_objects_leave_and_enter_its_selector(
        kube_emulator: EmulatedCluster) -> None:
    kube = kube_emulator
    await kube.create(configmap("a", {"app": "tts"}))
    since = kube.emulator.resource_version
    await kube.patch("v1", "configmaps", "default", "a", {"metadata": {"labels": {"app": "x"}}})
    await kube.patch("v1", "configmaps", "default", "a", {"metadata": {"labels": {"app": "tts"}}})
    events = await collect(kube.watch("v1", "configmaps", resource_version=since,
                                      labelSelector="app=tts", timeout_seconds=0.1))
    assert events == [("DELETED", "a"), ("ADDED", "a")]


# --- 5. garbage collection and finalizers -----------------------------------------------------

def owned(obj: dict[str, Any], *owners: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "uid": owner["metadata"]["uid"],
         "name": owner["metadata"]["name"], "controller": index == 0}
        for index, owner in enumerate(owners)]
    return obj


def deployment(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"replicas": 1}}


async def test_deleting_an_owner_collects_its_dependents(kube_emulator: EmulatedCluster) -> None:
    kube = kube_emulator
    owner = await kube.create(tts_service("svc"))
    child = await kube.create(owned(deployment("child"), owner))
    await kube.create(owned(configmap("grandchild"), child))
    other = await kube.create(configmap("other-owner"))
    await kube.create(owned(configmap("shared"), owner, other))
    blocked = await kube.create(owned({**configmap("blocked"), "metadata": {
        "name": "blocked", "namespace": "default", "finalizers": ["x/y"]}}, owner))
    since = kube.emulator.resource_version

    await kube.delete(TTS, "ttsservices", "default", "svc")

    assert not await kube.exists("apps/v1", "deployments", "default", "child")
    assert not await kube.exists("v1", "configmaps", "default", "grandchild")
    assert await kube.exists("v1", "configmaps", "default", "shared")  # another owner lives
    pending = await kube.get("v1", "configmaps", "default", "blocked")
    assert pending["metadata"]["deletionTimestamp"]  # a finalizer holds it, as in Kubernetes
    assert RFC3339.match(pending["metadata"]["deletionTimestamp"])
    assert await collect(kube.watch("apps/v1", "deployments", resource_version=since,
                                    timeout_seconds=0.1)) == [("DELETED", "child")]
    cms = await collect(kube.watch("v1", "configmaps", resource_version=since,
                                   timeout_seconds=0.1))
    assert sorted(cms) == [("DELETED", "grandchild"), ("MODIFIED", "blocked")]

    # Releasing the last finalizer deletes it for real: one DELETED event, the final state.
    since = kube.emulator.resource_version
    await kube.patch("v1", "configmaps", "default", "blocked", {"metadata": {"finalizers": None}})
    assert not await kube.exists("v1", "configmaps", "default", "blocked")
    assert await collect(kube.watch("v1", "configmaps", resource_version=since,
                                    timeout_seconds=0.1)) == [("DELETED", "blocked")]
    assert pending["metadata"]["uid"] == blocked["metadata"]["uid"]


async def test_orphan_propagation_keeps_dependents(kube_emulator: EmulatedCluster) -> None:
    """The garbage collector orphans dependents by removing the owner's reference from
    them, so they outlive the owner for good (also past the collection of dangling ones)."""
    kube = kube_emulator
    owner = await kube.create(tts_service("svc"))
    await kube.create(owned(deployment("child"), owner))
    await kube.delete(TTS, "ttsservices", "default", "svc", propagation_policy="Orphan")
    await asyncio.sleep(0.2)  # longer than the collector's delay for dangling references
    child = await kube.get("apps/v1", "deployments", "default", "child")
    assert "ownerReferences" not in child["metadata"]


# --- 6. PUT and merge patches -----------------------------------------------------------------

async def test_put_replaces_and_checks_the_resource_version(
        kube_emulator: EmulatedCluster) -> None:
    kube = kube_emulator
    cm = await kube.create(configmap("cm", data={"a": "1", "b": "2"}))
    body = {**configmap("cm", data={"c": "3"})}
    body["metadata"]["resourceVersion"] = cm["metadata"]["resourceVersion"]
    replaced = await kube.replace("v1", "configmaps", "default", "cm", body)
    assert replaced["data"] == {"c": "3"}  # replaced, not merged
    for field in ("uid", "creationTimestamp", "namespace"):
        assert replaced["metadata"][field] == cm["metadata"][field]
    assert rv(replaced) > rv(cm)

    with pytest.raises(KubeAPIError) as info:  # the same, stale, resourceVersion again
        await kube.replace("v1", "configmaps", "default", "cm", body)
    assert info.value.status == 409
    with pytest.raises(KubeAPIError) as info:  # a merge patch carrying a stale one
        await kube.patch("v1", "configmaps", "default", "cm",
                         {"metadata": {"resourceVersion": cm["metadata"]["resourceVersion"]}})
    assert info.value.status == 409
    with pytest.raises(KubeAPIError) as info:
        await kube.replace("v1", "configmaps", "default", "missing", configmap("missing"))
    assert info.value.status == 404

    # PUT on the main resource keeps .status when the resource has a status subresource.
    svc = await kube.create(tts_service("svc"))
    await kube.patch(TTS, "ttsservices", "default", "svc", {"status": {"phase": "Ready"}},
                     subresource="status")
    put = await kube.replace(TTS, "ttsservices", "default", "svc",
                             {**tts_service("svc", replicas=3), "status": {"phase": "x"}})
    assert put["status"] == {"phase": "Ready"} and put["metadata"]["generation"] == 2
    assert put["metadata"]["uid"] == svc["metadata"]["uid"]


async def test_merge_patches_follow_rfc_7386(kube_emulator: EmulatedCluster) -> None:
    kube = kube_emulator
    await kube.create(configmap("cm", data={"a": "1", "b": "2"},
                                spec={"scalar": 1, "tree": {"x": 1}, "list": [1, 2]}))
    patched = await kube.patch("v1", "configmaps", "default", "cm", {
        "data": {"a": None},  # null deletes
        "spec": {"scalar": {"now": "a dict"}, "tree": "now a scalar", "list": [3]}})
    assert patched["data"] == {"b": "2"}
    assert patched["spec"] == {"scalar": {"now": "a dict"}, "tree": "now a scalar", "list": [3]}
    strategic = await kube.patch("v1", "configmaps", "default", "cm", {"data": {"c": "3"}},
                                 content_type=STRATEGIC_MERGE_PATCH)
    assert strategic["data"] == {"b": "2", "c": "3"}
    assert merge_patch({"a": {"b": 1}}, {"a": {"b": None, "c": None}}) == {"a": {}}


# --- 7. creation ------------------------------------------------------------------------------

async def test_create_takes_the_namespace_from_the_url(kube_emulator: EmulatedCluster) -> None:
    kube = kube_emulator
    path = resource_path(TTS, "ttsvoices", "voices")
    status, body = await kube.request("POST", path, body={
        "apiVersion": TTS, "kind": "TTSVoice", "metadata": {"name": "joe"}})
    assert status == 201 and body["metadata"]["namespace"] == "voices"
    assert (await kube.get(TTS, "ttsvoices", "voices", "joe"))["metadata"]["name"] == "joe"

    status, body = await kube.request("POST", path, body={"metadata": {"name": "joe"}})
    assert status == 409 and body["reason"] == "AlreadyExists"
    status, _ = await kube.request("POST", path, body={
        "metadata": {"name": "amy", "namespace": "elsewhere"}})
    assert status == 400
    status, body = await kube.request("POST", path, body={"metadata": {"generateName": "v-"}})
    assert status == 201 and re.match(r"^v-[a-z0-9]{5}$", body["metadata"]["name"])

    status, body = await kube.request("POST", resource_path("v1", "namespaces"),
                                      body={"metadata": {"name": "ns", "namespace": "x"}})
    assert status == 201 and "namespace" not in body["metadata"]  # cluster-scoped
    status, _ = await kube.request("POST", resource_path("v1", "undeclared", "default"),
                                   body={"metadata": {"name": "x"}})
    assert status == 404


def test_threaded_emulator_serves_synchronous_clients(tmp_path: Any) -> None:
    with ThreadedEmulator(tmp_path / "kubeconfig") as emu:
        assert emu.kubeconfig.read_text().count(emu.url) == 1
        status, body = emu.request("POST", resource_path("v1", "configmaps", "default"),
                                   {"metadata": {"name": "x"}})
        assert status == 201 and body["metadata"]["namespace"] == "default"
        status, body = emu.request("GET", resource_path("v1", "configmaps", "default", "x"))
        assert status == 200 and body["metadata"]["uid"]
        assert emu.call(asyncio.sleep(0, "done")) == "done"
        assert emu.emulator.resource_version == "1"


# --- a real kopf operator ---------------------------------------------------------------------

class Observed:
    """What the handlers saw, for the assertions."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.updated: list[str] = []
        self.deleted: list[str] = []
        self.deployment_events: list[tuple[str | None, str]] = []
        self.service_versions: list[str] = []


def chorus_registry(kube: EmulatedCluster, seen: Observed, *,
                    kubeconfig_login: bool = False) -> kopf.OperatorRegistry:
    """A small operator: a TTSService gets a Deployment; a timer mirrors an index of voices."""
    registry = kopf.OperatorRegistry()
    if kubeconfig_login:
        kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
    else:
        kopf.on.login(registry=registry)(login_handler(kube.url))

    @kopf.on.create(GROUP, VERSION, "ttsservices", id="created", registry=registry)
    async def created(name: str, spec: kopf.Spec, body: kopf.Body, **_: Any) -> dict[str, Any]:
        seen.created.append(name)
        kopf.info(body, reason="Provisioning", message=f"creating {name}-server")
        child: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "Deployment",
                                 "metadata": {"name": f"{name}-server"},
                                 "spec": {"replicas": spec["replicas"]}}
        kopf.adopt(child)  # namespace and ownerReferences from the TTSService
        await kube.create(child)
        return {"deployment": child["metadata"]["name"]}  # kopf stores it in status.created

    @kopf.on.update(GROUP, VERSION, "ttsservices", id="updated", registry=registry)
    def updated(name: str, spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
        seen.updated.append(name)
        patch.status["observedReplicas"] = spec["replicas"]

    @kopf.on.delete(GROUP, VERSION, "ttsservices", id="deleted", registry=registry)
    def deleted(name: str, **_: Any) -> None:  # makes kopf put (and then lift) a finalizer
        seen.deleted.append(name)

    @kopf.on.event(GROUP, VERSION, "ttsservices", id="service_event", registry=registry)
    def service_event(body: kopf.Body, **_: Any) -> None:
        seen.service_versions.append(body.metadata["resourceVersion"])

    @kopf.on.event("apps", "v1", "deployments", id="deployment_event", registry=registry)
    def deployment_event(type: str | None, name: str, **_: Any) -> None:
        seen.deployment_events.append((type, name))

    @kopf.index(GROUP, VERSION, "ttsvoices", id="voices_by_namespace", registry=registry)
    def voices_by_namespace(namespace: str | None, name: str,
                            **_: Any) -> dict[str | None, str]:
        return {namespace: name}

    @kopf.timer(GROUP, VERSION, "ttsservices", id="mirror_voices", interval=0.1,
                registry=registry)
    def mirror_voices(namespace: str | None, status: kopf.Status, patch: kopf.Patch,
                      **kwargs: Any) -> None:
        # Indices come as keyword arguments named by their ids (kopf's TimerFn types them so).
        index: kopf.Index[str | None, str] = kwargs["voices_by_namespace"]
        voices = sorted(index.get(namespace, []))
        if status.get("voices") != voices:
            patch.status["voices"] = voices

    return registry


async def test_kopf_operator_runs_against_the_emulator(kube_emulator: EmulatedCluster) -> None:
    kube, seen = kube_emulator, Observed()
    await kube.create({"apiVersion": TTS, "kind": "TTSVoice",
                       "metadata": {"name": "joe", "namespace": "default"}})
    started = time.monotonic()
    async with running_operator(chorus_registry(kube, seen)):
        await kube.create(tts_service("svc"))

        # The create handler ran: its result is in the status, its child exists and is owned.
        svc = await kube.wait_for(TTS, "ttsservices", "default", "svc",
                                  lambda obj: bool(obj and "created" in obj.get("status", {})))
        assert svc is not None
        assert svc["status"]["created"] == {"deployment": "svc-server"}
        assert svc["metadata"]["finalizers"] == ["tts.chorus.dev/finalizer"]
        child = await kube.get("apps/v1", "deployments", "default", "svc-server")
        assert child["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
        assert seen.created == ["svc"]

        # The index holds the voice listed at start-up, and then one created later.
        await kube.wait_for(TTS, "ttsservices", "default", "svc",
                            lambda obj: bool(obj and obj.get("status", {}).get("voices")
                                             == ["joe"]))
        await kube.create({"apiVersion": TTS, "kind": "TTSVoice",
                           "metadata": {"name": "amy", "namespace": "default"}})
        await kube.wait_for(TTS, "ttsservices", "default", "svc",
                            lambda obj: bool(obj and obj.get("status", {}).get("voices")
                                             == ["amy", "joe"]))

        # kopf posts its k8s events (in the background) through the emulator.
        async def posted() -> list[str]:
            events = await kube.list("v1", "events", "default",
                                     field_selector="involvedObject.name=svc")
            return [event["message"] for event in events["items"]]
        deadline = time.monotonic() + 5
        while "creating svc-server" not in await posted():
            assert time.monotonic() < deadline, await posted()
            await asyncio.sleep(0.05)

        # A spec change runs the update handler.
        await kube.patch(TTS, "ttsservices", "default", "svc", {"spec": {"replicas": 2}})
        svc = await kube.wait_for(TTS, "ttsservices", "default", "svc", lambda obj: bool(
            obj and obj.get("status", {}).get("observedReplicas") == 2))
        assert svc is not None and svc["metadata"]["generation"] == 2
        assert seen.updated == ["svc"]

        # A status-only change does not: wait until kopf has processed it and one more.
        for phase in ("Degraded", "Ready"):
            patched = await kube.patch(TTS, "ttsservices", "default", "svc",
                                       {"status": {"phase": phase}}, subresource="status")
            await wait_until(lambda p=patched: patched_version_seen(seen, p))
        assert seen.updated == ["svc"]

        # The Deployment was seen by the event handler; deleting the owner collects it.
        assert ("ADDED", "svc-server") in seen.deployment_events
        await kube.delete(TTS, "ttsservices", "default", "svc")
        await kube.wait_for(TTS, "ttsservices", "default", "svc", lambda obj: obj is None)
        assert seen.deleted == ["svc"]
        assert not await kube.exists("apps/v1", "deployments", "default", "svc-server")
        await wait_until(lambda: ("DELETED", "svc-server") in seen.deployment_events)
    assert time.monotonic() - started < 10


async def test_kopf_restart_does_not_rerun_create_handlers(
        kube_emulator: EmulatedCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    kube, seen = kube_emulator, Observed()
    async with running_operator(chorus_registry(kube, seen)):
        await kube.create(tts_service("svc"))
        await kube.wait_for(TTS, "ttsservices", "default", "svc",
                            lambda obj: bool(obj and "created" in obj.get("status", {})))
    svc = await kube.get(TTS, "ttsservices", "default", "svc")
    assert any(key.startswith("tts.chorus.dev/") for key in svc["metadata"]["annotations"])
    assert seen.created == ["svc"]

    # A new operator (fresh registry, logged in via the kubeconfig) finds the object handled.
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    seen.service_versions.clear()
    settings = operator_settings()
    settings.watching.server_timeout = 0.2  # the emulator ends the watches; kopf resumes them
    async with running_operator(chorus_registry(kube, seen, kubeconfig_login=True),
                                settings=settings):
        await wait_until(lambda: bool(seen.service_versions))  # the initial listing
        await asyncio.sleep(0.5)  # kopf is now on watches resumed from a resourceVersion
        for phase in ("a", "b"):  # processed to the end: a later event was processed too
            patched = await kube.patch(TTS, "ttsservices", "default", "svc",
                                       {"status": {"phase": phase}}, subresource="status")
            await wait_until(lambda p=patched: patched_version_seen(seen, p))
        assert seen.created == ["svc"] and seen.updated == []
        assert await kube.exists("apps/v1", "deployments", "default", "svc-server")


def patched_version_seen(seen: Observed, patched: dict[str, Any]) -> bool:
    return any(int(version) >= rv(patched) for version in seen.service_versions)


async def wait_until(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never held")
        await asyncio.sleep(0.02)


async def test_namespaces_can_be_watched(kube_emulator: EmulatedCluster) -> None:
    """kopf watches namespaces when it serves a list of them; the query must survive."""
    await kube_emulator.create({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": "speech"}})
    events = [e async for e in kube_emulator.watch("v1", "namespaces", timeout_seconds=0.5)]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "speech")]


# Kubernetes' canonical quantity form (k8s.io/apimachinery/pkg/api/resource, Quantity's
# String()/CanonicalizeBytes): the API server stores what it decoded, re-serialized.
@pytest.mark.parametrize(("given", "stored"), [
    ("0.5", "500m"), ("1000m", "1"), ("1500m", "1500m"), ("1024Mi", "1Gi"),
    ("1.5Gi", "1536Mi"), ("2048", "2048"), ("1e3", "1e3"), ("1500e-3", "1500e-3"), ("100M", "100M"),
    ("0.5Ki", "512"), ("1000000", "1M"), ("0", "0"), ("0.0000000001", "1n")])
def test_quantities_are_stored_in_canonical_form(given: str, stored: str) -> None:
    assert canonical_quantity(given, "x") == stored


def strategy_deployment(name: str, strategy: dict[str, Any], cpu: str = "0.5") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": name}}, "strategy": strategy,
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [{"name": "c", "image": "i", "resources": {
                             "requests": {"cpu": cpu, "memory": "1024Mi"}}}]}}}}


async def test_container_and_claim_quantities_are_canonicalized_on_write(
        kube_emulator: EmulatedCluster) -> None:
    created = await kube_emulator.create(strategy_deployment("q", {"type": "Recreate"}))
    requests = created["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests == {"cpu": "500m", "memory": "1Gi"}
    # a patch to the same value in another spelling is a no-op: no new resourceVersion
    same = await kube_emulator.patch("apps/v1", "deployments", "default", "q", {
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i", "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"}}}]}}}})
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    claim = await kube_emulator.create({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "c", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "2048Mi"}}}})
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    with pytest.raises(KubeAPIError) as bad:
        await kube_emulator.create(strategy_deployment("bad", {"type": "Recreate"}, cpu="lots"))
    assert bad.value.status == 422 and "quantities must match" in bad.value.body["message"]


async def test_recreate_with_rolling_update_is_refused(kube_emulator: EmulatedCluster) -> None:
    """apps/v1 validation (ValidateDeploymentStrategy): rollingUpdate is forbidden with
    Recreate, on create and on update alike, and nulling it in the same patch is fine."""
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    with pytest.raises(KubeAPIError) as refused:
        await kube_emulator.create(strategy_deployment("r", {**rolling, "type": "Recreate"}))
    assert refused.value.status == 422
    assert ("spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy "
            "`type` is 'Recreate'") in refused.value.body["message"]
    await kube_emulator.create(strategy_deployment("r", rolling))
    with pytest.raises(KubeAPIError) as refused:
        await kube_emulator.patch("apps/v1", "deployments", "default", "r",
                                  {"spec": {"strategy": {"type": "Recreate"}}})
    assert refused.value.status == 422
    done = await kube_emulator.patch("apps/v1", "deployments", "default", "r", {
        "spec": {"strategy": {"type": "Recreate", "rollingUpdate": None}}})
    assert done["spec"]["strategy"] == {"type": "Recreate"}


async def test_deployments_get_the_apps_v1_defaults(kube_emulator: EmulatedCluster) -> None:
    """apps/v1 SetDefaults_Deployment: replicas 1, a RollingUpdate strategy with 25 %
    maxUnavailable and maxSurge, revisionHistoryLimit 10, progressDeadlineSeconds 600.
    Defaulting runs on the patched object too, so switching ``type`` alone to Recreate
    meets the defaulted ``rollingUpdate`` and is refused, as on a real cluster."""
    body = strategy_deployment("d", {})
    del body["spec"]["strategy"]
    created = await kube_emulator.create(body)
    assert created["spec"]["replicas"] == 1
    assert created["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert created["spec"]["revisionHistoryLimit"] == 10
    assert created["spec"]["progressDeadlineSeconds"] == 600
    with pytest.raises(KubeAPIError) as refused:
        await kube_emulator.patch("apps/v1", "deployments", "default", "d",
                                  {"spec": {"strategy": {"type": "Recreate"}}})
    assert refused.value.status == 422
    partial = await kube_emulator.patch("apps/v1", "deployments", "default", "d", {
        "spec": {"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": None}}}})
    assert partial["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1,
                                                            "maxUnavailable": "25%"}


def service(name: str, type_: str = "ClusterIP", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": type_, "selector": {"app": name},
                     "ports": [{"name": "wyoming", "port": 10200}], **spec}}


async def test_services_get_defaults_and_a_cluster_ip_that_cannot_change(
        kube_emulator: EmulatedCluster) -> None:
    """core/v1 SetDefaults_Service (protocol TCP, targetPort = port, sessionAffinity None,
    internalTrafficPolicy Cluster) and the Service registry: a cluster IP is allocated on
    create; ``spec.clusterIP`` is immutable ("field is immutable", 422); an update that
    leaves it out or nulls it keeps the allocated one (patchAllocatedValues)."""
    kube = kube_emulator
    created = await kube.create(service("s"))
    spec = created["spec"]
    assert spec["ports"] == [{"name": "wyoming", "port": 10200, "protocol": "TCP",
                              "targetPort": 10200}]
    assert spec["sessionAffinity"] == "None" and spec["internalTrafficPolicy"] == "Cluster"
    assert re.fullmatch(r"10\.(9[6-9]|10[0-9]|11[01])\.\d+\.\d+", spec["clusterIP"])
    assert spec["clusterIPs"] == [spec["clusterIP"]]
    assert "nodePort" not in spec["ports"][0]
    with pytest.raises(KubeAPIError) as refused:
        await kube.patch("v1", "services", "default", "s", {"spec": {"clusterIP": "10.96.9.9"}})
    assert refused.value.status == 422
    assert "spec.clusterIP: Invalid value" in refused.value.body["message"]
    assert "field is immutable" in refused.value.body["message"]
    nulled = await kube.patch("v1", "services", "default", "s", {"spec": {"clusterIP": None}})
    assert nulled["spec"]["clusterIP"] == spec["clusterIP"]
    replaced = await kube.replace("v1", "services", "default", "s", service("s"))
    assert replaced["spec"]["clusterIP"] == spec["clusterIP"]
    other = await kube.create(service("t"))
    assert other["spec"]["clusterIP"] != spec["clusterIP"]


async def test_node_ports_are_allocated_kept_and_dropped_with_the_type(
        kube_emulator: EmulatedCluster) -> None:
    """NodePort and LoadBalancer Services get a node port (30000-32767) per port and
    ``externalTrafficPolicy: Cluster``; an update that leaves a node port out keeps it;
    switching the type to ClusterIP with the node ports untouched drops them
    (dropTypeDependentFields, Kubernetes 1.20+); a ClusterIP Service that names a node
    port is refused ("may not be used when `type` is 'ClusterIP'")."""
    kube = kube_emulator
    created = await kube.create(service("n", "NodePort"))
    node_port = created["spec"]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767
    assert created["spec"]["externalTrafficPolicy"] == "Cluster"
    kept = await kube.patch("v1", "services", "default", "n",
                            {"spec": {"ports": [{"name": "wyoming", "port": 10200}]}})
    assert kept["spec"]["ports"][0]["nodePort"] == node_port
    back = await kube.patch("v1", "services", "default", "n", {"spec": {"type": "ClusterIP"}})
    assert "nodePort" not in back["spec"]["ports"][0]
    assert "externalTrafficPolicy" not in back["spec"]
    with pytest.raises(KubeAPIError) as refused:
        await kube.create(service("bad", ports=[{"port": 1, "nodePort": 30500}]))
    assert refused.value.status == 422
    assert "spec.ports[0].nodePort: Forbidden" in refused.value.body["message"]


async def test_an_outage_answers_the_operators_requests_but_not_its_watches(
        kube_emulator: EmulatedCluster) -> None:
    """Failure injection: with ``outage`` set, the operator's token gets that status."""
    kube_emulator.emulator.outage = 500
    path = resource_path("v1", "configmaps", "default")
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {KUBECONFIG_TOKEN}"}
        async with session.get(kube_emulator.url + path, headers=headers) as answer:
            assert answer.status == 500
        async with session.get(kube_emulator.url + path, headers=headers,
                               params={"watch": "true", "timeoutSeconds": "1"}) as answer:
            assert answer.status == 200
    assert (await kube_emulator.list("v1", "configmaps", "default"))["items"] == []
    kube_emulator.emulator.outage = None


async def test_a_kind_is_served_only_while_its_crd_exists(kube_emulator: EmulatedCluster) -> None:
    """As an API server: no CRD, 404 for every verb; a CRD, the kind works; CRD deleted,
    its objects go and the kind answers 404 again."""
    api, plural = "monitoring.coreos.com/v1", "podmonitors"
    monitor = {"apiVersion": api, "kind": "PodMonitor",
               "metadata": {"name": "m", "namespace": "default"}, "spec": {}}
    path = resource_path(api, plural, "default")
    for method, where, body in (("GET", path, None), ("GET", f"{path}/m", None),
                                ("POST", path, monitor), ("DELETE", f"{path}/m", None)):
        status, _ = await kube_emulator.request(method, where, body=body)
        assert status == 404, (method, where)

    crd = await kube_emulator.create(POD_MONITOR_CRD)
    created = await kube_emulator.create(monitor, plural=plural)
    assert created["kind"] == "PodMonitor" and created["metadata"]["uid"]
    assert [o["metadata"]["name"] for o in (await kube_emulator.list(api, plural))["items"]] == [
        "m"]

    await kube_emulator.delete("apiextensions.k8s.io/v1", "customresourcedefinitions", None,
                               crd["metadata"]["name"])
    for method, where in (("GET", path), ("GET", f"{path}/m")):
        status, _ = await kube_emulator.request(method, where)
        assert status == 404, (method, where)
    status, _ = await kube_emulator.request("POST", path, body=monitor)
    assert status == 404
