"""Operation endpoints: `$name` at system, type and instance level, dispatched through the registry.

https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from operations.context import OperationCall, OperationContext
from operations.parameters import OperationInput
from operations.registry import find
from resources.guard import current_guard
from server.context import base_url, is_pretty, query_pairs, read_body, services
from server.openapi import ERRORS, PARAMETERS_BODY, RESOURCE_OK
from server.paths import ID, OP, TYPE, path_parameters
from server.responses import bytes_response, html_response, json_response, prefers_html
from server.routing import FhirRoute
from server.types import known_type

router = APIRouter(route_class=FhirRoute)


async def _invoke(request: Request, resource_type: str | None, id_: str | None, level: str) -> Response:
    name = request.path_params["op"]
    operation = find(name, resource_type, level, request.method)
    guard = current_guard()
    if guard is not None and resource_type is not None and not operation.own_access:
        guard.require(resource_type, "r")  # operations on terminology resources read them
    pairs = [(k, v) for k, v in query_pairs(request) if k not in ("_format", "_pretty")]
    if request.method == "POST":
        given = OperationInput.from_body(await read_body(request), pairs)
    else:
        given = OperationInput.from_query(pairs)
    operation.refuse_unknown(given)
    svc = services(request)
    context = OperationContext(svc.repository, svc.terminology, base_url(request), svc.subscriptions, svc.cohort,
                               svc.population, svc.consent_policy, svc.audit)
    result = await operation.handler(OperationCall(context, resource_type, id_, given))
    if operation.html is not None and isinstance(result, dict) and prefers_html(request.headers.get("accept")):
        return html_response(operation.html(result))
    if isinstance(result, bytes):
        return bytes_response(result, pretty=is_pretty(request))
    return json_response(result, 200, pretty=is_pretty(request))


async def system_operation(request: Request) -> Response:
    """A system-level operation."""
    return await _invoke(request, None, None, "system")


async def type_operation(request: Request) -> Response:
    """A type-level operation."""
    return await _invoke(request, known_type(request.path_params["type"]), None, "type")


async def instance_operation(request: Request) -> Response:
    """An instance-level operation."""
    return await _invoke(request, known_type(request.path_params["type"]), request.path_params["id"], "instance")


for _path, _endpoint, _names, _level in ((f"/fhir/{OP}", system_operation, ("op",), "system"),
                                         (f"/fhir/{TYPE}/{OP}", type_operation, ("type", "op"), "type"),
                                         (f"/fhir/{TYPE}/{ID}/{OP}", instance_operation, ("type", "id", "op"),
                                          "instance")):
    router.add_api_route(_path, _endpoint, methods=["GET"], responses=RESOURCE_OK | ERRORS,
                         summary=f"operation ({_level}, GET)", openapi_extra=path_parameters(*_names))
    router.add_api_route(_path, _endpoint, methods=["POST"], responses=RESOURCE_OK | ERRORS,
                         summary=f"operation ({_level}, POST with Parameters)",
                         openapi_extra=PARAMETERS_BODY | path_parameters(*_names))
