"""Bulk Data $export: each type's matches streamed page by page from the stored bytes into an NDJSON file.

Every page is a search through the Repository (the caller's scopes and the patients' Consents narrow it inside
the store query, as for any search), read in keyset order (the cursor of the last row), so memory holds one
page whatever the size of the type. The stored canonical JSON is written as it is: no parse, no serialisation.
https://hl7.org/fhir/uv/bulkdata/STU2/export.html
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import IO, Any

from operations.bulk_jobs import BulkJob
from operations.context import OperationCall
from operations.export_request import ExportRequest
from resources.errors import FhirError, Forbidden, Invalid
from resources.guard import current_guard
from resources.repository import Repository
from resources.search.query import Filter, ReferenceValue, SearchQuery, TokenValue

PAGE = 1000
_CHUNK = 500  # Patient ids per query of a Group's members (SQLite bounds the parameters of one statement)


@dataclass(frozen=True)
class Scope:
    """Which resources a level exports: everything, the patients' compartments, or a Group's members'."""

    level: str  # system | patient | group
    members: tuple[str, ...] = ()


def exported_types(requested: bool, types: Collection[str]) -> list[str]:
    """The types the caller may search: a type named in _type and not granted is a 403, an implicit one is left out.

    https://hl7.org/fhir/uv/bulkdata/STU2/export.html#query-parameters
    """
    guard = current_guard()
    if guard is None:
        return list(types)
    kept = []
    for name in types:
        try:
            guard.require(name, "s")
        except Forbidden:
            if requested:
                raise
            continue
        kept.append(name)
    return kept


def _queries(base: SearchQuery, scope: Scope) -> list[SearchQuery]:
    if scope.level == "system":
        return [base]
    if base.resource_type == "Patient":
        if scope.level == "patient":
            return [base]
        return [replace(base, filters=(*base.filters, Filter("_id", "token", None, tuple(
            TokenValue(i) for i in scope.members[start:start + _CHUNK]))))
            for start in range(0, len(scope.members), _CHUNK)]
    if scope.level == "patient":  # in some patient's compartment
        return [replace(base, filters=(*base.filters, Filter("_compartment", "compartment", None, (), missing=False)))]
    if not scope.members:
        return []
    return [replace(base, filters=(*base.filters, Filter("_compartment", "compartment", None, tuple(
        ReferenceValue("Patient", i) for i in scope.members))))]


async def export(job: BulkJob, repository: Repository, request: ExportRequest, scope: Scope,
                 page: int = PAGE) -> None:
    """Write one NDJSON file per type with matches; the job's output lists them with their counts."""
    for number, name in enumerate(request.types, 1):
        path = job.folder / f"{name}.ndjson"
        count = 0
        handle: IO[bytes] | None = None
        # a page is written while the next one is read: the disk and the store's reader threads work together
        writing: asyncio.Task[int] | None = None
        try:
            for query in _queries(request.query(name, repository.registry), scope):
                cursor: int | None = None
                while True:
                    found = await repository.search(replace(query, count=page, cursor=cursor))
                    bodies = [r.body for r in found.resources if r.body]
                    if writing is not None:
                        await writing
                        writing = None
                    if bodies:
                        if handle is None:
                            handle = await asyncio.to_thread(path.open, "wb")
                        writing = asyncio.create_task(asyncio.to_thread(handle.write, b"\n".join(bodies) + b"\n"))
                        count += len(bodies)
                        job.progress = f"{name}: {count} resources (type {number} of {len(request.types)})"
                    if found.next_cursor is None:
                        break
                    cursor = int(found.next_cursor)
            if writing is not None:
                await writing
                writing = None
        except FhirError as exc:
            raise FhirError(f"Exporting {name} failed: {exc.issues[0].diagnostics}") from exc
        finally:
            if writing is not None:  # cancelled or failed mid-page: the write ends before the file closes
                await asyncio.gather(writing, return_exceptions=True)
            if handle is not None:
                await asyncio.to_thread(handle.close)
        if count:
            job.output.append({"type": name, "file": path.name, "count": count})


async def asynchronous_only(call: OperationCall) -> dict[str, Any]:
    """The registry's handler of $export and $import: served by the bulk routes only, never synchronously."""
    raise Invalid("Bulk operations run asynchronously: send 'Prefer: respond-async'", code="required")
