"""The operator's credentials over TLS: every kubeconfig style and the in-cluster files.

The emulator serves HTTPS with a certificate of a test CA (``trustme``) and
authenticates like an API server; the operator's real ``login`` (the same function is
its kopf login handler) and ``KubeClient`` must reach an authenticated request with
each form a user may hand them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes.config.incluster_config
import pytest
import trustme
import yaml

from chorus.operator.cli import _check_cluster
from chorus.operator.handlers import build_registry, configure
from chorus.operator.kube import KubeClient, login
from chorus.operator.reconciler import OperatorConfig
from emulators.kube import KUBECONFIG_TOKEN, start_emulator
from tests.conftest import CHORUS, JOE
from tests.integration.operator_fixtures import operator_settings, running_operator

TTS = "tts.chorus.dev/v1alpha1"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(autouse=True)
def _no_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a pod, unless a test says otherwise."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_config(path: Path, url: str, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": url, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path


EXEC_PLUGIN = """\
import datetime, json, pathlib, sys
count = pathlib.Path(sys.argv[1])
n = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(n))
ttl = float(sys.argv[2]) if len(sys.argv) > 2 else 86400.0
expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=ttl)
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1",
                  "kind": "ExecCredential",
                  "status": {"token": f"exec-{n}",
                             "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}}))
"""


def styles(tmp: Path, ca: trustme.CA) -> dict[str, tuple[dict[str, Any], dict[str, Any], str]]:
    """Per style: the cluster entry, the user entry and the identity the emulator sees."""
    cert = ca.issue_cert("chorus-operator", common_name="chorus-operator")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "client.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "client.key"))
    (tmp / "token").write_text(KUBECONFIG_TOKEN + "\n")
    (tmp / "plugin.py").write_text(EXEC_PLUGIN)
    data = {"certificate-authority-data": b64(ca.cert_pem.bytes())}
    files = {"certificate-authority": "ca.pem"}  # relative to the kubeconfig's folder
    return {
        "data": (data, {"client-certificate-data": b64(cert.cert_chain_pems[0].bytes()),
                        "client-key-data": b64(cert.private_key_pem.bytes())},
                 "cert:chorus-operator"),
        "files": (files, {"client-certificate": "client.pem", "client-key": "client.key"},
                  "cert:chorus-operator"),
        "token": (data, {"token": KUBECONFIG_TOKEN}, f"token:{KUBECONFIG_TOKEN}"),
        "tokenFile": (files, {"tokenFile": str(tmp / "token")}, f"token:{KUBECONFIG_TOKEN}"),
        "exec": (data, {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                 "command": sys.executable,
                                 "args": [str(tmp / "plugin.py"), str(tmp / "count")]}},
                 "token:exec-1"),
    }


async def test_the_emulator_authenticates_like_an_api_server(ca: trustme.CA,
                                                             tmp_path: Path) -> None:
    """An API server with ``--anonymous-auth=false`` answers 401 Unauthorized (a Status)
    to a request without credentials or with an unknown bearer token, and accepts a
    client certificate signed by its ``--client-ca-file`` or a known token (Kubernetes
    docs, "Authenticating": X509 client certificates, static/bearer tokens, anonymous
    requests). A certificate of another CA fails the TLS handshake."""
    async with start_emulator(tmp_path / "kubeconfig", tls=ca) as (emulator, url, _):
        trusted = ssl.create_default_context()
        ca.configure_trust(trusted)
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"Authorization": "Bearer nobody"},
                            {"Authorization": f"Basic {KUBECONFIG_TOKEN}"}):
                async with session.get(url + "/api", ssl=trusted, headers=headers) as resp:
                    assert resp.status == 401
                    body = await resp.json()
                    assert (body["kind"], body["reason"], body["code"]) == (
                        "Status", "Unauthorized", 401)
            async with session.get(url + "/api", ssl=trusted, headers={
                    "Authorization": f"Bearer {KUBECONFIG_TOKEN}"}) as resp:
                assert resp.status == 200
            with_cert = ssl.create_default_context()
            ca.configure_trust(with_cert)
            ca.issue_cert("alice", common_name="alice").configure_cert(with_cert)
            async with session.get(url + "/api", ssl=with_cert) as resp:
                assert resp.status == 200
            stranger = ssl.create_default_context()
            ca.configure_trust(stranger)
            trustme.CA().issue_cert("mallory").configure_cert(stranger)
            with pytest.raises(aiohttp.ClientError):
                async with session.get(url + "/api", ssl=stranger) as resp:
                    await resp.read()
        assert emulator.authenticated == [f"token:{KUBECONFIG_TOKEN}", "cert:alice"]


@pytest.mark.parametrize("style", ["data", "files", "token", "tokenFile", "exec"])
async def test_each_kubeconfig_style_reaches_an_authenticated_request(
        style: str, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with start_emulator(tls=ca, tokens=[KUBECONFIG_TOKEN, "exec-1"]) as (
            emulator, url, _):
        cluster, user, identity = styles(tmp_path, ca)[style]
        monkeypatch.setenv("KUBECONFIG", str(write_config(tmp_path / "kc", url, cluster, user)))
        async with KubeClient(login()) as client:
            version = await client.request("GET", "/version")
            assert "gitVersion" in version
            assert await client.list("v1", "ConfigMap", "default") == []
        assert emulator.authenticated == [identity, identity]


async def test_an_exec_token_is_fetched_again_after_a_401(
        ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server stops accepting the plugin's first token (expired, revoked): the client
    logs in again, which runs the plugin again, and the request goes through."""
    async with start_emulator(tls=ca, tokens=["exec-1"]) as (emulator, url, _):
        cluster, user, _identity = styles(tmp_path, ca)["exec"]
        monkeypatch.setenv("KUBECONFIG", str(write_config(tmp_path / "kc", url, cluster, user)))
        async with KubeClient(login()) as client:
            await client.request("GET", "/api")
            emulator.accepted_tokens = frozenset({"exec-2"})
            await client.request("GET", "/api")
        first, second = (int(seen.removeprefix("token:exec-")) for seen in emulator.authenticated)
        assert second > first
        assert (tmp_path / "count").read_text() == "2"


async def test_an_exec_token_is_fetched_again_once_it_expires(
        ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token that expires in 13 s counts as expired 10 s early: after 3.5 s the next
    request runs the plugin again first, without a 401 in between. (The library itself
    reruns a plugin whose token expires within 5 minutes, so the numbers may skip.)"""
    tokens = [f"exec-{n}" for n in range(1, 10)]
    async with start_emulator(tls=ca, tokens=tokens) as (emulator, url, _):
        cluster, user, _identity = styles(tmp_path, ca)["exec"]
        user["exec"]["args"].append("13")
        monkeypatch.setenv("KUBECONFIG", str(write_config(tmp_path / "kc", url, cluster, user)))
        info = login()
        assert info.expiration is not None
        async with KubeClient(info) as client:
            await client.request("GET", "/api")
            await asyncio.sleep(3.5)
            await client.request("GET", "/api")
        first, second = (int(seen.removeprefix("token:exec-")) for seen in emulator.authenticated)
        assert second > first


async def test_in_cluster_service_account_files(
        ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod's token and ca.crt (the kubernetes library reads them from fixed paths, module
    constants that are patched here) with KUBERNETES_SERVICE_HOST/PORT; they win over a
    kubeconfig, as in a pod."""
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("pod-token")
    ca.cert_pem.write_to_path(str(sa / "ca.crt"))
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_TOKEN_FILENAME",
                        str(sa / "token"))
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_CERT_FILENAME",
                        str(sa / "ca.crt"))
    async with start_emulator(tls=ca, tokens=["pod-token"]) as (emulator, url, kubeconfig):
        host, port = url.removeprefix("https://").rsplit(":", 1)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        async with KubeClient(login()) as client:
            await client.request("GET", "/api")
        assert emulator.authenticated == ["token:pod-token"]


