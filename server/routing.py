"""FhirRoute: an APIRoute whose endpoint takes the Request and returns a Response, with no dependency solving.

FHIR endpoints read their own path, query and body (the FHIR rules for them differ from FastAPI's), so the
per-request dependency resolution would only cost time: about a third of a read by id. Nor do they use
dependencies with `yield`, so the route's ASGI app calls the endpoint and its response directly, without
the exit stacks FastAPI opens for those. The route still carries its OpenAPI description.
https://fastapi.tiangolo.com/advanced/custom-request-and-route/
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute, APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from server.answer_headers import with_fhir_headers


class FhirRoute(APIRoute):
    """Calls `endpoint(request)` directly, and turns away paths of another depth before matching them."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.slashes = path.count("/")
        # FastAPI's request_response opens two AsyncExitStacks a request (for dependencies with yield, which
        # no FHIR endpoint has) and catches exceptions that ExceptionMiddleware, with the same handlers,
        # catches anyway: 3 to 4 us of a 45 us read by id. A route given FastAPI's own body limit keeps its app.
        if getattr(self, "max_body_size", None) is None:
            self.app = self._respond

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive, send))
        await with_fhir_headers(scope, response)(scope, receive, send)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # The router tries its routes in turn, each through a regular expression and FastAPI's route context:
        # 2.7 us a route, 71 us to reach `$everything`, the 28th. No segment of a FHIR route can hold a "/"
        # (server/paths.py), so a path with another number of them cannot match. Under a root path the
        # route path is the request path less that prefix, and the full check runs.
        if scope["type"] == "http" and not scope.get("root_path") and scope["path"].count("/") != self.slashes:
            return Match.NONE, {}
        return super().matches(scope)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint

        async def handler(request: Request) -> Response:  # a route that kept FastAPI's own app
            return with_fhir_headers(request.scope, await endpoint(request))

        return handler


class DepthDispatch:
    """The router's entry: a request tries only the FHIR routes of its path's depth, in table order.

    https://www.starlette.io/routing/
    """

    # The router tries every route in turn until one matches: a search is the 11th route and `$everything`
    # the 28th, each miss a call and a check. A FHIR route of another depth never matches (FhirRoute.matches),
    # so each depth gets a router holding only its own FHIR routes and every other route, in the same order:
    # the first route to match, or to match the path but not the method (405), is the one the whole table
    # would have found. A path no route of its router matches goes on to the whole table, which answers
    # as before (404, or the trailing-slash redirect, whose target has another depth).

    def __init__(self, router: APIRouter) -> None:
        self._router = router
        self._whole: ASGIApp = router.app
        depths = {r.slashes for r in router.routes if isinstance(r, FhirRoute)}
        self._by_depth = {
            depth: APIRouter(routes=_depth_routes(router.routes, depth), redirect_slashes=False, default=self._whole)
            for depth in depths}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one request (or lifespan event)."""
        if scope["type"] == "http" and not scope.get("root_path"):
            narrowed = self._by_depth.get(scope["path"].count("/"))
            if narrowed is not None:
                scope.setdefault("router", self._router)  # as the whole table would set it
                await narrowed.app(scope, receive, send)
                return
        await self._whole(scope, receive, send)


def _depth_routes(routes: list[BaseRoute], depth: int) -> list[BaseRoute]:
    """The FHIR routes of one depth and every other route, those outside /fhir last.

    A route whose path starts with a fixed segment other than `fhir` (the API docs FastAPI adds first, the
    authorization server) cannot match a path under /fhir, nor a FHIR route one of its paths, so trying it
    after the FHIR routes finds the same route: a read by id no longer tries the three docs routes first.
    """
    mine = [r for r in routes if not isinstance(r, FhirRoute) or r.slashes == depth]
    outside = [r for r in mine if not isinstance(r, FhirRoute) and _outside_fhir(r)]
    return [r for r in mine if all(r is not o for o in outside)] + outside


def _outside_fhir(route: BaseRoute) -> bool:
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return False  # a mount or another kind of route keeps its place
    first = path.lstrip("/").split("/", 1)[0]
    return bool(first) and "{" not in first and first != "fhir"
