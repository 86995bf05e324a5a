"""System-level interactions: capabilities, batch/transaction, system history.

https://hl7.org/fhir/R4B/http.html#capabilities
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from resources.search.query import SYSTEM
from server.bundle_exec import require_bundle, run_bundle
from server.capability import VERSION, capability_bytes
from server.context import base_url, configured_base, is_pretty, prefer_return, query_pairs, read_body, services
from server.history import history_response
from server.openapi import BODY, ERRORS, RESOURCE_OK
from server.responses import bytes_response
from server.routing import FhirRoute
from server.search import search_response

router = APIRouter(route_class=FhirRoute)


@router.get("/fhir/metadata", responses=RESOURCE_OK | ERRORS, summary="capabilities")
async def metadata(request: Request) -> Response:
    """The CapabilityStatement of this server (rebuilt when search parameters change)."""
    svc = services(request)
    registry = svc.repository.registry
    if svc.capability_version != registry.version:
        # the configured base, not the request's: the statement is kept for everyone, and its oauth-uris must
        # match discovery (a first request's Host header once named the token endpoint for all later callers)
        svc.capability = capability_bytes(registry, configured_base(svc.settings), VERSION, svc.auth is not None)
        svc.capability_version = registry.version
    return bytes_response(svc.capability, pretty=is_pretty(request))


@router.get("/fhir", responses=RESOURCE_OK | ERRORS, summary="search-system")
async def system_search(request: Request) -> Response:
    """Search across resource types (_type narrows them)."""
    return await search_response(request, SYSTEM, query_pairs(request))


@router.get("/fhir/_history", responses=RESOURCE_OK | ERRORS, summary="history-system")
async def system_history(request: Request) -> Response:
    """The versions of every resource."""
    return await history_response(request, None, None)


async def _bundle(request: Request) -> Response:
    body = await read_body(request)
    require_bundle(body)
    result = await run_bundle(services(request), base_url(request), body, prefer_return(request) != "minimal")
    return bytes_response(result, pretty=is_pretty(request))


@router.post("/fhir", responses=RESOURCE_OK | ERRORS, openapi_extra=BODY, summary="batch/transaction")
async def bundle(request: Request) -> Response:
    """Process a batch or transaction Bundle."""
    return await _bundle(request)


@router.post("/fhir/", responses=RESOURCE_OK | ERRORS, openapi_extra=BODY, include_in_schema=False)
async def bundle_slash(request: Request) -> Response:
    """Process a batch or transaction Bundle (trailing-slash form some clients send)."""
    return await _bundle(request)
