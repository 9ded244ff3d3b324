"""Fixtures and helpers for tests against the Kubernetes API emulator (``emulators.kube``).

Load it in a test module with::

    pytest_plugins = ["tests.integration.operator_fixtures"]

and take the ``kube_emulator`` fixture: an :class:`EmulatedCluster` with ``.url``,
``.kubeconfig``, ``.emulator`` and async helpers that talk real HTTP to the emulator, the same
wire kopf uses.  :func:`running_operator` runs a kopf operator in the test's event loop.

PYTEST_DONT_REWRITE: the module has no asserts, and a test module that imports helpers from
it before pytest loads it as a plugin would otherwise get a PytestAssertRewriteWarning.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest

from emulators.kube import (
    JSON_PATCH,
    MERGE_PATCH,
    ChorusKubeEmulator,
    resource_path,
    start_emulator,
)


class KubeAPIError(Exception):
    """A non-2xx answer of the API; ``.status`` and the Kubernetes ``Status`` in ``.body``."""

    def __init__(self, status: int, body: Any) -> None:
        reason = body.get("reason") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status = status
        self.body = body


@dataclass
class EmulatedCluster:
    """A running emulator and an HTTP client for it (the ``kube_emulator`` fixture).

    ``api_version`` is ``"v1"`` for the core group, else ``"group/version"``;
    ``namespace=None`` addresses cluster-scoped objects or, for lists, all namespaces.
    """

    emulator: ChorusKubeEmulator
    url: str
    kubeconfig: Path
    session: aiohttp.ClientSession

    async def request(self, method: str, path: str, *, body: Any = None,
                      content_type: str = "application/json",
                      params: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """Any call; returns (HTTP status, decoded JSON body) and never raises on a status."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self.session.request(method, self.url + path, data=data, headers=headers,
                                        params=params) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if raw else None

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        status, body = await self.request(method, path, **kwargs)
        if status >= 300:
            raise KubeAPIError(status, body)
        result: dict[str, Any] = body
        return result

    def plural_of(self, api_version: str, kind: str) -> str:
        """The plural name of a kind, from the declared resources."""
        for resource in self.emulator.resources:
            declared = f"{resource.group}/{resource.version}" if resource.group else "v1"
            info = self.emulator.resources[resource]
            if declared == api_version and info.kind == kind and resource.plural:
                return resource.plural
        raise LookupError(f"no resource declared for {api_version} {kind}")

    async def create(self, obj: Mapping[str, Any], *, plural: str | None = None) -> dict[str, Any]:
        """POST an object: ``apiVersion`` and ``kind`` required, ``metadata.namespace`` too
        for namespaced kinds."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        namespace = obj.get("metadata", {}).get("namespace")
        path = resource_path(api_version, plural or self.plural_of(api_version, kind), namespace)
        return await self._call("POST", path, body=dict(obj))

    async def get(self, api_version: str, plural: str, namespace: str | None,
                  name: str) -> dict[str, Any]:
        return await self._call("GET", resource_path(api_version, plural, namespace, name))

    async def list(self, api_version: str, plural: str, namespace: str | None = None, *,
                   label_selector: str | None = None,
                   field_selector: str | None = None) -> dict[str, Any]:
        """The whole list response (``items``, ``metadata.resourceVersion``)."""
        params = {key: value for key, value in (("labelSelector", label_selector),
                                                ("fieldSelector", field_selector)) if value}
        return await self._call("GET", resource_path(api_version, plural, namespace),
                                params=params)

    async def patch(self, api_version: str, plural: str, namespace: str | None, name: str,
                    patch: Any, *, subresource: str | None = None,
                    content_type: str = MERGE_PATCH) -> dict[str, Any]:
        """A merge patch by default; pass a list and ``content_type=JSON_PATCH`` for RFC 6902."""
        path = resource_path(api_version, plural, namespace, name, subresource)
        return await self._call("PATCH", path, body=patch, content_type=content_type)

    async def json_patch(self, api_version: str, plural: str, namespace: str | None, name: str,
                         ops: builtins.list[dict[str, Any]], *,
                         subresource: str | None = None) -> dict[str, Any]:
        return await self.patch(api_version, plural, namespace, name, ops,
                                subresource=subresource, content_type=JSON_PATCH)

    async def replace(self, api_version: str, plural: str, namespace: str | None, name: str,
                      obj: Mapping[str, Any], *, subresource: str | None = None) -> dict[str, Any]:
        """PUT: the body replaces the object (a ``metadata.resourceVersion`` must be current)."""
        path = resource_path(api_version, plural, namespace, name, subresource)
        return await self._call("PUT", path, body=dict(obj))

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str, *,
                     propagation_policy: str | None = None) -> dict[str, Any]:
        options = {"propagationPolicy": propagation_policy} if propagation_policy else None
        return await self._call("DELETE", resource_path(api_version, plural, namespace, name),
                                body=options)

    async def exists(self, api_version: str, plural: str, namespace: str | None,
                     name: str) -> bool:
        status, _ = await self.request("GET", resource_path(api_version, plural, namespace,
                                                            name))
        return status == 200

    async def wait_for(self, api_version: str, plural: str, namespace: str | None, name: str,
                       predicate: Callable[[dict[str, Any] | None], bool], *,
                       within: float = 5.0) -> dict[str, Any] | None:
        """Poll an object (``None`` while absent) until ``predicate`` holds; its last state."""
        deadline = time.monotonic() + within
        while True:
            status, body = await self.request(
                "GET", resource_path(api_version, plural, namespace, name))
            obj: dict[str, Any] | None = body if status == 200 else None
            if predicate(obj):
                return obj
            if time.monotonic() > deadline:
                raise TimeoutError(f"{plural}/{name} never matched; last seen: {obj}")
            await asyncio.sleep(0.05)

    async def watch(self, api_version: str, plural: str, namespace: str | None = None, *,
                    resource_version: str | None = None, timeout_seconds: float | None = None,
                    **params: str) -> AsyncIterator[dict[str, Any]]:
        """The watch events (dicts with ``type`` and ``object``) until the server ends the stream
        (after ``timeout_seconds``, the server-side limit)."""
        query = dict(params, watch="true")
        if resource_version is not None:
            query["resourceVersion"] = resource_version
        if timeout_seconds is not None:
            query["timeoutSeconds"] = str(timeout_seconds)
        path = resource_path(api_version, plural, namespace)
        async with self.session.get(self.url + path, params=query) as response:
            if response.status != 200:
                raise KubeAPIError(response.status, await response.json(content_type=None))
            async for line in response.content:
                if line.strip():
                    event: dict[str, Any] = json.loads(line)
                    yield event


POD_MONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "podmonitors.monitoring.coreos.com"},
    "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
             "names": {"kind": "PodMonitor", "listKind": "PodMonitorList",
                       "plural": "podmonitors", "singular": "podmonitor",
                       "shortNames": ["pmon"], "categories": ["prometheus-operator"]},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object",
                                     "x-kubernetes-preserve-unknown-fields": True}}}]}}
"""The Prometheus Operator's PodMonitor CRD as far as the API server's routing goes (its
schema is the Prometheus Operator's; what the operator renders is checked in the unit
tests): creating it in the emulator is "installing the Prometheus Operator"."""


@pytest.fixture
async def kube_emulator(tmp_path: Path) -> AsyncIterator[EmulatedCluster]:
    """A fresh emulator on 127.0.0.1 with the resources declared and a kubeconfig for it."""
    # No keep-alive: kopf.operator() treats every task created while it runs as its own and, on
    # exit, waits 5 s for them and then cancels them -- the emulator's server-side task of an
    # idle keep-alive connection included. Connections that close after each call leave none.
    connector = aiohttp.TCPConnector(force_close=True)
    async with (start_emulator(tmp_path / "kubeconfig") as (emulator, url, kubeconfig),
                aiohttp.ClientSession(connector=connector) as session):
        yield EmulatedCluster(emulator, url, kubeconfig, session)


def operator_settings(*, prefix: str = "tts.chorus.dev") -> kopf.OperatorSettings:
    """kopf settings for tests: state in annotations under ``prefix``, quick shutdown."""
    settings = kopf.OperatorSettings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=prefix)
    settings.persistence.finalizer = f"{prefix}/finalizer"
    settings.posting.enabled = True  # k8s events (kopf.info() & co.) go to v1/events
    # ... and so do the log lines of handlers and of kopf itself, those that pass the level of
    # the "kopf.objects" logger (WARNING unless the test configures logging).
    settings.posting.loggers = True
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 10  # the emulator ends watches after it; kopf resumes
    settings.watching.client_timeout = 15
    settings.watching.connect_timeout = 2
    settings.networking.request_timeout = 5
    settings.networking.error_backoffs = [0.1, 0.2, 0.5]
    settings.queueing.idle_timeout = 1
    settings.queueing.exit_timeout = 1
    settings.background.cancellation_polling = 0.1
    # kopf SIGKILLs its own thread (here: pytest's) when an operator that failed does not
    # exit within this time; a failing operator must fail its test, not kill the run.
    settings.process.ultimate_exiting_timeout = None
    return settings


def login_handler(url: str) -> Callable[..., kopf.ConnectionInfo]:
    """A ``kopf.on.login`` handler for the emulator (plain HTTP, dummy token)."""

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True, scheme="Bearer", token="x",  # noqa: S106
                                   default_namespace="default")
    return login


@contextlib.asynccontextmanager
async def running_operator(registry: kopf.OperatorRegistry, *,
                           settings: kopf.OperatorSettings | None = None,
                           startup_timeout: float = 5.0,
                           graceful_timeout: float = 1.0,
                           shutdown_timeout: float = 5.0) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``kopf.operator`` cluster-wide and standalone in this event loop; stop it on exit.

    The registry must hold a ``kopf.on.login`` handler (e.g. ``login_handler(url)`` or
    ``kopf.login_with_kubeconfig`` with ``KUBECONFIG`` set).  Yields once kopf is ready.

    On exit the stop-flag is set; kopf normally finishes within milliseconds.  But a timer or
    daemon that a still-running worker (re)spawns after kopf's daemon killer has gone is left
    for kopf's "hung tasks" sweep, which waits 5 s; so after ``graceful_timeout`` the operator
    task is cancelled, which kopf handles by cancelling its sub-tasks at once.
    """
    stop_flag: asyncio.Event = asyncio.Event()
    ready_flag: asyncio.Event = asyncio.Event()
    task = asyncio.create_task(kopf.operator(
        registry=registry, settings=settings or operator_settings(), clusterwide=True,
        standalone=True, stop_flag=stop_flag, ready_flag=ready_flag), name="kopf operator")
    try:
        waiter = asyncio.create_task(ready_flag.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=startup_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        await _settle(waiter)
        if task in done:
            task.result()  # re-raises why the operator exited
            raise RuntimeError("the operator exited at start-up")
        if not done:
            raise TimeoutError(f"the operator was not ready in {startup_timeout} s")
        yield task
    finally:
        stop_flag.set()
        await asyncio.wait({task}, timeout=graceful_timeout)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=shutdown_timeout)
        if not task.done():
            raise TimeoutError(f"the operator did not stop in {shutdown_timeout} s")
        if not task.cancelled():
            task.result()  # re-raises what the operator failed with, if it did


async def _settle(awaitable: Awaitable[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await awaitable


__all__ = [
    "EmulatedCluster",
    "KubeAPIError",
    "kube_emulator",
    "login_handler",
    "operator_settings",
    "running_operator",
]
