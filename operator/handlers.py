"""kopf handlers: thin, each one fetches nothing itself and calls the reconciler.

Handlers are registered into a registry built per operator run (:func:`build_registry`),
so tests get a fresh one and the resync interval is a setting, not an import-time
constant. There are no delete handlers and so no finalizers: deleting a TTSService
leaves its children to Kubernetes' garbage collector (they carry owner references), and
an uninstalled operator never leaves objects stuck in deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import kopf

from .kube import ApiError, KubeClient, login
from .models import GROUP, VERSION
from .reconciler import InvalidSpecError, OperatorConfig, Reconciler, voice_fingerprint
from .render import MANAGED_BY, SERVICE_LABEL

__all__ = ["build_registry", "configure"]

_LOGGER = logging.getLogger(__name__)

_TRANSIENT = (aiohttp.ClientError, OSError, TimeoutError)


def configure(settings: kopf.OperatorSettings) -> kopf.OperatorSettings:
    """Where kopf keeps its state: our own annotations (the CRD status schemas are
    structural, so kopf's default ``status.kopf`` would be pruned), and only warnings and
    errors become Kubernetes events."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING
    return settings


async def _guard(what: str, call: Callable[[], Awaitable[Any]], *, permanent: bool) -> None:
    """Map failures onto kopf's retry semantics.

    Invalid spec: permanent for change handlers (retrying cannot help; the next edit
    triggers a new run). API/network trouble: temporary, retried with backoff; a 4xx
    from the API (quota, admission webhook, RBAC) waits longer, since only a change in
    the cluster can fix it.
    """
    try:
        await call()
    except InvalidSpecError as err:
        if permanent:
            raise kopf.PermanentError(str(err)) from None
    except ApiError as err:
        delay = 60 if 400 <= err.status < 500 and err.status not in (409, 429) else 10
        raise kopf.TemporaryError(f"{what}: {err}", delay=delay) from err
    except _TRANSIENT as err:
        raise kopf.TemporaryError(f"{what}: {err or type(err).__name__}", delay=10) from err


async def _retrying(what: str, call: Callable[[], Awaitable[Any]], patience: float) -> None:
    """Run ``call`` until it succeeds, retrying transient failures (5xx, network) with
    a short backoff for up to ``patience`` seconds (then the periodic resync takes over).

    kopf does not retry event handlers, and the event that failed will not come again:
    without this, a change made during a brief API outage would wait for the resync.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    delay = 0.25
    while True:
        try:
            await _guard(what, call, permanent=False)
            return
        except kopf.TemporaryError as err:
            cause = err.__cause__
            transient = not isinstance(cause, ApiError) or cause.status >= 500 or (
                cause.status in (409, 429))
            if not transient or loop.time() + delay > deadline:
                raise
            _LOGGER.info("%s; retrying in %.2f s", err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _namespaced(namespace: str | None) -> str:
    """Every resource handled here is namespaced; kopf types allow cluster scope too."""
    if namespace is None:
        raise kopf.PermanentError("expected a namespaced object")
    return namespace


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """Every handler of ``chorus operator``, bound to ``config``."""
    registry = kopf.OperatorRegistry()
    state: dict[str, Any] = {}
    fingerprints: dict[tuple[str, str], str] = {}

    def reconciler() -> Reconciler:
        rec: Reconciler = state["reconciler"]
        return rec

    kopf.on.login(id="login", registry=registry)(login)

    @kopf.on.startup(id="start", registry=registry)
    async def startup(**_: Any) -> None:
        rec = Reconciler(KubeClient(), config)
        state["reconciler"] = rec
        state["resync"] = asyncio.create_task(_resync_forever(rec, config.resync_interval))

    @kopf.on.cleanup(id="stop", registry=registry)
    async def cleanup(**_: Any) -> None:
        task = state.pop("resync", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        rec = state.pop("reconciler", None)
        if rec is not None:
            await rec.client.close()

    @kopf.on.resume(GROUP, VERSION, "ttsservices", id="reconcile", registry=registry)
    @kopf.on.create(GROUP, VERSION, "ttsservices", id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, "ttsservices", id="reconcile", registry=registry)
    async def service_changed(namespace: str | None, name: str, **_: Any) -> None:
        namespace = _namespaced(namespace)
        await _guard(f"TTSService {namespace}/{name}",
                     lambda: reconciler().sync_service(namespace, name), permanent=True)

    @kopf.on.event(GROUP, VERSION, "ttsvoices", id="voice-changed", registry=registry)
    async def voice_event(type: str, namespace: str | None, name: str, body: kopf.Body,
                          **_: Any) -> None:
        namespace = _namespaced(namespace)
        rec = reconciler()
        key = (namespace, name)
        fingerprint = None if type == "DELETED" else voice_fingerprint(dict(body))
        if fingerprint is not None and fingerprints.get(key) == fingerprint:
            await _guard(f"TTSVoice {namespace}/{name}",
                         lambda: rec.sync_voice(namespace, name), permanent=False)
            return  # a status-only change (often our own): nothing to re-render
        # Forget the old fingerprint first and remember the new one only once the
        # resync went through: a failed run must not make kopf's retry (or the next
        # event) look like a status-only change.
        fingerprints.pop(key, None)

        async def resync() -> None:
            for service in await rec.services_affected_by(namespace, name):
                with contextlib.suppress(InvalidSpecError):
                    await rec.sync_service(namespace, service)
            if fingerprint is not None:
                await rec.sync_voice(namespace, name)
                fingerprints[key] = fingerprint

        await _retrying(f"TTSVoice {namespace}/{name}", resync, config.resync_interval)

    @kopf.on.event(GROUP, VERSION, "ttsservices", id="service-deleted", registry=registry)
    async def service_event(type: str, namespace: str | None, name: str, **_: Any) -> None:
        """A deleted TTSService leaves the operator's memory and its voices' status."""
        if type != "DELETED":
            return
        namespace = _namespaced(namespace)
        rec = reconciler()

        async def forget() -> None:
            for voice in rec.forget_service(namespace, name):
                await rec.sync_voice(namespace, voice)

        await _guard(f"TTSService {namespace}/{name}", forget, permanent=False)

    @kopf.on.event("apps", "v1", "deployments", id="deployment-changed", registry=registry,
                   labels={"app.kubernetes.io/managed-by": MANAGED_BY, SERVICE_LABEL: kopf.PRESENT})
    async def deployment_event(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
        """Readiness changes and hand edits of a Deployment: re-check its TTSService."""
        namespace = _namespaced(namespace)
        service = str(labels[SERVICE_LABEL])
        await _guard(f"TTSService {namespace}/{service}",
                     lambda: reconciler().sync_service(namespace, service, poll=True),
                     permanent=False)

    @kopf.on.probe(id="reconciler", registry=registry)
    def probe(**_: Any) -> bool:
        task = state.get("resync")
        return task is not None and not task.done()

    return registry


async def _resync_forever(rec: Reconciler, interval: float) -> None:
    """Level-based safety net: re-apply every service and poll its pods periodically.

    This restores deleted or hand-edited ConfigMaps, claims, Services, HPAs and PDBs
    (only Deployments are watched directly) and refreshes voice status.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            await rec.resync_all()
        except asyncio.CancelledError:
            raise
        except (ApiError, *_TRANSIENT) as err:
            _LOGGER.warning("periodic resync failed: %s", err)
