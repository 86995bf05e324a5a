"""$import inputs fetched by URL: only from allow-listed locations, under the rest-hook SSRF rules, onto disk.

A URL must start with one of the operator's allowed prefixes (CARELOOP_BULK_IMPORT_SOURCES) and its host must
resolve to addresses rest-hooks may reach (public, or a network the operator allows); the download connects to
the address it checked (no DNS rebinding) and follows no redirects. https://github.com/smart-on-fhir/bulk-import
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from resources.errors import Unprocessable
from subscriptions.endpoints import BlockedEndpoint, EndpointPolicy


def check_source(url: str, allowed: Sequence[str], policy: EndpointPolicy, where: str) -> None:
    """422 unless the URL starts with an allowed prefix and passes the rest-hook checks on its literal host."""
    if not any(url.startswith(prefix) for prefix in allowed):
        raise Unprocessable(f"{where} '{url}' is not at an allowed import location (CARELOOP_BULK_IMPORT_SOURCES)",
                            code="security", expression=(where,))
    policy.check_url(url, where)


def _pinned(url: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    parts = urlsplit(url)
    host = f"[{address}]" if address.version == 6 else str(address)
    return urlunsplit((parts.scheme, f"{host}:{parts.port}" if parts.port else host, parts.path or "/",
                       parts.query, ""))


async def download(url: str, target: Path, policy: EndpointPolicy, limit: int, timeout_s: float = 60.0) -> None:
    """Fetch the URL into target; Unprocessable when it is refused, fails, answers non-2xx or exceeds limit."""
    try:
        addresses = await policy.resolve(url)
    except BlockedEndpoint as exc:
        raise Unprocessable(f"Input '{url}' is refused: {exc}", code="security") from exc
    parts = urlsplit(url)
    headers = {"host": parts.netloc.rsplit("@", 1)[-1], "accept": "application/fhir+ndjson"}
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    size = 0
    handle = await asyncio.to_thread(target.open, "wb")
    try:
        async with httpx.AsyncClient(follow_redirects=False, timeout=timeout_s) as client, client.stream(
                "GET", _pinned(url, addresses[0]), headers=headers, extensions=extensions) as response:
            if not 200 <= response.status_code < 300:
                raise Unprocessable(f"Input '{url}' answered {response.status_code}", code="exception")
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise Unprocessable(f"Input '{url}' exceeds the import limit of {limit} bytes", code="too-long")
                await asyncio.to_thread(handle.write, chunk)
    except httpx.HTTPError as exc:
        raise Unprocessable(f"Input '{url}' could not be fetched: {type(exc).__name__}", code="exception") from exc
    finally:
        await asyncio.to_thread(handle.close)
