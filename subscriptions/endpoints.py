"""Where rest-hooks may be sent: public http(s) addresses only, unless the operator allows a network.

A notification endpoint chosen by a client must not reach the server's own network (cloud metadata, the
database, loopback). The check runs on the literal address at create and on every resolved address at
delivery, so a name that later resolves to a private address (DNS rebinding) is still refused.
https://owasp.org/www-community/attacks/Server_Side_Request_Forgery
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from resources.errors import Unprocessable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedEndpoint(Exception):
    """The endpoint resolves to an address notifications may not be sent to."""


def _public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class EndpointPolicy:
    """Public addresses plus the networks the operator allows (e.g. 10.0.0.0/8 for an in-house receiver)."""

    allowed: tuple[Network, ...] = ()

    @classmethod
    def of(cls, networks: list[str] | tuple[str, ...]) -> EndpointPolicy:
        """A policy from CIDR strings."""
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def permits(self, address: Address) -> bool:
        """True when notifications may go to this address."""
        return _public(address) or any(address in net for net in self.allowed)

    def check_url(self, url: str, where: str) -> None:
        """422 for an endpoint that is not an absolute http(s) URL or names a refused address literally."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Unprocessable(f"{where} must be an absolute http or https URL, not '{url}'",
                                code="business-rule", expression=(where,))
        if parts.username or parts.password:
            raise Unprocessable(f"{where} must not carry credentials in the URL: use channel.header",
                                code="business-rule", expression=(where,))
        host = parts.hostname
        try:
            literal: Address | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is None and host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
                ".localhost"):
            literal = ipaddress.ip_address("127.0.0.1")
        if literal is not None and not self.permits(literal):
            raise Unprocessable(f"{where} '{url}' points at a private, loopback or link-local address; "
                                f"notifications are only sent to public addresses unless the server's setting "
                                f"CARELOOP_SUBSCRIPTION_ALLOWED_NETWORKS lists the network (e.g. "
                                f"'[\"{_network_of(literal)}\"]')", code="business-rule",
                                expression=(where,))

    async def resolve(self, url: str) -> list[Address]:
        """Every address the endpoint's host resolves to now; BlockedEndpoint when any is refused."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise BlockedEndpoint(f"{host} does not resolve ({exc.strerror})") from exc
        addresses: list[Address] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if not self.permits(address):
                raise BlockedEndpoint(f"{host} resolves to {address}, which notifications may not reach")
            addresses.append(address)
        return addresses


def _network_of(address: Address) -> str:
    """The address as a one-address network: an example value of the setting that would allow it."""
    single = (address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None) or address
    return f"{single}/{single.max_prefixlen}"
