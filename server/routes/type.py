"""Type-level interactions: search, create (conditional too), conditional update/patch/delete, history.

https://hl7.org/fhir/R4B/http.html#create
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response

from resources.errors import UnsupportedMediaType
from resources.outcome import information
from server.context import base_url, if_match_version, is_pretty, prefer_strict, query_pairs, read_body, services
from server.history import history_response
from server.openapi import BODY, ERRORS, FORM_BODY, RESOURCE_OK
from server.render import resource_response, write_response
from server.responses import bytes_response, json_response
from server.search import search_bundle
from server.types import known_type

router = APIRouter()
_RESULT_ONLY = ("_format", "_pretty", "_summary", "_elements")


def _criteria(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in query_pairs(request) if k not in _RESULT_ONLY]


@router.get("/fhir/{type}/_history", responses=RESOURCE_OK | ERRORS, summary="history-type")
async def type_history(request: Request, type: str) -> Response:
    """The versions of every resource of a type."""
    return await history_response(request, known_type(type), None)


@router.get("/fhir/{type}", responses=RESOURCE_OK | ERRORS, summary="search-type")
async def search(request: Request, type: str) -> Response:
    """Search a resource type."""
    svc = services(request)
    body = await search_bundle(svc, base_url(request), known_type(type), query_pairs(request),
                               strict=prefer_strict(request))
    return bytes_response(body, pretty=is_pretty(request))


@router.post("/fhir/{type}/_search", responses=RESOURCE_OK | ERRORS, openapi_extra=FORM_BODY,
             summary="search-type (POST)")
async def search_post(request: Request, type: str) -> Response:
    """Search with parameters in an x-www-form-urlencoded body (and the query string)."""
    resource_type = known_type(type)
    media = (request.headers.get("content-type") or "application/x-www-form-urlencoded").split(";")[0].strip()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(f"POST _search takes application/x-www-form-urlencoded, not '{media}'")
    form = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    body = await search_bundle(services(request), base_url(request), resource_type,
                               [*query_pairs(request), *form], strict=prefer_strict(request))
    return bytes_response(body, pretty=is_pretty(request))


@router.post("/fhir/{type}", responses=RESOURCE_OK | ERRORS, openapi_extra=BODY, summary="create")
async def create(request: Request, type: str) -> Response:
    """Create a resource; If-None-Exist (or criteria in the query string) makes it conditional."""
    resource_type = known_type(type)
    body = await read_body(request)
    header = request.headers.get("if-none-exist")
    criteria = parse_qsl(header, keep_blank_values=True) if header else _criteria(request)
    outcome = await services(request).repository.create(resource_type, body, if_none_exist=criteria)
    if not outcome.created:
        return resource_response(request, outcome.resource, 200)
    return write_response(request, outcome.resource, 201, f"Created {resource_type}/{outcome.resource.id}")


@router.put("/fhir/{type}", responses=RESOURCE_OK | ERRORS, openapi_extra=BODY, summary="conditional update")
async def conditional_update(request: Request, type: str) -> Response:
    """Update the single resource matching the query string (or create one)."""
    resource_type = known_type(type)
    body = await read_body(request)
    outcome = await services(request).repository.conditional_update(
        resource_type, _criteria(request), body, if_match=if_match_version(request))
    return write_response(request, outcome.resource, 201 if outcome.created else 200,
                          "Created" if outcome.created else "Updated")


@router.patch("/fhir/{type}", responses=RESOURCE_OK | ERRORS, openapi_extra=BODY, summary="conditional patch")
async def conditional_patch(request: Request, type: str) -> Response:
    """Patch the single resource matching the query string."""
    resource_type = known_type(type)
    body = await read_body(request, patch=True)
    outcome = await services(request).repository.conditional_patch(
        resource_type, _criteria(request), body, if_match=if_match_version(request))
    return write_response(request, outcome.resource, 200, "Patched")


@router.delete("/fhir/{type}", responses=ERRORS, summary="conditional delete")
async def conditional_delete(request: Request, type: str) -> Response:
    """Delete the single resource matching the query string."""
    resource_type = known_type(type)
    deleted = await services(request).repository.conditional_delete(resource_type, _criteria(request))
    message = f"Deleted {resource_type}/{deleted.id}" if deleted else "No resource matched; nothing deleted"
    return json_response(information(message), 200, pretty=is_pretty(request))
