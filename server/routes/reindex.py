"""$reindex: start a reindex of stored resources and follow its progress (CareLoop operation).

Moves to operations/ with the operation registry. https://hl7.org/fhir/R4B/searchparameter.html
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from resources.errors import Invalid, NotFound
from resources.guard import current_guard
from resources.models import resource_types
from resources.reindex import ReindexJob
from resources.search.dates import format_instant
from server.context import base_url, is_pretty, services
from server.openapi import ACCEPTED, ERRORS, RESOURCE_OK
from server.responses import json_response
from server.routing import FhirRoute

router = APIRouter(route_class=FhirRoute)


def job_parameters(job: ReindexJob) -> dict[str, Any]:
    """A job's progress as a Parameters resource."""
    parts: list[dict[str, Any]] = [
        {"name": "job", "valueString": job.id}, {"name": "status", "valueCode": job.status},
        {"name": "processed", "valueInteger": job.processed}, {"name": "total", "valueInteger": job.total},
        {"name": "started", "valueInstant": format_instant(job.started_ms)},
        *({"name": "type", "valueCode": t} for t in job.types)]
    if job.finished_ms is not None:
        parts.append({"name": "finished", "valueInstant": format_instant(job.finished_ms)})
    if job.error:
        parts.append({"name": "error", "valueString": job.error})
    return {"resourceType": "Parameters", "parameter": parts}


@router.post("/fhir/$reindex", responses=ACCEPTED | ERRORS, summary="$reindex (start)", status_code=202)
async def start_reindex(request: Request) -> Response:
    """Start reindexing the types in `_type` (all types when absent); 202 with where to follow it."""
    raw = request.query_params.get("_type")
    types = [t.strip() for t in raw.split(",") if t.strip()] if raw else sorted(resource_types())
    unknown = [t for t in types if t not in resource_types()]
    if unknown:
        raise Invalid(f"_type names unknown resource types: {', '.join(unknown)}", code="value",
                      expression=("_type",))
    guard = current_guard()
    if guard is not None:
        for name in types:  # reindexing rewrites the index of every resource of the types
            guard.require(name, "u")
    job = services(request).reindexer.start(types)
    location = f"{base_url(request)}/$reindex?job={job.id}"
    return json_response(job_parameters(job), 202, {"Content-Location": location}, pretty=is_pretty(request))


@router.get("/fhir/$reindex", responses=RESOURCE_OK | ERRORS, summary="$reindex (progress)")
async def reindex_status(request: Request) -> Response:
    """The progress of a reindex job."""
    job = services(request).reindexer.jobs.get(request.query_params.get("job", ""))
    if job is None:
        raise NotFound("No such reindex job")
    return json_response(job_parameters(job), 200, pretty=is_pretty(request))
