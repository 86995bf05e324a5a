"""$cohort-stats: counts and trends by tier, lifecycle stage, age band, sex, region and churn level, and referrals.

DOMAIN.md section 6. Counted in the store (the Store's aggregate seam: one SQL GROUP BY or one MongoDB
aggregation pipeline over all six dimensions, each dimension and cross-tab then a sum over its cells) over
the Patients the caller may see, each joined to its
persisted results (the tier and lifecycle Observations and churn RiskAssessment that `persist=true` and the
scheduled recomputation keep current). A trend counts the results that changed to each value within a period
and are still current. https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from operations.cohort import CohortRules, patient_of, scan
from operations.context import OperationCall
from operations.parameters import parameters, part
from operations.persist import IDENTIFIER, RESULT
from operations.segment import REFERRED_BY
from resources.errors import Invalid
from resources.ids import now_ms
from resources.search.dates import date_range, format_instant
from resources.search.parse import parse_search
from resources.store.protocol import GroupKey, Linked

NAME = "cohort-stats"
DIMENSIONS = ("tier", "lifecycle", "age-band", "sex", "region", "churn")
CROSS_DEFAULT = ("tier|age-band", "tier|lifecycle", "churn|tier", "lifecycle|age-band")
PARAMETERS = ("start", "end", "cross")
UNKNOWN = "unknown"  # a patient with no value for a dimension (no result yet, no birth date...)


def age_edges(rules: CohortRules, now: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The birth-date edges of the age bands (ms, descending) and the bands' labels.

    With bands "35,50": born after today 35 years ago is under 35; after today 51 years ago is 35 to 50
    (50 still counts, it is a whole age); the rest over 50.
    """
    ages = [int(a) for a in rules.age_bands.split(",")]
    today = datetime.fromtimestamp(now / 1000, UTC)

    def years_ago(years: int) -> int:
        day = min(today.day, 28) if today.month == 2 and today.day == 29 else today.day
        return int(today.replace(year=today.year - years, day=day).timestamp() * 1000)

    edges = (years_ago(ages[0]), *[years_ago(a + 1) for a in ages[1:]])
    labels = (f"<{ages[0]}", *[f"{lo}-{hi}" for lo, hi in zip(ages, ages[1:], strict=False)], f">{ages[-1]}")
    return edges, labels


def keys(rules: CohortRules, now: int) -> dict[str, GroupKey]:
    """The group key of each dimension."""
    edges, _ = age_edges(rules, now)
    return {"tier": GroupKey("value-concept", linked=Linked("Observation", IDENTIFIER, "tier-")),
            "lifecycle": GroupKey("value-concept", linked=Linked("Observation", IDENTIFIER, "lifecycle-")),
            "churn": GroupKey("risk", linked=Linked("RiskAssessment", IDENTIFIER, "churn-")),
            "sex": GroupKey("gender"), "age-band": GroupKey("birthdate", "date", edges),
            "region": GroupKey(rules.region_param, "string")}


def _label(dimension: str, value: str | None, labels: tuple[str, ...]) -> str:
    if value is None:
        return UNKNOWN
    return labels[int(value)] if dimension == "age-band" else value


def _group(values: list[str], count: int) -> dict[str, Any]:
    return {"name": "group", "part": [*[{"name": "value", "valueString": v} for v in values],
                                      {"name": "count", "valueInteger": count}]}


def _crosses(call: OperationCall) -> list[tuple[str, str]]:
    asked = call.input.texts("cross") or list(CROSS_DEFAULT)
    found = []
    for text in asked:
        pair = tuple(text.split("|"))
        if len(pair) != 2 or not set(pair) <= set(DIMENSIONS) or pair[0] == pair[1]:
            raise Invalid(f"Parameter 'cross' must be two different dimensions as a|b (of {', '.join(DIMENSIONS)}),"
                          f" not '{text}'", code="value", expression=("cross",))
        found.append((pair[0], pair[1]))
    return found


def _period(call: OperationCall, now: int) -> tuple[int, int] | None:
    start, end = call.input.text("start"), call.input.text("end")
    if start is None and end is None:
        return None
    spans = []
    for name, value in (("start", start), ("end", end)):
        span = date_range(value) if value is not None else None
        if value is not None and span is None:
            raise Invalid(f"Parameter '{name}' must be a FHIR date or dateTime, not '{value}'", code="value",
                          expression=(name,))
        spans.append(span)
    low = spans[0][0] if spans[0] else 0
    high = spans[1][1] if spans[1] else now
    if low > high:
        raise Invalid("Parameter 'start' is after 'end'", code="value", expression=("start", "end"))
    return low, high


