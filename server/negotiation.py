"""Content negotiation as a pure ASGI middleware: XML or unknown formats get a 406 OperationOutcome.

https://hl7.org/fhir/R4B/http.html#mime-type
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from resources.errors import FhirError
from server.answer_headers import with_fhir_headers
from server.errors import error_response
from server.responses import negotiate


class NegotiationMiddleware:
    """Checks Accept and _format before any route runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/fhir"):
            await self.app(scope, receive, send)
            return
        accept = None
        for key, value in scope["headers"]:
            if key == b"accept":
                accept = value.decode("latin-1")
                break
        fmt = None
        query = scope.get("query_string", b"")
        if b"_format" in query:
            fmt = dict(parse_qsl(query.decode("latin-1"))).get("_format")
        try:
            negotiate(accept, fmt)
        except FhirError as exc:
            await with_fhir_headers(scope, error_response(exc))(scope, receive, send)
            return
        await self.app(scope, receive, send)
