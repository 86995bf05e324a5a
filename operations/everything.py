"""Patient/$everything: the patient and every resource in their compartment that the caller may see.

The record is one search across the compartment's types with the compartment filter, through the
Repository, so the caller's scopes apply like any search; a caller whose scopes differ by type (a patient
or granular scope) gets one narrowed search per type instead, and types it cannot search are left out.
https://hl7.org/fhir/R4B/patient-operation-everything.html
"""

from __future__ import annotations

from functools import cache

from operations.context import OperationCall
from resources.bundles import searchset_entries
from resources.errors import Forbidden, Invalid
from resources.repository import APPEND_ONLY, Repository
from resources.search.dates import date_range
from resources.search.index import load_patient_compartment
from resources.search.query import SYSTEM, Filter, RangeValue, ReferenceValue, SearchQuery
from resources.store.protocol import entry

LIMIT = 10_000  # resources in one answer; a record larger than this is refused rather than cut silently


@cache
def _compartment_types() -> tuple[str, ...]:
    # the audit trail is about who saw the record, not part of it: it is read with AuditEvent?patient= (auditors)
    return tuple(sorted(t for t in load_patient_compartment() if t != "Patient" and t not in APPEND_ONLY))


async def _record(repository: Repository, patient_id: str, types: tuple[str, ...],
                  filters: tuple[Filter, ...]) -> list[tuple[bytes, bytes]]:
    """The compartment's resources of these types, as (type/id, body).

    One search across the types when the caller's scopes reach all of them; otherwise one search per type
    that holds something of the patient's, each narrowed by its own scopes (types the caller may not search
    are left out).
    """
    try:
        return await repository.entries(SearchQuery(SYSTEM, filters, count=LIMIT + 1, types=types))
    except Forbidden:
        pass
    found: list[tuple[bytes, bytes]] = []
    present = set(await repository.store.compartment_types(patient_id))
    for resource_type in (t for t in types if t in present):
        try:
            page = await repository.search(SearchQuery(resource_type, filters, count=LIMIT + 1))
        except Forbidden:
            continue
        found.extend(entry(r) for r in page.resources)
    return found


async def run(call: OperationCall) -> bytes:
    """A searchset Bundle of the patient's record."""
    assert call.id is not None
    repository = call.context.repository
    patient = await repository.read("Patient", call.id)
    given = call.input
    wanted = {t.strip() for t in (given.text("_type") or "").split(",") if t.strip()}
    since = given.text("_since")
    filters: list[Filter] = [Filter("_compartment", "compartment", None, (ReferenceValue("Patient", call.id),))]
    if since is not None:
        found = date_range(since)
        if found is None:
            raise Invalid(f"_since must be an instant, not '{since}'", code="value", expression=("_since",))
        filters.append(Filter("_lastUpdated", "date", None, (RangeValue("ge", found[0], found[1]),)))
    results = [entry(patient)] if not wanted or "Patient" in wanted else []
    types = tuple(t for t in _compartment_types() if t in wanted) if wanted else _compartment_types()
    if types:
        results.extend(await _record(repository, call.id, types, tuple(filters)))
    if len(results) > LIMIT:
        raise Invalid(f"The record has more than {LIMIT} resources; ask for fewer with _type or _since",
                      code="too-costly")
    base = call.context.base_url
    return searchset_entries(results, base, {"self": f"{base}/Patient/{call.id}/$everything"}, len(results))
