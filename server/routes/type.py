"""Type-level interactions: search, create (conditional too), conditional update/patch/delete, history.

https://hl7.org/fhir/R4B/http.html#create
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response

from resources.errors import UnsupportedMediaType
from resources.outcome import information
from server.context import (
    if_match_version,
    is_pretty,
    query_pairs,
    read_body,
    read_raw,
    services,
)
from server.history import history_response
from server.openapi import BODY, ERRORS, FORM_BODY, RESOURCE_OK
from server.paths import TYPE, path_parameters
from server.render import resource_response, write_response
from server.responses import json_response
from server.routing import FhirRoute
from server.search import search_response
from server.types import known_type

router = APIRouter(route_class=FhirRoute)
_RESULT_ONLY = ("_format", "_pretty", "_summary", "_elements")


def _criteria(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in query_pairs(request) if k not in _RESULT_ONLY]


@router.get(f"/fhir/{TYPE}/_history", responses=RESOURCE_OK | ERRORS, summary="history-type",
            openapi_extra=path_parameters("type"))
async def type_history(request: Request) -> Response:
    """The versions of every resource of a type."""
    type = request.path_params["type"]
    return await history_response(request, known_type(type), None)


@router.get(f"/fhir/{TYPE}", responses=RESOURCE_OK | ERRORS, summary="search-type",
            openapi_extra=path_parameters("type"))
async def search(request: Request) -> Response:
    """Search a resource type."""
    return await search_response(request, known_type(request.path_params["type"]), query_pairs(request))


@router.post(f"/fhir/{TYPE}/_search", responses=RESOURCE_OK | ERRORS, summary="search-type (POST)",
             openapi_extra=FORM_BODY | path_parameters("type"))
async def search_post(request: Request) -> Response:
    """Search with parameters in an x-www-form-urlencoded body (and the query string)."""
    resource_type = known_type(request.path_params["type"])
    media = (request.headers.get("content-type") or "application/x-www-form-urlencoded").split(";")[0].strip()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(f"POST _search takes application/x-www-form-urlencoded, not '{media}'")
    form = parse_qsl((await read_raw(request)).decode("utf-8", "replace"), keep_blank_values=True)
    return await search_response(request, resource_type, [*query_pairs(request), *form])


@router.post(f"/fhir/{TYPE}", responses=RESOURCE_OK | ERRORS, summary="create",
             openapi_extra=BODY | path_parameters("type"))
async def create(request: Request) -> Response:
    """Create a resource; If-None-Exist (or criteria in the query string) makes it conditional."""
    type = request.path_params["type"]
    resource_type = known_type(type)
    body = await read_body(request)
    header = request.headers.get("if-none-exist")
    criteria = parse_qsl(header, keep_blank_values=True) if header else _criteria(request)
    outcome = await services(request).repository.create(resource_type, body, if_none_exist=criteria)
    if not outcome.created:
        return resource_response(request, outcome.resource, 200)
    return write_response(request, outcome.resource, 201, f"Created {resource_type}/{outcome.resource.id}")


@router.put(f"/fhir/{TYPE}", responses=RESOURCE_OK | ERRORS, summary="conditional update",
            openapi_extra=BODY | path_parameters("type"))
async def conditional_update(request: Request) -> Response:
    """Update the single resource matching the query string (or create one)."""
    type = request.path_params["type"]
    resource_type = known_type(type)
    body = await read_body(request)
    outcome = await services(request).repository.conditional_update(
        resource_type, _criteria(request), body, if_match=if_match_version(request))
    return write_response(request, outcome.resource, 201 if outcome.created else 200,
                          "Created" if outcome.created else "Updated")


@router.patch(f"/fhir/{TYPE}", responses=RESOURCE_OK | ERRORS, summary="conditional patch",
              openapi_extra=BODY | path_parameters("type"))
async def conditional_patch(request: Request) -> Response:
    """Patch the single resource matching the query string."""
    type = request.path_params["type"]
    resource_type = known_type(type)
    body = await read_body(request, patch=True)
    outcome = await services(request).repository.conditional_patch(
        resource_type, _criteria(request), body, if_match=if_match_version(request))
    return write_response(request, outcome.resource, 200, "Patched")


@router.delete(f"/fhir/{TYPE}", responses=ERRORS, summary="conditional delete",
               openapi_extra=path_parameters("type"))
async def conditional_delete(request: Request) -> Response:
    """Delete the single resource matching the query string."""
    type = request.path_params["type"]
    resource_type = known_type(type)
    deleted = await services(request).repository.conditional_delete(resource_type, _criteria(request))
    message = f"Deleted {resource_type}/{deleted.id}" if deleted else "No resource matched; nothing deleted"
    return json_response(information(message), 200, pretty=is_pretty(request))
