"""FhirRoute: an APIRoute whose endpoint takes the Request and returns a Response, with no dependency solving.

FHIR endpoints read their own path, query and body (the FHIR rules for them differ from FastAPI's), so the
per-request dependency resolution would only cost time: about a third of a read by id. The route still
carries its OpenAPI description. https://fastapi.tiangolo.com/advanced/custom-request-and-route/
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope


class FhirRoute(APIRoute):
    """Calls `endpoint(request)` directly, and turns away paths of another depth before matching them."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self._slashes = path.count("/")

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # The router tries its routes in turn, each through a regular expression and FastAPI's route context:
        # 2.7 us a route, 71 us to reach `$everything`, the 28th. No segment of a FHIR route can hold a "/"
        # (server/paths.py), so a path with another number of them cannot match. Under a root path the
        # route path is the request path less that prefix, and the full check runs.
        if scope["type"] == "http" and not scope.get("root_path") and scope["path"].count("/") != self._slashes:
            return Match.NONE, {}
        return super().matches(scope)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint
