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
from server.render import resource_response, write_response
from server.responses import json_response
from server.types import known_type

router = APIRouter()


@router.get("/fhir/{type}/{id}", responses=RESOURCE_OK | ERRORS, summary="read")
async def read(request: Request, type: str, id: str) -> Response:
    """Read the current version of a resource."""
    res = await services(request).repository.read(known_type(type), id)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and if_none_match.strip().removeprefix("W/").strip('"') == str(res.vid):
        return Response(status_code=304, headers={"ETag": f'W/"{res.vid}"'})
    return resource_response(request, res)


@router.get("/fhir/{type}/{id}/_history/{vid}", responses=RESOURCE_OK | ERRORS, summary="vread")
async def vread(request: Request, type: str, id: str, vid: str) -> Response:
    """Read one version of a resource."""
    res = await services(request).repository.vread(known_type(type), id, vid)
    return resource_response(request, res)


@router.get("/fhir/{type}/{id}/_history", responses=RESOURCE_OK | ERRORS, summary="history-instance")
async def instance_history(request: Request, type: str, id: str) -> Response:
    """The versions of one resource."""
    return await history_response(request, known_type(type), id)


@router.put("/fhir/{type}/{id}", responses=RESOURCE_OK | ERRORS, openapi_extra=BODY, summary="update")
async def update(request: Request, type: str, id: str) -> Response:
    """Update a resource, or create it with this id."""
    body = await read_body(request)
    outcome = await services(request).repository.update(known_type(type), id, body,
                                                         if_match=if_match_version(request))
    status = 201 if outcome.created else 200
    return write_response(request, outcome.resource, status, "Created" if outcome.created else "Updated")


@router.patch("/fhir/{type}/{id}", responses=RESOURCE_OK | ERRORS, openapi_extra=BODY, summary="patch")
async def patch(request: Request, type: str, id: str) -> Response:
    """Apply a JSON Patch to a resource."""
    body = await read_body(request, patch=True)
    outcome = await services(request).repository.patch(known_type(type), id, body,
                                                        if_match=if_match_version(request))
    return write_response(request, outcome.resource, 200, "Patched")


@router.delete("/fhir/{type}/{id}", responses=ERRORS, summary="delete")
async def delete(request: Request, type: str, id: str) -> Response:
    """Delete a resource (history is kept)."""
    resource_type = known_type(type)
    if not id:
        raise Invalid("Delete needs an id", code="required")
    deleted = await services(request).repository.delete(resource_type, id, if_match=if_match_version(request))
    headers = {"ETag": f'W/"{deleted.vid}"'} if deleted else {}
    message = f"Deleted {resource_type}/{id}" if deleted else f"{resource_type}/{id} did not exist; nothing deleted"
    return json_response(information(message), 200, headers, pretty=is_pretty(request))
