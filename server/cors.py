"""CORS policy for browser SMART apps: which endpoints are open to any origin, which to allowed origins only.

Discovery, the JWKS and the CapabilityStatement are open to any origin; the token, introspection and revocation
endpoints and the FHIR API answer only the configured origins (default: the origins of the registered clients'
redirect URIs). Credentials mode is never granted: SMART apps send bearer tokens, not cookies.
https://hl7.org/fhir/smart-app-launch/app-launch.html, https://fetch.spec.whatwg.org/#http-cors-protocol
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from urllib.parse import urlsplit

import anyio.to_thread
import orjson

from server.auth.service import AuthService

OPEN, RESTRICTED, NONE = 0, 1, 2  # open to any origin; allowed origins only; no CORS (sign-in pages, launch, docs)
OPEN_PATHS = frozenset(("/fhir/metadata", "/fhir/.well-known/smart-configuration",
                        "/.well-known/oauth-authorization-server", "/auth/.well-known/oauth-authorization-server",
                        "/auth/jwks"))
CLIENT_PATHS = frozenset(("/auth/token", "/auth/introspect", "/auth/revoke"))

_ALLOW_HEADERS = (b"Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Exist, If-None-Match, "
                  b"If-Modified-Since, X-Request-Id")
_EXPOSE_HEADERS = b"ETag, Location, Content-Location, Last-Modified, X-Request-Id, WWW-Authenticate"
_MAX_AGE = b"600"  # seconds a browser may reuse a preflight (Chromium caps it at 7200)
VARY_ORIGIN = (b"vary", b"Origin")
ANY_ORIGIN = (b"access-control-allow-origin", b"*")
OPEN_PREFLIGHT = (ANY_ORIGIN, (b"access-control-allow-methods", b"GET, HEAD, OPTIONS"),
                  (b"access-control-allow-headers", _ALLOW_HEADERS), (b"access-control-max-age", _MAX_AGE))
_RESTRICTED_PREFLIGHT = ((b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
                         (b"access-control-allow-headers", _ALLOW_HEADERS), (b"access-control-max-age", _MAX_AGE),
                         VARY_ORIGIN)
_EXPOSE = ((b"access-control-expose-headers", _EXPOSE_HEADERS), VARY_ORIGIN)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# a refused preflight: a FHIR OperationOutcome on /fhir, an OAuth error elsewhere (it names no origin back)
_REFUSAL = "Cross-origin requests from this origin are not allowed; register the app's redirect URI or set " \
           "CARELOOP_CORS_ORIGINS"
REFUSED_FHIR = orjson.dumps({"resourceType": "OperationOutcome", "issue": [
    {"severity": "error", "code": "forbidden", "diagnostics": _REFUSAL}]})
REFUSED_OAUTH = orjson.dumps({"error": "access_denied", "error_description": _REFUSAL})


def origin_of(url: str) -> str | None:
    """The origin (scheme://host[:port], as browsers send it) of an http(s) URL; None for other schemes."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


def restricted_preflight(origin: bytes) -> list[tuple[bytes, bytes]]:
    """The headers that answer an allowed origin's preflight."""
    return [(b"access-control-allow-origin", origin), *_RESTRICTED_PREFLIGHT]


def allowed_response(origin: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """The headers that let an allowed origin read a response."""
    return ((b"access-control-allow-origin", origin), *_EXPOSE)


class AllowedOrigins:
    """The configured origins, or the registered clients' redirect-URI origins re-read every few seconds."""

    def __init__(self, configured: Iterable[str] | None, cache_seconds: float) -> None:
        self.configured = None if configured is None else frozenset(
            found for o in configured if (found := origin_of(o)) is not None)
        self.cache_seconds = cache_seconds
        self._origins: frozenset[str] = frozenset()
        self._read_at = float("-inf")

    async def allows(self, origin: str, auth: AuthService | None) -> bool:
        """True when `origin` (the Origin header as sent) may read restricted answers."""
        if self.configured is not None:
            return origin in self.configured
        if auth is None:
            return False
        if time.monotonic() - self._read_at > self.cache_seconds:
            # clients are added by the CLI from another process, so the list is read again after a while;
            # on a worker thread, as every SQLite read off the request path is
            clients = await anyio.to_thread.run_sync(auth.store.clients)
            self._origins = frozenset(found for c in clients for uri in c.redirect_uris
                                      if (found := origin_of(uri)) is not None)
            self._read_at = time.monotonic()
        return origin in self._origins
