"""Reading the voice managers' reports: the operator polls each pod's status port.

Why polling and not the sidecar patching status itself: the pods then need no API
credentials at all (their service-account token is not even mounted), and the pod
that serves an unauthenticated Wyoming port is the last place to keep a token that can
write cluster objects. The cost is that the operator must reach pod IPs on the status
port (a NetworkPolicy must allow it) and status lags by at most one poll interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from chorus.common.voice_status import VolumeStatus

from .render import STATUS_PORT_NAME
from .status import PodReport

__all__ = ["poll_pods", "status_url"]


def status_url(pod: Mapping[str, Any]) -> str | None:
    """``http://<podIP>:<port>/status`` of a running pod's voice manager, if it has one."""
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if status.get("phase") != "Running" or not ip:
        return None
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == STATUS_PORT_NAME:
                host = f"[{ip}]" if ":" in ip else ip
                return f"http://{host}:{port['containerPort']}/status"
    return None


async def _poll(session: aiohttp.ClientSession, name: str, url: str) -> PodReport:
    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                return PodReport(name, error=f"status port answered {resp.status}")
            return PodReport(name, VolumeStatus.from_json(await resp.read()))
    except (aiohttp.ClientError, TimeoutError) as err:
        return PodReport(name, error=f"status port unreachable: {err or type(err).__name__}")
    except ValueError as err:
        return PodReport(name, error=f"unreadable status: {err}")


async def poll_pods(pods: Iterable[Mapping[str, Any]],
                    wait_s: float = 3.0) -> list[PodReport]:
    """One report per running pod (unreadable ones carry the reason)."""
    targets = [(str((p.get("metadata") or {}).get("name")), url) for p in pods
               if (url := status_url(p)) is not None]
    if not targets:
        return []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait_s)) as session:
        return list(await asyncio.gather(*(_poll(session, n, u) for n, u in targets)))
