"""Headers every answer gets at the edge: nosniff, Referrer-Policy, no-store where data or tokens travel, and CORS.

One pure ASGI middleware, outside the token check so 401s get them too. It appends header tuples made once at
import; only a request that sends Origin costs a policy decision (server/cors.py).
https://www.rfc-editor.org/rfc/rfc9111#section-5.2.2.5, https://fetch.spec.whatwg.org/#http-cors-protocol
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import cors
from server.answer_headers import SECURITY, Headers, carries_fhir_headers, route_path
from server.cors import AllowedOrigins

NO_STORE_OAUTH: Headers = ((b"cache-control", b"no-store"), (b"pragma", b"no-cache"))  # SMART: both on tokens
_OPEN: Headers = (*SECURITY, cors.ANY_ORIGIN)
_VARY: Headers = (cors.VARY_ORIGIN,)


def classify(path: str) -> tuple[Headers, Headers, int]:
    """The headers every answer on the path gets, those it gets unless it set its own Cache-Control, its CORS."""
    if path in cors.OPEN_PATHS:  # discovery, keys, the CapabilityStatement: no patient data, cacheable
        return _OPEN, (), cors.OPEN
    if carries_fhir_headers(path):  # built with nosniff, no-referrer and no-store (server/answer_headers.py)
        return (), (), cors.RESTRICTED
    if path.startswith("/auth/"):  # sign-in pages, tokens, introspection, launches
        return SECURITY, NO_STORE_OAUTH, cors.RESTRICTED if path in cors.CLIENT_PATHS else cors.NONE
    return SECURITY, (), cors.NONE


class EdgeMiddleware:
    """Adds the edge headers to every HTTP answer and answers CORS preflights itself (no token needed)."""

    def __init__(self, app: ASGIApp, origins: AllowedOrigins) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        extra, unless_cached, policy = classify(path)
        if policy != cors.NONE:
            origin = preflight = None
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value
                elif name == b"access-control-request-method":
                    preflight = value
            if origin is not None:
                allowed = policy == cors.OPEN or await self.origins.allows(
                    origin.decode("latin-1"), scope["app"].state.services.auth)
                if preflight is not None and scope["method"] == "OPTIONS":
                    await _preflight(send, path, policy, origin if allowed else None)
                    return
                if policy == cors.RESTRICTED:
                    extra = (*extra, *cors.allowed_response(origin)) if allowed else (*extra, *_VARY)
        if not extra and not unless_cached:  # a FHIR answer without Origin: built with its headers already
            await self.app(scope, receive, send)
            return

        # a plain function handing back send's awaitable: no coroutine of its own per message (a third of the
        # middleware's cost when it was an async def)
        def send_with_headers(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                added = extra
                if unless_cached:
                    for name, _ in headers:  # ASGI servers and Starlette send header names in lower case
                        if name == b"cache-control":
                            break
                    else:
                        added = (*extra, *unless_cached)
                message["headers"] = [*headers, *added]
            return send(message)

        await self.app(scope, receive, send_with_headers)


async def _preflight(send: Send, path: str, policy: int, origin: bytes | None) -> None:
    """204 with the permissions for an allowed origin; 403 without any for another (the browser then refuses)."""
    if origin is None:
        body = cors.REFUSED_FHIR if path.startswith("/fhir") else cors.REFUSED_OAUTH
        media = b"application/fhir+json" if path.startswith("/fhir") else b"application/json"
        headers = [(b"content-type", media), (b"content-length", str(len(body)).encode()), *SECURITY, *_VARY]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    granted = cors.OPEN_PREFLIGHT if policy == cors.OPEN else cors.restricted_preflight(origin)
    await send({"type": "http.response.start", "status": 204, "headers": [*SECURITY, *granted]})
    await send({"type": "http.response.body", "body": b""})
