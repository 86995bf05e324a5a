"""How alike two Patients are: identifiers decide first, then weighted demographics (weights are data).

https://hl7.org/fhir/R4B/patient-operation-match.html
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources as package_data
from typing import Any

import orjson

from operations.match_names import addresses_of, names_of, near, swapped_date, telecoms_of

GRADES = ("certain", "probable", "possible", "certainly-not")


@dataclass(frozen=True)
class Weight:
    """What one element adds when it agrees or nearly agrees, and takes away when it differs."""

    agree: float
    partial: float
    disagree: float


@dataclass(frozen=True)
class MatchRules:
    """The shipped scoring: element weights, grade thresholds and the candidate limits."""

    weights: dict[str, Weight]
    grades: dict[str, float]
    candidates_per_search: int
    count_default: int


@cache
def shipped_rules() -> MatchRules:
    """The rules in operations/data/patient-match.json."""
    data = orjson.loads(package_data.files("operations").joinpath("data/patient-match.json").read_bytes())
    return MatchRules({k: Weight(**v) for k, v in data["weights"].items()}, dict(data["grades"]),
                      int(data["candidatesPerSearch"]), int(data["countDefault"]))


@dataclass(frozen=True)
class Verdict:
    """A candidate's score, grade and the element outcomes that made it."""

    score: float
    grade: str | None  # None: too unlike to be listed
    elements: dict[str, str]


def identifiers_of(patient: dict[str, Any]) -> set[tuple[str, str]]:
    """(system, value) of every identifier that has both."""
    return {(i["system"], i["value"]) for i in patient.get("identifier") or []
            if isinstance(i, dict) and isinstance(i.get("system"), str) and isinstance(i.get("value"), str)}


def _names(a: dict[str, Any], b: dict[str, Any]) -> tuple[str | None, str | None]:
    """The best (family, given) outcomes over every pair of names, either way round (surname-first order)."""
    best: tuple[int, str | None, str | None] = (-1, None, None)
    rank = {"agree": 2, "partial": 1, "disagree": 0, None: 0}
    for family, given in names_of(a):
        for other_family, other_given in names_of(b):
            for f2, g2 in ((other_family, other_given), (other_given, other_family)):
                outcomes = (_text(family, f2), _text(given, g2))
                total = rank[outcomes[0]] + rank[outcomes[1]]
                if total > best[0]:
                    best = (total, *outcomes)
    return best[1], best[2]


def _text(a: str, b: str) -> str | None:
    if not a or not b:
        return None
    if a == b:
        return "agree"
    return "partial" if near(a, b) else "disagree"


def _birth_date(a: Any, b: Any) -> str | None:
    if not isinstance(a, str) or not isinstance(b, str):
        return None
    if a == b:
        return "agree"
    if swapped_date(a) == b or (len(a) == len(b) == 10 and near(a, b)):
        return "partial"  # the day/month mix-up, or one digit mistyped
    return "disagree"


def _gender(a: Any, b: Any) -> str | None:
    known = ("male", "female")
    if a not in known or b not in known:
        return None
    return "agree" if a == b else "disagree"


def _telecom(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    mine, theirs = telecoms_of(a), telecoms_of(b)
    if not mine or not theirs:
        return None
    # a number with and without its country code is the same number
    same = any(a == b or (a.isdigit() and b.isdigit() and min(len(a), len(b)) >= 7 and (a.endswith(b) or b.endswith(a)))
               for a in mine for b in theirs)
    return "agree" if same else "disagree"


def _address(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    mine, theirs = addresses_of(a), addresses_of(b)
    if not mine or not theirs:
        return None
    if any(x[0] and x[0] == y[0] for x in mine for y in theirs):
        return "agree"
    if any((x[1] and x[1] == y[1]) or (x[0] and y[0] and near(x[0], y[0])) for x in mine for y in theirs):
        return "partial"
    return "disagree"


def compare(asked: dict[str, Any], candidate: dict[str, Any], rules: MatchRules,
            unique_systems: frozenset[str] = frozenset()) -> Verdict:
    """Score a candidate against the Patient asked about."""
    mine, theirs = identifiers_of(asked), identifiers_of(candidate)
    if mine & theirs:
        return Verdict(1.0, "certain", {"identifier": "agree"})
    family, given = _names(asked, candidate)
    elements = {"family": family, "given": given,
                "birthDate": _birth_date(asked.get("birthDate"), candidate.get("birthDate")),
                "gender": _gender(asked.get("gender"), candidate.get("gender")),
                "telecom": _telecom(asked, candidate), "address": _address(asked, candidate)}
    total = 0.0
    for name, outcome in elements.items():
        weight = rules.weights[name]
        total += {"agree": weight.agree, "partial": weight.partial, "disagree": -weight.disagree,
                  None: 0.0}[outcome]
    score = round(min(1.0, max(0.0, total)), 4)
    shown = {k: v for k, v in elements.items() if v is not None}
    grade = next((g for g in ("certain", "probable", "possible") if score >= rules.grades[g]), None)
    # two different values of a system that gives each person one value: a look-alike, never the same person
    conflicting = {s for s, _ in mine} & {s for s, _ in theirs} & unique_systems
    if conflicting and grade is not None:
        return Verdict(0.0, "certainly-not", {**shown, "identifier": "disagree"})
    return Verdict(score, grade, shown)
