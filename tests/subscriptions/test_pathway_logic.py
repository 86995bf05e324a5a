"""The pure rules behind pathway Tasks: deadlines of late entries, clinical keys, imports, plan parsing (issue 30).

https://hl7.org/fhir/R4B/plandefinition.html
"""

from __future__ import annotations

from typing import Any

import pytest

from resources.search.index import IndexRows
from subscriptions.followup import clinical_key, imported
from subscriptions.pathways import due_at, steps_by_topic, stops_by_topic

H = 3_600_000
NOW = 1_000 * H


@pytest.mark.parametrize(("anchor", "offset", "level", "expected"), [
    (NOW, 24 * H, 24 * H, NOW + 24 * H),  # on time: from the event
    (NOW - 2 * H, 24 * H, 24 * H, NOW + 22 * H),  # recorded 2 h late: still from the event
    (NOW - 5 * 24 * H, 24 * H, 24 * H, NOW + 24 * H),  # long past: its offset from now
    (NOW - 5 * 24 * H, 90 * 24 * H, 24 * H, NOW + 85 * 24 * H),  # still ahead: keeps its day
    (NOW - 24 * H, 48 * H, 0.5 * H, NOW + 24 * H),  # ahead, whatever the service level
    (NOW - 2 * H, 5 * 60_000, 0.5 * H, NOW + 5 * 60_000),  # a 5-minute call-back recorded late: 5 minutes
    (NOW - 48 * H, 72 * H, 2 * H, NOW + 24 * H),
    (NOW - 96 * H, 72 * H, 2 * H, NOW + 2 * H),  # past: capped at the priority's service level
])
def test_due_at(anchor: int, offset: int, level: float, expected: int) -> None:
    assert due_at(anchor, offset, int(level), NOW) == expected


def rows(value: float, note: str = "") -> IndexRows:
    found = IndexRows()
    found.tokens.append(("code", "http://loinc.org", "72514-3", None))
    found.quantities.append(("value-quantity", "http://unitsofmeasure.org", "{score}", value))
    found.dates.append(("date", 1, 2 if not note else 3))
    found.strings.append(("note", note, note))
    return found


READS = frozenset({"code", "value-quantity"})


@pytest.mark.parametrize(("a", "b", "same"), [
    (rows(7), rows(7), True),
    (rows(7), rows(7, note="amended"), True),  # what the criteria do not read does not make a new event
    (rows(7), rows(9), False),
])
def test_clinical_key(a: IndexRows, b: IndexRows, same: bool) -> None:
    assert (clinical_key(READS, a, {}) == clinical_key(READS, b, {})) is same


def test_clinical_key_without_query_criteria_is_the_content() -> None:
    body = {"resourceType": "RiskAssessment", "status": "final", "meta": {"versionId": "1"}}
    assert clinical_key(frozenset(), IndexRows(), body) == clinical_key(
        frozenset(), IndexRows(), {**body, "meta": {"versionId": "2"}})
    assert clinical_key(frozenset(), IndexRows(), body) != clinical_key(
        frozenset(), IndexRows(), {**body, "status": "amended"})


@pytest.mark.parametrize(("meta", "expected"), [
    ({"tag": [{"system": "http://careloop.health/fhir/CodeSystem/careloop", "code": "import"}]}, True),
    ({"tag": [{"system": "http://careloop.health/fhir/CodeSystem/careloop", "code": "other"}]}, False),
    ({"tag": [{"code": "import"}]}, False),
    ({}, False),
])
def test_imported(meta: dict[str, Any], expected: bool) -> None:
    assert imported({"resourceType": "Encounter", "meta": meta}) is expected


def test_plans_give_conditions_delays_and_stops() -> None:
    template = {"url": "http://x/AD/t", "status": "active", "kind": "Task"}
    plan = {"id": "p", "status": "active", "extension": [
        {"url": "http://careloop.health/fhir/StructureDefinition/plan-stops-on", "valueCanonical": "http://x/T/b"}],
        "action": [{"trigger": [{"type": "named-event", "name": "http://x/T/a"}],
                    "definitionCanonical": "http://x/AD/t",
                    "timingDuration": {"value": 7, "code": "d"},
                    "condition": [{"kind": "applicability", "expression": {
                        "language": "application/x-fhir-query", "name": "none", "expression": "Task?patient={{patient}}"
                    }}, {"kind": "start", "expression": {"language": "text/fhirpath", "expression": "true"}}]}]}
    [step] = steps_by_topic([plan], {"http://x/AD/t": template})["http://x/T/a"]
    assert (step.key, step.delay_ms, step.conditions) == ("p-0", 7 * 24 * H, (("none", "Task?patient={{patient}}"),))
    assert stops_by_topic([plan]) == {"http://x/T/b": ["p"]}
    assert stops_by_topic([{**plan, "status": "retired"}]) == {}
