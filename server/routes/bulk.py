"""Bulk data endpoints: $export and $import kick-off, the job status URL (poll, cancel) and the job's files.

The work itself is in operations/ (export.py, import_ndjson.py, bulk_jobs.py); this is the async request pattern
over HTTP. https://hl7.org/fhir/uv/bulkdata/STU2/export.html
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from email.utils import formatdate
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from consent.access import Access
from operations.bulk_jobs import BulkJob, BulkJobs
from operations.export import Scope, export, exported_types
from operations.export_request import parse_export
from operations.groups import group_members
from operations.import_fetch import check_source, download
from operations.import_ndjson import Importer
from operations.parameters import OperationInput
from resources.errors import Forbidden, Invalid, NotFound, TooLarge, UnsupportedMediaType
from resources.models import resource_types
from resources.search.index import load_patient_compartment
from server.context import Services, access_of, base_url, query_pairs, read_body, services
from server.openapi import ERRORS, RESOURCE_OK
from server.paths import ID
from server.responses import json_response
from server.routing import FhirRoute
from subscriptions.endpoints import EndpointPolicy

router = APIRouter(route_class=FhirRoute)
NDJSON = ("application/fhir+ndjson", "application/ndjson", "application/x-ndjson")
RETRY_AFTER_S = 2


def _bulk(request: Request) -> BulkJobs:
    jobs: BulkJobs | None = services(request).bulk
    assert jobs is not None
    return jobs


def _require_backend(access: Access, what: str) -> None:
    # bulk data is for backend services (SMART backend services, system/ scopes): not for a patient or a user
    if access.unrestricted:
        return
    if access.patient is not None or access.fhir_user is not None or not any(
            s.context == "system" for s in access.scopes):
        raise Forbidden(f"{what} is for backend clients with system/ scopes (SMART backend services)",
                        code="forbidden")


def _require_async(request: Request) -> None:
    prefers = [p.strip().lower() for p in request.headers.get("prefer", "").split(",")]
    if "respond-async" not in prefers:
        raise Invalid("Bulk operations run asynchronously: send 'Prefer: respond-async'", code="required")


def _accepted(request: Request, job: BulkJob, what: str) -> Response:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational",
                                                              "diagnostics": f"{what} started: poll the status URL"}]}
    return json_response(outcome, 202, {"Content-Location": f"{base_url(request)}/bulk-status/{job.id}"})


async def _kick_off_export(request: Request, level: str, group_id: str | None = None) -> Response:
    access = access_of(request)
    _require_backend(access, "$export")
    _require_async(request)
    pairs = [(k, v) for k, v in query_pairs(request) if k not in ("_format", "_pretty")]
    given = OperationInput.from_body(await read_body(request), pairs) if request.method == "POST" else \
        OperationInput.from_query(pairs)
    svc = services(request)
    repo = svc.repository
    allowed = sorted(resource_types()) if level == "system" else sorted({"Patient", *load_patient_compartment()})
    wanted = parse_export(given, allowed, repo.registry, repo.search_limits)
    types = exported_types(bool(given.texts("_type")), wanted.types)
    members = tuple(await group_members(repo, group_id)) if group_id is not None else ()
    plan = replace(wanted, types=tuple(types))
    scope = Scope(level, members)
    jobs = _bulk(request)
    job = await jobs.create("export", access.client_id, str(request.url))
    jobs.start(job, lambda j: export(j, repo, plan, scope))
    return _accepted(request, job, "$export")


@router.get("/fhir/$export", responses=RESOURCE_OK | ERRORS, summary="$export (system, kick-off)")
async def system_export(request: Request) -> Response:
    """Export every resource the caller may search."""
    return await _kick_off_export(request, "system")


@router.get("/fhir/Patient/$export", responses=RESOURCE_OK | ERRORS, summary="$export (all patients, kick-off)")
async def patient_export(request: Request) -> Response:
    """Export the patients and their compartments."""
    return await _kick_off_export(request, "patient")


@router.get(f"/fhir/Group/{ID}/$export", responses=RESOURCE_OK | ERRORS, summary="$export (a Group, kick-off)")
async def group_export(request: Request) -> Response:
    """Export a Group's members and their compartments."""
    return await _kick_off_export(request, "group", request.path_params["id"])


for _route in list(router.routes):  # the same kick-offs by POST (parameters in a Parameters body)
    router.add_api_route(_route.path, _route.endpoint, methods=["POST"],  # type: ignore[attr-defined]
                         responses=RESOURCE_OK | ERRORS, summary=_route.summary + " (POST)")  # type: ignore


async def _upload(request: Request, target: Path, limit: int) -> None:
    size = 0
    handle = await asyncio.to_thread(target.open, "wb")
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"The upload exceeds the import limit of {limit} bytes")
            await asyncio.to_thread(handle.write, chunk)
    finally:
        await asyncio.to_thread(handle.close)


def _inputs(body: Any, svc: Services) -> list[tuple[str, str | None]]:
    given = OperationInput.from_body(body)
    fmt = given.text("inputFormat")
    if fmt is not None and fmt not in ("application/fhir+ndjson", "application/ndjson", "ndjson"):
        raise Invalid(f"inputFormat '{fmt}' is not supported: use application/fhir+ndjson", code="not-supported",
                      expression=("inputFormat",))
    policy = EndpointPolicy.of(svc.settings.subscription_allowed_networks)
    found: list[tuple[str, str | None]] = []
    for index, part in enumerate(p for p in given.parts if p["name"] == "input"):
        where = f"input[{index}].url"
        sub = {p.get("name"): p for p in part.get("part") or [] if isinstance(p, dict)}
        url = next((v for k, v in (sub.get("url") or {}).items() if k.startswith("value")), None)
        kind = next((v for k, v in (sub.get("type") or {}).items() if k.startswith("value")), None)
        if not isinstance(url, str) or not url:
            raise Invalid(f"{where} is required", code="required", expression=(where,))
        if kind is not None and kind not in resource_types():
            raise Invalid(f"input[{index}].type '{kind}' is not a resource type", code="value",
                          expression=(f"input[{index}].type",))
        check_source(url, svc.settings.bulk_import_sources, policy, where)
        found.append((url, kind))
    if not found:
        raise Invalid("$import needs at least one input (type and url), or an NDJSON body", code="required",
                      expression=("input",))
    return found


@router.post("/fhir/$import", responses=RESOURCE_OK | ERRORS, summary="$import (kick-off)")
async def import_kick_off(request: Request) -> Response:
    """Load NDJSON: the request body itself, or the input files a Parameters body names (fetched)."""
    access = access_of(request)
    _require_backend(access, "$import")
    _require_async(request)
    svc = services(request)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    inputs: list[tuple[str, str | None]] = []
    if media not in NDJSON:
        if media not in ("application/fhir+json", "application/json", ""):
            raise UnsupportedMediaType(f"$import takes an NDJSON body (application/fhir+ndjson) or a Parameters "
                                       f"resource naming input files, not '{media}'")
        inputs = _inputs(await read_body(request), svc)
    jobs = _bulk(request)
    job = await jobs.create("import", access.client_id, str(request.url))
    limit = svc.settings.bulk_import_max_bytes
    if not inputs:
        try:
            await _upload(request, job.folder / "upload.ndjson", limit)
        except TooLarge:
            await jobs.cancel(job.id, job.owner)
            raise
    importer = Importer(job, svc.repository, base_url(request))
    policy = EndpointPolicy.of(svc.settings.subscription_allowed_networks)

    async def work(running: BulkJob) -> None:
        files: list[tuple[Path, str, str | None]] = []
        if not inputs:
            files.append((running.folder / "upload.ndjson", "upload", None))
        for index, (url, kind) in enumerate(inputs):
            running.progress = f"fetching {url}"
            target = running.folder / f"input-{index}.ndjson"
            await download(url, target, policy, limit)
            files.append((target, url, kind))
        await importer.run(files)

    jobs.start(job, work)
    return _accepted(request, job, "$import")


def _file_url(request: Request, job: BulkJob, name: str) -> str:
    return f"{base_url(request)}/bulk-files/{job.id}/{name}"


def _manifest(request: Request, job: BulkJob) -> dict[str, Any]:
    out = [{"type": o["type"], **({"url": _file_url(request, job, o["file"])} if "file" in o else {}),
            "count": o["count"]} for o in job.output]
    errors = [{"type": e["type"], "url": _file_url(request, job, e["file"]), "count": e["count"]} for e in job.error]
    return {"transactionTime": job.transaction_time, "request": job.request, "requiresAccessToken": True,
            "output": out, "error": errors}


@router.get(f"/fhir/bulk-status/{ID}", responses=RESOURCE_OK | ERRORS, summary="bulk job status")
async def job_status(request: Request) -> Response:
    """202 with progress while running, the manifest when done, the job's error when it failed."""
    jobs = _bulk(request)
    job = jobs.get(request.path_params["id"], access_of(request).client_id)
    if job.status == "running":
        return json_response({"resourceType": "OperationOutcome", "issue": [
            {"severity": "information", "code": "informational", "diagnostics": job.progress}]}, 202,
            {"Retry-After": str(RETRY_AFTER_S), "X-Progress": job.progress})
    if job.failure is not None:
        raise job.failure
    expires = jobs.expires(job)
    headers = {"Expires": formatdate(expires, usegmt=True)} if expires is not None else {}
    return json_response(_manifest(request, job), 200, headers)


@router.delete(f"/fhir/bulk-status/{ID}", responses=RESOURCE_OK | ERRORS, summary="bulk job cancel")
async def job_cancel(request: Request) -> Response:
    """Cancel the job and remove its files."""
    await _bulk(request).cancel(request.path_params["id"], access_of(request).client_id)
    return json_response({"resourceType": "OperationOutcome", "issue": [
        {"severity": "information", "code": "informational", "diagnostics": "The job is cancelled and its files "
                                                                               "removed"}]}, 202)


@router.get(f"/fhir/bulk-files/{ID}/{{name:fhirid}}", responses=ERRORS, summary="bulk job file (NDJSON)")
async def job_file(request: Request) -> Response:
    """One file of a finished job, for the client that started it."""
    job = _bulk(request).get(request.path_params["id"], access_of(request).client_id)
    name = request.path_params["name"]
    names = {o.get("file") for o in job.output} | {e.get("file") for e in job.error}
    if job.status != "done" or name not in names:
        raise NotFound(f"No file '{name}' in bulk job '{job.id}'", code="not-found")
    return FileResponse(job.folder / name, media_type="application/fhir+ndjson")
