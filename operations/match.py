"""Patient/$match: the stored patients that may be the person described, best first, each with a grade.

Candidates come from indexed searches through the Repository (so the caller's scopes and the patients'
Consents narrow them like any search): by identifier, birth date (and its day/month mix-up), name (as given,
as pinyin, either order) and phone. Each is then scored by operations/match_score.py.
https://hl7.org/fhir/R4B/patient-operation-match.html
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from operations.context import OperationCall
from operations.match_names import fold, has_han, phone_digits, swapped_date
from operations.match_score import MatchRules, Verdict, compare, identifiers_of, shipped_rules
from resources.bundles import searchset_entries
from resources.errors import Invalid
from resources.repository import Repository
from resources.search.parse import parse_search
from resources.store.protocol import StoredResource, entry

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
_ESCAPE = str.maketrans({"\\": "\\\\", ",": "\\,", "|": "\\|", "$": "\\$"})


def _searches(asked: dict[str, Any], per_search: int) -> list[list[tuple[str, str]]]:
    """The indexed searches that find every plausible candidate (never a scan of all patients)."""
    count = ("_count", str(per_search))
    searches: list[list[tuple[str, str]]] = []
    ids = sorted(identifiers_of(asked))
    if ids:
        searches.append([("identifier", ",".join(f"{s.translate(_ESCAPE)}|{v.translate(_ESCAPE)}"
                                                  for s, v in ids)), count])
    born = asked.get("birthDate")
    if isinstance(born, str) and born:
        dates = [born] + ([swapped_date(born)] if swapped_date(born) else [])
        searches.append([("birthdate", ",".join(f"eq{d}" for d in dates if d)), count])
    parts: set[str] = set()
    for name in asked.get("name") or []:
        if not isinstance(name, dict):
            continue
        family = name.get("family") if isinstance(name.get("family"), str) else ""
        given = next((g for g in name.get("given") or [] if isinstance(g, str)), "")
        if not family and not given and isinstance(name.get("text"), str):
            family, _, given = name["text"].strip().partition(" ")
        if family and given:
            parts.update((family, given))
            if has_han(family + given):
                parts.update((fold(family), fold(given)))  # stored in pinyin, asked in characters
    if parts:
        # each part as family and as given: surname-first order in either record is found by one search; a
        # common name is thousands of people, so a birth year (one year either way, for a mistyped digit) narrows it
        either = ",".join(sorted(p.translate(_ESCAPE) for p in parts))
        search = [("family", either), ("given", either), count]
        year = born[:4] if isinstance(born, str) and born[:4].isdigit() else None
        if year is not None:
            search += [("birthdate", f"ge{int(year) - 1:04d}"), ("birthdate", f"le{int(year) + 1:04d}")]
        searches.append(search)
    phones = sorted({v for p in asked.get("telecom") or [] if isinstance(p, dict) and p.get("system") != "email"
                     and isinstance(v := p.get("value"), str) and v.strip()})
    if phones:
        forms = sorted({*phones, *(phone_digits(v) for v in phones)} - {""})
        searches.append([("phone", ",".join(f.translate(_ESCAPE) for f in forms)), count])
    return searches


async def candidates(repository: Repository, asked: dict[str, Any], rules: MatchRules) -> list[StoredResource]:
    """Every Patient one of the searches finds that the caller may see, once each."""
    queries = [parse_search("Patient", params, repository.registry, repository.search_limits).query
               for params in _searches(asked, rules.candidates_per_search)]
    found: dict[str, StoredResource] = {}
    for page in await asyncio.gather(*(repository.search(query) for query in queries)):
        for resource in page.resources:
            found.setdefault(resource.id, resource)
    return list(found.values())


def _entry_search(verdict: Verdict) -> dict[str, Any]:
    return {"mode": "match", "score": verdict.score,
            "extension": [{"url": MATCH_GRADE, "valueCode": verdict.grade}]}


async def run(call: OperationCall) -> bytes:
    """A searchset Bundle of the candidates, best first, each with its score and match-grade."""
    given = call.input
    asked = given.resource("resource", "Patient")
    if asked is None:
        raise Invalid("Parameter 'resource' (the Patient to match) is required", code="required",
                      expression=("resource",))
    only_certain = given.boolean("onlyCertainMatches") or False
    rules = shipped_rules()
    count = given.integer("count", minimum=1) or rules.count_default
    duplicates = call.context.repository.duplicates
    unique = duplicates.systems if duplicates is not None else frozenset()
    scored: list[tuple[Verdict, StoredResource]] = []
    for candidate in await candidates(call.context.repository, asked, rules):
        assert candidate.body is not None
        verdict = compare(asked, orjson.loads(candidate.body), rules, unique)
        if verdict.grade is not None and (verdict.grade == "certain" or not only_certain):
            scored.append((verdict, candidate))
    order = {"certain": 0, "probable": 1, "possible": 2, "certainly-not": 3}
    scored.sort(key=lambda pair: (order[str(pair[0].grade)], -pair[0].score, pair[1].id))
    kept = scored[:count]
    base = call.context.base_url
    bundle = orjson.loads(searchset_entries([entry(r) for _, r in kept], base,
                                            {"self": f"{base}/Patient/$match"}, len(kept)))
    for item, (verdict, _) in zip(bundle.get("entry") or [], kept, strict=True):
        item["search"] = _entry_search(verdict)
    return orjson.dumps(bundle)
