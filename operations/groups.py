"""Group resources as cohorts: the Patients a Group names or describes, as a search the engine runs.

A Group of actual=true names its members (member.entity, inactive members left out). A Group of actual=false
describes them: by the CareLoop `group-search` extension (a stored Patient search, `Patient?gender=female`) and/or
by characteristics whose code is a Patient search parameter (docs/bulk-data.md lists the forms); every other
definition is refused with 422. Every search runs through the Repository, so the caller's scopes and the
patients' Consents narrow it inside the store query. https://hl7.org/fhir/R4B/group.html
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

import orjson

from resources.errors import Unprocessable
from resources.repository import Repository
from resources.search.parse import parse_search
from resources.search.query import SearchQuery

GROUP_SEARCH = "http://careloop.health/fhir/StructureDefinition/group-search"
# codes of this system are the codes of Patient search parameters (gender, birthdate, address-city...)
PATIENT_PARAMETER = "http://careloop.health/fhir/CodeSystem/patient-search-parameter"
_PAGE = 1000


def _characteristic_pairs(index: int, item: dict[str, Any]) -> list[tuple[str, str]]:
    where = f"Group.characteristic[{index}]"
    codes = [c.get("code") for c in (item.get("code") or {}).get("coding") or []
             if c.get("system") == PATIENT_PARAMETER and c.get("code")]
    if len(codes) != 1:
        raise Unprocessable(f"{where}.code must have one coding of {PATIENT_PARAMETER} naming a Patient search "
                            f"parameter", code="not-supported", expression=(f"{where}.code",))
    name = str(codes[0])
    exclude = item.get("exclude") is True
    if "valueCodeableConcept" in item:
        values = [f"{c['system']}|{c['code']}" if c.get("system") else str(c.get("code"))
                  for c in item["valueCodeableConcept"].get("coding") or [] if c.get("code")]
        if not values:
            raise Unprocessable(f"{where}.valueCodeableConcept has no code", code="not-supported",
                                expression=(f"{where}.valueCodeableConcept",))
        return [(f"{name}:not", v) for v in values] if exclude else [(name, ",".join(values))]
    if exclude:  # only a token test has a negation the search engine can run (:not)
        raise Unprocessable(f"{where}.exclude=true is supported with valueCodeableConcept only",
                            code="not-supported", expression=(f"{where}.exclude",))
    if "valueBoolean" in item:
        return [(name, "true" if item["valueBoolean"] else "false")]
    if "valueReference" in item and item["valueReference"].get("reference"):
        return [(name, str(item["valueReference"]["reference"]))]
    raise Unprocessable(f"{where} needs valueCodeableConcept, valueBoolean or valueReference (other values are "
                        f"not supported)", code="not-supported", expression=(where,))


def definition_query(group: dict[str, Any], repository: Repository) -> SearchQuery:
    """The Patient search a descriptive Group (actual=false) stands for; 422 for a form not supported."""
    pairs: list[tuple[str, str]] = []
    for ext in group.get("extension") or []:
        if ext.get("url") != GROUP_SEARCH:
            continue
        text = str(ext.get("valueString") or "")
        kind, _, query = text.partition("?")
        if kind != "Patient" or not query:
            raise Unprocessable(f"The {GROUP_SEARCH} extension must hold a Patient search such as "
                                f"'Patient?gender=female', not '{text}'", code="not-supported",
                                expression=("Group.extension",))
        pairs.extend(parse_qsl(query, keep_blank_values=True))
    for index, item in enumerate(group.get("characteristic") or []):
        pairs.extend(_characteristic_pairs(index, item))
    if not pairs:
        raise Unprocessable("A Group with actual=false needs characteristics or a group-search extension",
                            code="not-supported", expression=("Group.characteristic",))
    try:
        parsed = parse_search("Patient", pairs, repository.registry, repository.search_limits, strict=True)
    except Exception as exc:  # an unknown parameter or a malformed value: the Group is not usable as a cohort
        raise Unprocessable(f"The Group's definition is not a usable Patient search: {exc}",
                            code="not-supported", expression=("Group",)) from exc
    query = parsed.query
    if query.sort or query.includes:
        raise Unprocessable("A Group's search may not sort or include", code="not-supported", expression=("Group",))
    return SearchQuery("Patient", query.filters, count=_PAGE)


async def group_members(repository: Repository, group_id: str) -> list[str]:
    """The ids of the Patients a Group stands for, as the caller may see them (404 for a Group not seen).

    https://hl7.org/fhir/R4B/group.html
    """
    stored = await repository.read("Group", group_id)
    group: dict[str, Any] = orjson.loads(stored.body or b"{}")
    if group.get("actual") is not False:
        named = []
        for member in group.get("member") or []:
            ref = str((member.get("entity") or {}).get("reference") or "")
            if member.get("inactive") is True or not ref.startswith("Patient/"):
                continue
            named.append(ref.removeprefix("Patient/"))
        return await _visible_patients(repository, list(dict.fromkeys(named)))
    query = definition_query(group, repository)
    return [found.id async for found in _all(repository, query)]


async def _visible_patients(repository: Repository, ids: list[str]) -> list[str]:
    # members the caller may not see (scopes, Consents) or that no longer exist are left out, as a search would
    shown: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        query = parse_search("Patient", [("_id", ",".join(chunk))], repository.registry,
                             replace(repository.search_limits, max_or_values=len(chunk))).query
        shown.update([found.id async for found in _all(repository, replace(query, count=_PAGE))])
    return [i for i in ids if i in shown]


async def _all(repository: Repository, query: SearchQuery) -> Any:
    cursor: int | None = None
    while True:
        page = await repository.search(replace(query, cursor=cursor))
        for found in page.resources:
            yield found
        if page.next_cursor is None:
            return
        cursor = int(page.next_cursor)
