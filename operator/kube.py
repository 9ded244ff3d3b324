"""A small asyncio Kubernetes client for the operator's own reads and writes.

kopf brings the watches and status patches of the objects it handles, but its API
client is private; the operator also creates, patches and deletes children and lists
pods. The generated clients are large and choose patch content types by body shape in
ways that are easy to get wrong, and we need five verbs on plain dicts, so this is a
thin layer over aiohttp (already kopf's transport).

Credentials come from the official ``kubernetes`` client's config loaders (in a pod the
service account, elsewhere ``$KUBECONFIG``/``~/.kube/config``): they decode the
``*-data`` fields, read the file forms and ``tokenFile``, run ``exec`` credential
plugins and honour ``insecure-skip-tls-verify`` and ``proxy-url``. The same
:func:`login` is kopf's login handler, so kopf's watches and this client talk to the
same cluster as the same user, and both log in again after a 401 (an ``exec`` plugin
then runs again and hands out a fresh token).
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
from collections.abc import Mapping
from typing import Any, Self

import aiohttp
import kopf

__all__ = ["ApiError", "KubeClient", "login", "resource_path", "ssl_context"]

_LOGGER = logging.getLogger(__name__)

_PLURALS = {"ConfigMap": "configmaps", "PersistentVolumeClaim": "persistentvolumeclaims",
            "Service": "services", "Pod": "pods", "Deployment": "deployments",
            "HorizontalPodAutoscaler": "horizontalpodautoscalers",
            "PodDisruptionBudget": "poddisruptionbudgets", "TTSVoice": "ttsvoices",
            "TTSService": "ttsservices", "Secret": "secrets", "Event": "events",
            "PodMonitor": "podmonitors"}


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


def resource_path(api_version: str, kind: str, namespace: str | None,
                  name: str | None = None, subresource: str | None = None) -> str:
    """``/api/v1/namespaces/ns/configmaps/x`` and friends."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    plural = _PLURALS.get(kind, kind)
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def login(**_: Any) -> kopf.ConnectionInfo:
    """Credentials: the pod's service account, else ``$KUBECONFIG``/``~/.kube/config``.

    Registered as the operator's kopf login handler too. Each call loads the
    configuration afresh (a rotated service-account token, a new ``exec`` token).
    """
    from kubernetes import client, config
    from kubernetes.config import kube_config

    configuration = client.Configuration()
    expiration: datetime.datetime | None = None
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            # load_kube_config() would read $KUBECONFIG as it was at import and write
            # refreshed tokens back into the user's file; its loader is used directly to
            # avoid both and to learn an exec token's expiry.
            loader = kube_config._get_kube_config_loader(  # type: ignore[no-untyped-call]
                filename=os.environ.get("KUBECONFIG") or "~/.kube/config",
                persist_config=False)
            loader.load_and_set(configuration)
            expiration = getattr(loader, "expiry", None)
        except (config.ConfigException, OSError, ValueError, KeyError) as err:
            raise kopf.LoginError(f"no usable credentials: not in a pod, and the kubeconfig "
                                  f"($KUBECONFIG or ~/.kube/config) failed: {err}") from err
    header = (configuration.get_api_key_with_prefix("BearerToken")
              or configuration.get_api_key_with_prefix("authorization"))
    # a tokenFile often ends with a newline; client-go trims it, the library does not
    scheme, _space, token = header.strip().partition(" ") if header else ("", "", "")
    token = token.strip()
    if scheme and not token:  # a bare token without a scheme
        scheme, token = "Bearer", scheme
    return kopf.ConnectionInfo(
        server=configuration.host, ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None, password=configuration.password or None,
        scheme=scheme or None, token=token or None,
        certificate_path=configuration.cert_file, private_key_path=configuration.key_file,
        proxy_url=configuration.proxy or None, expiration=expiration)


def ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    """The TLS side of ``info``: its CA (or none, when insecure) and client certificate.

    The loaders hand every PEM over as a file (``*-data`` fields decoded into temporary
    files), so only the path forms occur here.
    """
    if not info.server.startswith("https"):
        return False
    if info.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(
            cafile=os.fsdecode(info.ca_path) if info.ca_path else None)
    if info.certificate_path:
        ctx.load_cert_chain(os.fsdecode(info.certificate_path),
                            os.fsdecode(info.private_key_path) if info.private_key_path
                            else None)
    return ctx


def _expired(expiration: datetime.datetime) -> bool:
    """Past the expiry (a naive time means UTC, as kopf reads it), with 10 s to spare."""
    if expiration.tzinfo is None:
        expiration = expiration.replace(tzinfo=datetime.UTC)
    return datetime.datetime.now(datetime.UTC) >= expiration - datetime.timedelta(seconds=10)


class KubeClient:
    """Create/get/patch/delete/list on plain dicts; logs in again after a 401 or once the
    credentials expire (an ``exec`` token's ``expirationTimestamp``)."""

    def __init__(self, info: kopf.ConnectionInfo | None = None, timeout: float = 30.0) -> None:
        self._info = info or login()
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                base_url=self._info.server.rstrip("/"), timeout=self._timeout,
                headers=self._info.as_http_headers(),
                connector=aiohttp.TCPConnector(ssl=ssl_context(self._info)))
        return self._session

    async def request(self, method: str, path: str, *, json: Any = None,
                      content_type: str = "application/json",
                      params: Mapping[str, str] | None = None) -> Any:
        if self._info.expiration is not None and _expired(self._info.expiration):
            _LOGGER.info("Credentials expired; logging in again")
            await self.close()
            self._info = login()
        for attempt in (1, 2):
            session = self._open()
            headers = {"Content-Type": content_type} if json is not None else {}
            async with session.request(method, path, json=json, headers=headers,
                                       params=params, proxy=self._info.proxy_url) as resp:
                if resp.status == 401 and attempt == 1:
                    _LOGGER.info("API answered 401; reading credentials again")
                    await self.close()
                    self._info = login()
                    continue
                body = await resp.json(content_type=None) if resp.content_length != 0 else {}
                if resp.status >= 400:
                    body = body if isinstance(body, dict) else {}
                    raise ApiError(resp.status, str(body.get("reason", resp.reason)),
                                   str(body.get("message", "")))
                return body
        raise AssertionError("unreachable")

    async def get(self, api_version: str, kind: str, namespace: str | None,
                  name: str) -> dict[str, Any] | None:
        """The object, or ``None`` when it does not exist."""
        try:
            obj: dict[str, Any] = await self.request(
                "GET", resource_path(api_version, kind, namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        return obj

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        result: dict[str, Any] = await self.request(
            "POST", resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace")),
            json=obj)
        return result

    async def patch(self, api_version: str, kind: str, namespace: str | None, name: str,
                    patch: Any, subresource: str | None = None) -> dict[str, Any]:
        """Merge patch (a dict) or JSON patch (a list)."""
        content_type = ("application/json-patch+json" if isinstance(patch, list)
                        else "application/merge-patch+json")
        result: dict[str, Any] = await self.request(
            "PATCH", resource_path(api_version, kind, namespace, name, subresource),
            json=patch, content_type=content_type)
        return result

    async def delete(self, api_version: str, kind: str, namespace: str | None,
                     name: str) -> bool:
        """Delete (background propagation); ``False`` when it was already gone."""
        try:
            await self.request("DELETE", resource_path(api_version, kind, namespace, name),
                               json={"kind": "DeleteOptions", "apiVersion": "v1",
                                     "propagationPolicy": "Background"})
        except ApiError as err:
            if err.status == 404:
                return False
            raise
        return True

    async def list(self, api_version: str, kind: str, namespace: str | None,
                   label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        body = await self.request("GET", resource_path(api_version, kind, namespace),
                                  params=params)
        return list(body.get("items") or [])
