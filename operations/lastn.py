"""Observation/$lastn: per code, the latest `max` Observations by effective time, among those a search finds.

Served from the index by the store (a window over the code entries, latest date first), narrowed like any
search by the caller's scopes and the patients' Consents. https://hl7.org/fhir/R4B/observation-operation-lastn.html
"""

from __future__ import annotations

from operations.context import OperationCall
from resources.bundles import searchset_entries
from resources.errors import Invalid
from resources.search.parse import RESULT_PARAMS, parse_search
from resources.store.protocol import entry

MAX_PER_CODE = 1000  # the largest `max`: beyond it a plain search with _sort=-date serves better


async def run(call: OperationCall) -> bytes:
    """A searchset Bundle of the latest Observations of each code, grouped by code."""
    given = call.input
    per_code = given.integer("max", minimum=1) or 1
    if per_code > MAX_PER_CODE:
        raise Invalid(f"max may be at most {MAX_PER_CODE}, not {per_code}", code="too-costly", expression=("max",))
    pairs = []
    for name in dict.fromkeys(p["name"] for p in given.parts if p["name"] != "max"):
        if name.partition(":")[0] in RESULT_PARAMS or name.startswith(("_sort", "_include", "_revinclude")):
            raise Invalid(f"$lastn does not take '{name}': it orders and pages by code and date itself",
                          code="not-supported", expression=(name,))
        pairs.extend((name, value) for value in given.texts(name))  # a repeated parameter is AND-ed, as in search
    repository = call.context.repository
    query = parse_search("Observation", pairs, repository.registry, repository.search_limits, strict=True).query
    found = await repository.lastn(query, "code", "date", per_code)
    base = call.context.base_url
    return searchset_entries([entry(r) for r in found], base, {"self": f"{base}/Observation/$lastn"}, len(found))