async def _trends(call: OperationCall, low: int, high: int) -> list[dict[str, Any]]:
    """Per result kind: how many current results changed to each value within the period (lifecycle: from what)."""
    repo = call.context.repository
    when = [("date", "ge" + format_instant(low)), ("date", "le" + format_instant(high))]
    out = []
    for kind, resource_type, params, by in (
            ("tier", "Observation", [("code", f"{RESULT}|tier")], (GroupKey("value-concept"),)),
            ("lifecycle", "Observation", [("code", f"{RESULT}|lifecycle")],
             (GroupKey("component-value-concept"), GroupKey("value-concept"))),
            ("churn", "RiskAssessment", [("identifier", f"{IDENTIFIER}|")], (GroupKey("risk"),))):
        query = parse_search(resource_type, [*params, *when], repo.registry, strict=True).query
        groups = await repo.aggregate(query, by)
        rows = [_group([v if v is not None else "none" for v in values], count)
                for values, count in sorted(groups, key=lambda g: [v or "" for v in g[0]])]
        out.append({"name": "trend", "part": [{"name": "dimension", "valueCode": kind}, *rows]})
    return out


async def _referrals(call: OperationCall) -> list[dict[str, Any]]:
    """Who referred whom among the patients the caller may see: the count and every chain from its root."""
    referred_by: dict[str, str] = {}
    async for person in scan(call.context.repository, "Patient", []):
        for ext in person.get("extension") or []:
            referrer = patient_of(ext, "valueReference") if ext.get("url") == REFERRED_BY else None
            if referrer is not None:
                referred_by[str(person["id"])] = referrer
    children: dict[str, list[str]] = defaultdict(list)
    for child, parent in sorted(referred_by.items()):
        children[parent].append(child)
    chains: list[list[str]] = []

    def walk(path: list[str]) -> None:
        nxt = [c for c in children.get(path[-1], []) if c not in path]  # a cycle ends the chain
        if not nxt:
            chains.append(path)
        for child in nxt:
            walk([*path, child])

    for root in sorted(set(children) - set(referred_by)):
        walk([root])
    pairs = [{"name": "referral", "part": [part("referrer", "Reference", {"reference": f"Patient/{parent}"}),
                                           part("referred", "Reference", {"reference": f"Patient/{child}"})]}
             for child, parent in sorted(referred_by.items())]
    listed = [{"name": "chain", "part": [part("patient", "Reference", {"reference": f"Patient/{p}"})
                                         for p in chain]} for chain in chains]
    return [part("referral-count", "Integer", len(referred_by)), *pairs, *listed]


async def run(call: OperationCall) -> dict[str, Any]:
    """Counts per dimension and cross-tab over the patients the caller may see, trends and referrals."""
    for given in call.input.parts:
        if given["name"] not in PARAMETERS:
            raise Invalid(f"Unknown parameter '{given['name']}' for ${NAME}; it takes {', '.join(PARAMETERS)}",
                          code="not-supported", expression=(given["name"],))
    rules, repo = call.context.cohort, call.context.repository
    now = now_ms()
    crosses, period = _crosses(call), _period(call, now)
    by, (_, labels) = keys(rules, now), age_edges(rules, now)
    patients = parse_search("Patient", [], repo.registry, strict=True).query
    # one GROUP BY over every dimension at once (at most a few thousand cells): each dimension and cross-tab
    # is a sum over it, instead of a query of the store each
    cube = await repo.aggregate(patients, tuple(by[d] for d in DIMENSIONS))
    labelled = [(tuple(_label(d, v, labels) for d, v in zip(DIMENSIONS, values, strict=True)), count)
                for values, count in cube]
    total = sum(count for _, count in labelled)
    out: list[dict[str, Any] | None] = []
    for at, dimension in enumerate(DIMENSIONS):
        counted: dict[str, int] = defaultdict(int)
        for values, count in labelled:
            counted[values[at]] += count
        out.append({"name": "by", "part": [{"name": "dimension", "valueCode": dimension},
                                           *[_group([v], c) for v, c in sorted(counted.items())]]})
    for first, second in crosses:
        a, b = DIMENSIONS.index(first), DIMENSIONS.index(second)
        cells: dict[tuple[str, str], int] = defaultdict(int)
        for values, count in labelled:
            cells[(values[a], values[b])] += count
        out.append({"name": "cross", "part": [{"name": "dimension", "valueCode": first},
                                              {"name": "dimension", "valueCode": second},
                                              *[_group(list(k), c) for k, c in sorted(cells.items())]]})
    if period is not None:
        out.append(part("start", "DateTime", format_instant(period[0])))
        out.append(part("end", "DateTime", format_instant(period[1])))
        out.extend(await _trends(call, *period))
    return parameters(part("total", "Integer", total), *out, *await _referrals(call),
                      part("generated", "Instant", format_instant(now)))
