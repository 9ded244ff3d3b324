"""The address a request really comes from, for the per-client limit.

Behind an Ingress or a reverse proxy every request arrives from the proxy, so the
per-client limit would count the whole user base as one client. A proxy names the
client in ``X-Forwarded-For`` (appending the address it received from); the header is
believed only when the peer is a configured trusted proxy (``--trusted-proxies``),
since anyone else can write anything there.

The list is read from the right, skipping trusted proxies: the first address that is
not one is the client, the leftmost entries being whatever the client itself claimed.
An entry that is not an IP address ends the walk at the hop that wrote it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["TrustedProxies"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack listener sees ::ffff:10.0.0.1
    return address


class TrustedProxies:
    """The configured proxy networks, and the client behind them."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)

    def trusts(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: Iterable[str] = ()) -> str:
        """The client's address: ``peer``, or from ``forwarded_for`` (the values of every
        ``X-Forwarded-For`` header, in order) when ``peer`` is a trusted proxy."""
        address = _address(peer) if peer else None
        if address is None or not self.trusts(address):
            return peer or "unknown"
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            nearer = _address(hop)
            if nearer is None:
                break
            address = nearer
            if not self.trusts(address):
                break
        return str(address)
