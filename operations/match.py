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
    """The first, cheap searches: identifiers, the birth date and its day/month swap, phones (one value each:
    a search of several OR-ed dates costs ten times one of a single date)."""
    count = ("_count", str(per_search))
    searches: list[list[tuple[str, str]]] = []
    ids = sorted(identifiers_of(asked))
    if ids:
        searches.append([("identifier", ",".join(f"{s.translate(_ESCAPE)}|{v.translate(_ESCAPE)}"
                                                  for s, v in ids)), count])
    born = asked.get("birthDate")
    if isinstance(born, str) and born:
        searches.extend([("birthdate", f"eq{d}"), count] for d in (born, swapped_date(born)) if d)
    phones = sorted({v for p in asked.get("telecom") or [] if isinstance(p, dict) and p.get("system") != "email"
                     and isinstance(v := p.get("value"), str) and v.strip()})
    if phones:
        forms = sorted({*phones, *(phone_digits(v) for v in phones)} - {""})
        searches.append([("phone", ",".join(f.translate(_ESCAPE) for f in forms)), count])
    return searches


def _name_searches(asked: dict[str, Any], per_search: int) -> list[list[tuple[str, str]]]:
    """Searches by name, as given and as pinyin, either way round (surname-first order in either record)."""
    count = ("_count", str(per_search))
    pairs: set[tuple[str, str]] = set()
    for name in asked.get("name") or []:
        if not isinstance(name, dict):
            continue
        family = name.get("family") if isinstance(name.get("family"), str) else ""
        given = next((g for g in name.get("given") or [] if isinstance(g, str)), "")
        if not family and not given and isinstance(name.get("text"), str):
            family, _, given = name["text"].strip().partition(" ")
        forms = [(family, given)] + ([(fold(family), fold(given))] if has_han(family + given) else [])
        for first, second in forms:
            if first and second:
                pairs.update(((first, second), (second, first)))
    return [[("family", f.translate(_ESCAPE)), ("given", g.translate(_ESCAPE)), count] for f, g in sorted(pairs)]


async def candidates(repository: Repository, searches: list[list[tuple[str, str]]],
                     seen: set[str]) -> list[StoredResource]:
    """The Patients the searches find that the caller may see and that are not in `seen` (which grows)."""
    queries = [parse_search("Patient", params, repository.registry, repository.search_limits).query
               for params in searches]
    found: list[StoredResource] = []
    for page in await asyncio.gather(*(repository.search(query) for query in queries)):
        for resource in page.resources:
            if resource.id not in seen:
                seen.add(resource.id)
                found.append(resource)
    return found


def _scored(asked: dict[str, Any], found: list[StoredResource], rules: MatchRules,
            unique: frozenset[str]) -> list[tuple[Verdict, StoredResource]]:
    """The candidates worth listing, with their verdicts."""
    verdicts = ((compare(asked, orjson.loads(c.body or b"{}"), rules, unique), c) for c in found)
    return [(v, c) for v, c in verdicts if v.grade is not None]


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
    repository, seen = call.context.repository, set[str]()
    scored = _scored(asked, await candidates(repository, _searches(asked, rules.candidates_per_search), seen),
                     rules, unique)
    if not any(v.grade in ("certain", "probable") for v, _ in scored):
        # the name searches cost more (a common name is hundreds of people): only when the cheap ones found no
        # good match, e.g. a mistyped birth date and another phone
        scored += _scored(asked, await candidates(repository, _name_searches(asked, rules.candidates_per_search),
                                                  seen), rules, unique)
    if only_certain:
        scored = [pair for pair in scored if pair[0].grade == "certain"]
    order = {"certain": 0, "probable": 1, "possible": 2, "certainly-not": 3}
    scored.sort(key=lambda pair: (order[str(pair[0].grade)], -pair[0].score, pair[1].id))
    kept = scored[:count]
    base = call.context.base_url
    bundle = orjson.loads(searchset_entries([entry(r) for _, r in kept], base,
                                            {"self": f"{base}/Patient/$match"}, len(kept)))
    for item, (verdict, _) in zip(bundle.get("entry") or [], kept, strict=True):
        item["search"] = _entry_search(verdict)
    return orjson.dumps(bundle)
