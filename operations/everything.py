"""Patient/$everything: the patient and every resource in their compartment that the caller may see.

Each compartment type is one store search with the compartment filter, through the Repository, so the
caller's scopes narrow it like any search (types the token cannot search are left out).
https://hl7.org/fhir/R4B/patient-operation-everything.html
"""

from __future__ import annotations

from operations.context import OperationCall
from resources.bundles import searchset
from resources.errors import FhirError, Invalid
from resources.search.dates import date_range
from resources.search.index import load_patient_compartment
from resources.search.query import Filter, RangeValue, ReferenceValue, SearchQuery
from resources.store.protocol import StoredResource

LIMIT = 10_000  # resources in one answer; a record larger than this is refused rather than cut silently


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
    results: list[StoredResource] = [patient] if not wanted or "Patient" in wanted else []
    for resource_type in sorted(load_patient_compartment()):
        if resource_type == "Patient" or (wanted and resource_type not in wanted):
            continue
        try:
            page = await repository.search(SearchQuery(resource_type, tuple(filters), count=LIMIT))
        except FhirError as exc:
            if exc.status == 403:
                continue  # a type the caller may not search is left out of the record
            raise
        results.extend(page.resources)
        if len(results) > LIMIT:
            raise Invalid(f"The record has more than {LIMIT} resources; ask for fewer with _type or _since",
                          code="too-costly")
    base = call.context.base_url
    return searchset(results, base, {"self": f"{base}/Patient/{call.id}/$everything"}, len(results))
