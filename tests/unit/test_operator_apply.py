"""``operator/apply.py``: the three-way patch, and what counts as unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chorus.operator.apply import is_subset, merge_patch_for
from tests.unit.operator_specs import (
    EMPTY,
    obj,
    render,
)

# --- is_subset -------------------------------------------------------------------------------


@pytest.mark.parametrize(("desired", "actual", "subset"), [
    ({"a": 1}, {"a": 1, "b": 2}, True),
    ({"a": 1, "b": 2}, {"a": 1}, False),
    ({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}, True),
    ({"a": {"b": 1}}, {"a": {"b": 2}}, False),
    ({"a": {"b": 1}}, {"a": "x"}, False),
    ([{"a": 1}], [{"a": 1, "z": 0}], True),
    ([{"a": 1}], [{"a": 1}, {"a": 2}], False),
    ([1, 2], [2, 1], False),
    ([1], {"0": 1}, False),
    (True, True, True),
    (True, 1, False),
    (1, True, False),
    (False, 0, False),
    (1, 1.0, True),
    (2, 2.5, False),
    ("1", 1, True),  # quantities the API echoes as strings
    ({"cpu": 2}, {"cpu": "2"}, True),
    (None, None, True),
    ("a", "b", False),
    ({}, {"anything": 1}, True),
])
def test_is_subset(desired: Any, actual: Any, subset: bool) -> None:
    assert is_subset(desired, actual) is subset


def test_rendered_objects_are_subsets_of_what_the_api_returns() -> None:
    children = render({"autoscaling": {"maxReplicas": 3}, **EMPTY})
    for child in children.values():
        if child is None:
            continue
        returned = json.loads(json.dumps(child))
        returned["metadata"].update({"uid": "u", "resourceVersion": "1", "generation": 1})
        returned["status"] = {}
        if child["kind"] == "Deployment":
            spec = returned["spec"]["template"]["spec"]
            for cont in spec["containers"] + spec["initContainers"]:
                cont.update({"terminationMessagePath": "/dev/termination-log",
                             "terminationMessagePolicy": "File"})
            spec.update({"restartPolicy": "Always", "dnsPolicy": "ClusterFirst"})
            returned["spec"]["replicas"] = 3  # the HPA's choice
        assert is_subset(child, returned), child["kind"]
    drifted = json.loads(json.dumps(obj(children, "deployment")))
    drifted["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    assert not is_subset(obj(children, "deployment"), drifted)


@pytest.mark.parametrize(("a", "b", "same"), [
    ("0.5", "500m", True), ("1Gi", "1024Mi", True), ("1e3", "1k", True), ("2", "2000m", True),
    ("1G", "1Gi", False), ("100m", "0.2", False), ("lots", "lots", True), ("lots", "x", False)])
def test_quantities_compare_by_value_under_requests_and_limits(a: str, b: str,
                                                                same: bool) -> None:
    assert is_subset({"limits": {"cpu": a}}, {"limits": {"cpu": b}}) is same
    assert is_subset({"image": "0.5"}, {"image": "500m"}) is False  # elsewhere: text


def test_three_way_patch_removes_only_what_the_last_render_had() -> None:
    last = {"spec": {"nodeSelector": {"disk": "ssd"}, "replicas": 1,
                     "containers": [{"name": "c", "resources": {"limits": {"memory": "1Gi"}}}]}}
    desired = {"spec": {"replicas": 1, "containers": [{"name": "c", "resources": {}}]}}
    live = {"spec": {"nodeSelector": {"disk": "ssd"}, "replicas": 1, "clusterIP": "10.0.0.1",
                     "containers": [{"name": "c", "terminationMessagePath": "/dev/x",
                                     "resources": {"limits": {"memory": "1024Mi"}}}]}}
    assert merge_patch_for(last, desired, live) == {"spec": {
        "nodeSelector": None, "containers": [{"name": "c", "resources": {}}]}}
    # nothing changed since the last render and live agrees (server defaults aside): no patch
    live_now = {"spec": {"replicas": 1, "clusterIP": "10.0.0.1", "containers": [
        {"name": "c", "terminationMessagePath": "/dev/x", "resources": {}}]}}
    assert merge_patch_for(desired, desired, live_now) is None
    # a hand edit is put back, and nothing but it is sent
    assert merge_patch_for(desired, desired, {"spec": {**live_now["spec"], "replicas": 5}}) == {
        "spec": {"replicas": 1}}