async def test_the_preflight_check_passes_with_good_credentials(
        ca: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> None:
    async with start_emulator(tls=ca) as (emulator, _url, kubeconfig):
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        await _check_cluster()
        assert emulator.authenticated == [f"token:{KUBECONFIG_TOKEN}"]


async def test_chorus_operator_exits_1_fast_on_a_wrong_ca(ca: trustme.CA,
                                                          tmp_path: Path) -> None:
    async with start_emulator(tls=ca) as (emulator, url, _):
        other = trustme.CA()
        kubeconfig = write_config(tmp_path / "kc", url,
                                  {"certificate-authority-data": b64(other.cert_pem.bytes())},
                                  {"token": KUBECONFIG_TOKEN})
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *CHORUS, "operator", "--liveness", "", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)})
        _out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        elapsed = time.monotonic() - started
        assert process.returncode == 1, err.decode()
        assert "cannot reach a cluster" in err.decode()
        assert "CERTIFICATE_VERIFY_FAILED" in err.decode()
        assert elapsed < 20, elapsed
        assert emulator.authenticated == []


async def test_the_operator_reconciles_a_service_over_tls(
        ca: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf (through the same login handler) watches and patches, and the operator's own
    client creates the children, all over TLS with the kubeconfig's token."""
    async with start_emulator(tls=ca) as (emulator, _url, kubeconfig):
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        async with KubeClient(login()) as client:
            await client.create({"apiVersion": TTS, "kind": "TTSVoice",
                                 "metadata": {"name": "joe", "namespace": "default"},
                                 "spec": {"voice": JOE, "source": {"huggingFace": {}}}})
            await client.create({"apiVersion": TTS, "kind": "TTSService",
                                 "metadata": {"name": "tls", "namespace": "default"},
                                 "spec": {"defaultVoice": JOE, "voices": {"names": ["joe"]}}})
            config = OperatorConfig(resync_interval=0.5, poll_timeout=1.0)
            async with running_operator(build_registry(config),
                                        settings=configure(operator_settings())):
                deadline = time.monotonic() + 15
                while not await client.list("apps/v1", "Deployment", "default"):
                    assert time.monotonic() < deadline, "no Deployment over TLS"
                    await asyncio.sleep(0.2)
                # the status patch goes through kopf's own client and the same login
                while ((await client.get(TTS, "TTSService", "default", "tls") or {})
                       .get("status", {}).get("observedGeneration") != 1):
                    assert time.monotonic() < deadline, "no status over TLS"
                    await asyncio.sleep(0.2)
        assert set(emulator.authenticated) == {f"token:{KUBECONFIG_TOKEN}"}
        assert len(emulator.authenticated) > 5  # kopf's lists and watches, our writes


class ConnectProxy:
    """An HTTP proxy that tunnels ``CONNECT host:port`` (RFC 9110 §9.3.6) and nothing
    else, as the corporate proxies behind a kubeconfig's ``proxy-url`` do for HTTPS."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            self.tunnels.append(target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(ConnectionError):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                dst.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def test_requests_go_through_the_kubeconfigs_proxy_url(
        ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``proxy-url`` in the cluster entry: HTTPS to the API server is tunnelled through
    that proxy (CONNECT), and with the proxy gone the request fails instead of going
    around it."""
    proxy = ConnectProxy()
    proxy_url = await proxy.start()
    async with start_emulator(tls=ca) as (emulator, url, _):
        cluster, user, identity = styles(tmp_path, ca)["token"]
        monkeypatch.setenv("KUBECONFIG", str(write_config(
            tmp_path / "kc", url, {**cluster, "proxy-url": proxy_url}, user)))
        info = login()
        assert info.proxy_url == proxy_url
        async with KubeClient(info) as client:
            assert "gitVersion" in await client.request("GET", "/version")
        assert proxy.tunnels == [url.removeprefix("https://")]
        assert emulator.authenticated == [identity]
        await proxy.close()
        async with KubeClient(login()) as client:
            with pytest.raises(aiohttp.ClientError):
                await client.request("GET", "/version")
        assert emulator.authenticated == [identity]
