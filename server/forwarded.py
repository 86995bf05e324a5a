"""Forwarded headers believed only from configured proxies: the client's address, the scheme and the visible base.

A pure ASGI middleware, installed only when CARELOOP_TRUSTED_PROXIES names a proxy: for a request whose TCP
peer is one of them, it rewrites scope["client"] and scope["scheme"] and leaves the FHIR base the proxy
advertises in the scope for the links. https://www.rfc-editor.org/rfc/rfc7239
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from starlette.types import ASGIApp, Receive, Scope, Send

FHIR_PREFIX = "/fhir"
VISIBLE_BASE = "careloop.visible_base"  # scope key: the FHIR base a trusted proxy's headers name
_NAMES = frozenset((b"host", b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                    b"x-forwarded-port", b"x-forwarded-prefix"))
_SCHEMES = frozenset(("http", "https"))
_DEFAULT_PORTS = {"http": "80", "https": "443"}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The configured proxy addresses and networks; ValueError for an entry that is neither."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries)
        self._known: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        found = self._known.get(host)
        if found is None:
            address = _address(host)
            found = address is not None and any(address in network for network in self.networks)
            if len(self._known) > 4096:  # peers are mostly the proxies themselves; bounded all the same
                self._known.clear()
            self._known[host] = found
        return found


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _node(value: str) -> str | None:
    """The address of an X-Forwarded-For entry or a Forwarded for= value, without quotes, brackets or port."""
    value = value.strip().strip('"')
    if value.startswith("["):  # "[2001:db8::1]:4711"
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # "192.0.2.1:8080"
        value = value.partition(":")[0]
    return str(address) if (address := _address(value)) is not None else None


def _forwarded_pairs(header: str) -> list[dict[str, str]]:
    """RFC 7239 elements, one dict of lower-cased parameter names each, in the order the proxies added them."""
    elements = []
    for element in header.split(","):
        pairs = {}
        for part in element.split(";"):
            key, _, value = part.strip().partition("=")
            pairs[key.strip().lower()] = value.strip().strip('"')
        elements.append(pairs)
    return elements


def _first(value: str | None) -> str | None:
    return value.split(",")[0].strip() if value else None


@lru_cache(maxsize=256)  # bounded: a deployment's proxies send a handful of combinations
def visible_base(scheme: str, host: str, forwarded: str | None, x_proto: str | None, x_host: str | None,
                 x_port: str | None, x_prefix: str | None) -> str:
    """The FHIR base a trusted proxy's headers name; X-Forwarded-* win over Forwarded, the first entry counts."""
    proto = fwd_host = None
    if forwarded:
        first = _forwarded_pairs(forwarded)[0]
        proto, fwd_host = first.get("proto"), first.get("host")
    proto, fwd_host = _first(x_proto or proto), _first(x_host or fwd_host)
    scheme = proto.lower() if proto and proto.lower() in _SCHEMES else scheme
    host = fwd_host or host
    port = _first(x_port)
    if port and port.isdigit() and not host.endswith("]") and ":" not in host.rpartition("]")[2]:
        host = host if _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    prefix = (x_prefix or "").rstrip("/")
    return f"{scheme}://{host}{prefix}{FHIR_PREFIX}"


class ForwardedMiddleware:
    """Believes Forwarded / X-Forwarded-* only when the TCP peer is a trusted proxy."""

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies
        self._clients: dict[tuple[str | None, str | None], str | None | bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and client and client[0] in self.proxies:
            self._apply(scope, client[0])
        await self.app(scope, receive, send)

    def _apply(self, scope: Scope, peer: str) -> None:
        found: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if name in _NAMES and name not in found:
                found[name] = value.decode("latin-1")
        forwarded = found.get(b"forwarded")
        scheme = scope.get("scheme", "http")
        scope[VISIBLE_BASE] = visible_base(scheme, found.get(b"host") or peer, forwarded,
                                           found.get(b"x-forwarded-proto"), found.get(b"x-forwarded-host"),
                                           found.get(b"x-forwarded-port"), found.get(b"x-forwarded-prefix"))
        scope["scheme"] = scope[VISIBLE_BASE].partition(":")[0]
        hops = found.get(b"x-forwarded-for")
        key = (hops, None) if hops else (None, forwarded)
        client = self._clients.get(key, False)
        if client is False:  # a client's address repeats on every request it makes: parsed once
            chain = hops.split(",") if hops else [e.get("for", "") for e in _forwarded_pairs(forwarded or "")]
            client = self._client(chain)
            if len(self._clients) > 4096:
                self._clients.clear()
            self._clients[key] = client
        if client is not None:
            scope["client"] = (client, 0)

    def _client(self, chain: list[str]) -> str | None:
        """The nearest address that is not a trusted proxy, walking back from the peer; None if one is unusable."""
        address = None
        for entry in reversed(chain):
            address = _node(entry)
            if address is None:  # "unknown", "_hidden" or garbage: the proxy's own address is the best we know
                return None
            if address not in self.proxies:
                return address
        return address  # every hop a trusted proxy: the farthest one
