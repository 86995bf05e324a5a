"""Instance-level interactions: read, vread, update, patch, delete, instance history.

https://hl7.org/fhir/R4B/http.html#read
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from resources.errors import Invalid
from resources.outcome import information
from server.context import if_match_version, is_pretty, read_body, services
from server.history import history_response
from server.openapi import BODY, ERRORS, RESOURCE_OK
from server.paths import ID, TYPE, VID, path_parameters
from server.render import resource_response, write_response
from server.responses import json_response
from server.routing import FhirRoute
from server.types import known_type

router = APIRouter(route_class=FhirRoute)


@router.get(f"/fhir/{TYPE}/{ID}", responses=RESOURCE_OK | ERRORS, summary="read",
            openapi_extra=path_parameters("type", "id"))
async def read(request: Request) -> Response:
    """Read the current version of a resource."""
    type, id = request.path_params["type"], request.path_params["id"]
    res = await services(request).repository.read(known_type(type), id)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and if_none_match.strip().removeprefix("W/").strip('"') == str(res.vid):
        return Response(status_code=304, headers={"ETag": f'W/"{res.vid}"'})
    return resource_response(request, res)


@router.get(f"/fhir/{TYPE}/{ID}/_history/{VID}", responses=RESOURCE_OK | ERRORS, summary="vread",
            openapi_extra=path_parameters("type", "id", "vid"))
async def vread(request: Request) -> Response:
    """Read one version of a resource."""
    type, id, vid = (request.path_params[k] for k in ("type", "id", "vid"))
    res = await services(request).repository.vread(known_type(type), id, vid)
    return resource_response(request, res)


@router.get(f"/fhir/{TYPE}/{ID}/_history", responses=RESOURCE_OK | ERRORS, summary="history-instance",
            openapi_extra=path_parameters("type", "id"))
async def instance_history(request: Request) -> Response:
    """The versions of one resource."""
    type, id = request.path_params["type"], request.path_params["id"]
    return await history_response(request, known_type(type), id)


@router.put(f"/fhir/{TYPE}/{ID}", responses=RESOURCE_OK | ERRORS, summary="update",
            openapi_extra=BODY | path_parameters("type", "id"))
async def update(request: Request) -> Response:
    """Update a resource, or create it with this id."""
    type, id = request.path_params["type"], request.path_params["id"]
    body = await read_body(request)
    outcome = await services(request).repository.update(known_type(type), id, body,
                                                         if_match=if_match_version(request))
    status = 201 if outcome.created else 200
    return write_response(request, outcome.resource, status, "Created" if outcome.created else "Updated")


@router.patch(f"/fhir/{TYPE}/{ID}", responses=RESOURCE_OK | ERRORS, summary="patch",
              openapi_extra=BODY | path_parameters("type", "id"))
async def patch(request: Request) -> Response:
    """Apply a JSON Patch to a resource."""
    type, id = request.path_params["type"], request.path_params["id"]
    body = await read_body(request, patch=True)
    outcome = await services(request).repository.patch(known_type(type), id, body,
                                                        if_match=if_match_version(request))
    return write_response(request, outcome.resource, 200, "Patched")


@router.delete(f"/fhir/{TYPE}/{ID}", responses=ERRORS, summary="delete", openapi_extra=path_parameters("type", "id"))
async def delete(request: Request) -> Response:
    """Delete a resource (history is kept)."""
    type, id = request.path_params["type"], request.path_params["id"]
    resource_type = known_type(type)
    if not id:
        raise Invalid("Delete needs an id", code="required")
    deleted = await services(request).repository.delete(resource_type, id, if_match=if_match_version(request))
    headers = {"ETag": f'W/"{deleted.vid}"'} if deleted else {}
    message = f"Deleted {resource_type}/{id}" if deleted else f"{resource_type}/{id} did not exist; nothing deleted"
    return json_response(information(message), 200, headers, pretty=is_pretty(request))
