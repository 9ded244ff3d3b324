"""Zeroconf (mDNS) announcement of the Wyoming door, so Home Assistant discovers it.

Home Assistant's Wyoming integration browses ``_wyoming._tcp.local.`` and offers every
server it finds; wyoming-piper announces itself there with ``--zeroconf``. Chorus does
the same with the ``zeroconf`` library (the one the wyoming library's own helper uses),
announcing the address the Wyoming door listens on:

- bound to one address (``tcp://192.168.1.5:10200``, or ``127.0.0.1``): that address,
  announced on that interface only;
- bound to every address (``0.0.0.0``): the address this host uses to reach the mDNS
  group, announced on every interface.

A unix:// door has no address to announce and is refused at start. The announcement is
withdrawn (mDNS goodbye) at shutdown, before connections close, so Home Assistant does not
keep offering a server that is going away. Off by default: in Kubernetes, clients find the
Service through DNS, and multicast rarely leaves a pod network anyway.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from zeroconf import InterfaceChoice
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

__all__ = ["SERVICE_TYPE", "Announcement", "announce", "announced_address"]

_LOGGER = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."
_MDNS_GROUP = "224.0.0.251"


def _outward_address() -> str:
    """The local IPv4 address that traffic to the mDNS group leaves from (no packet sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((_MDNS_GROUP, 5353))
        return str(probe.getsockname()[0])


class Announcement:
    """A registered service; :meth:`withdraw` sends the goodbye and closes the socket."""

    def __init__(self, zeroconf: AsyncZeroconf, info: AsyncServiceInfo) -> None:
        self._zeroconf = zeroconf
        self.info = info

    async def withdraw(self) -> None:
        try:  # the call returns once queued; its result is the goodbye broadcast
            await (await self._zeroconf.async_unregister_service(self.info))
        finally:
            await self._zeroconf.async_close()
        _LOGGER.info("Zeroconf announcement of %s withdrawn", self.info.name)


def announced_address(wyoming_uri: str) -> tuple[str, int]:
    """The IPv4 address and port to announce for ``wyoming_uri``; ``0.0.0.0`` when the
    door listens on every address (raises ``ValueError`` when it has none to announce)."""
    parsed = urlparse(wyoming_uri)
    if parsed.scheme != "tcp" or parsed.hostname is None or parsed.port is None:
        raise ValueError(f"--zeroconf needs a tcp://HOST:PORT Wyoming URI, not {wyoming_uri!r}")
    host = parsed.hostname
    try:
        return str(ipaddress.IPv4Address(host)), parsed.port
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host), parsed.port
    except OSError as err:
        raise ValueError(f"--zeroconf: cannot announce {host!r}: {err}") from err


async def announce(name: str, wyoming_uri: str) -> Announcement:
    """Announce ``name`` for the Wyoming door at ``wyoming_uri`` (see
    :func:`announced_address` for what is announced). The zeroconf library is imported
    here: most servers never announce, and importing it costs every start ~13 ms."""
    from zeroconf import InterfaceChoice, IPVersion
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    bound, port = announced_address(wyoming_uri)
    if ipaddress.IPv4Address(bound).is_unspecified:
        address = _outward_address()
        interfaces: InterfaceChoice | list[str] = InterfaceChoice.All
    else:
        address = bound
        interfaces = [address]
    zeroconf = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    info = AsyncServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}",
                            addresses=[socket.inet_aton(address)], port=port,
                            server=f"{name}.local.")
    try:
        # a second server of the same name on the network: announced as "name (2)"
        # (the call returns once queued; its result is the announcement broadcast)
        await (await zeroconf.async_register_service(info, allow_name_change=True))
    except BaseException:
        await zeroconf.async_close()
        raise
    _LOGGER.info("Announced over zeroconf as %s at %s:%d", info.name, address, port)
    return Announcement(zeroconf, info)
