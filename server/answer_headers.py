"""The headers every FHIR answer carries, added where the answer is built (not by wrapping `send`).

`Cache-Control: no-store` (any FHIR answer may carry patient data, errors included), `X-Content-Type-Options:
nosniff` and `Referrer-Policy: no-referrer`. The FHIR routes, the error handlers, the token check and content
negotiation add them to what they answer, so the edge middleware (server/edge.py) lets a FHIR request without
an `Origin` pass straight through: wrapping every answer's `send` cost about 5% of a read by id at c=32.
https://www.rfc-editor.org/rfc/rfc9111#section-5.2.2.5
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Scope

Headers = tuple[tuple[bytes, bytes], ...]

# nosniff: a JSON answer is never run as a script or styled as CSS; no-referrer: the sign-in page's URL (client,
# state, redirect) is never sent on to the app it redirects to
SECURITY: Headers = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))
NO_STORE: Headers = ((b"cache-control", b"no-store"),)
FHIR: Headers = (*SECURITY, *NO_STORE)
# FHIR paths without patient data: cacheable, open to any origin; the edge middleware heads their answers
PUBLIC_FHIR_PATHS = frozenset(("/fhir/metadata", "/fhir/.well-known/smart-configuration"))


def route_path(scope: Scope) -> str:
    """The path as the routes see it (less the root path the app is mounted under)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def carries_fhir_headers(path: str) -> bool:
    """True for the FHIR paths whose answers are built with the FHIR headers (all but the public documents)."""
    return path.startswith("/fhir") and path not in PUBLIC_FHIR_PATHS


def with_fhir_headers(scope: Scope, response: Response) -> Response:
    """The response with the FHIR headers added when the request's path calls for them."""
    if carries_fhir_headers(route_path(scope)):
        response.raw_headers.extend(FHIR)
    return response
