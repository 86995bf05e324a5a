"""The shape walk of every written resource: JSON's null and blank rules, references, and the nesting bound.

https://hl7.org/fhir/R4B/json.html#null
"""

from __future__ import annotations

from typing import Any

import pytest

from resources.errors import Invalid
from resources.validation import ValidationLimits, precheck


def _issues(data: dict[str, Any], depth: int = 64) -> list[tuple[str, tuple[str, ...]]]:
    _, structural, references = precheck(data, limits=ValidationLimits(depth))
    return [(i.code, i.expression) for i in structural + references]


def _nested(levels: int) -> dict[str, Any]:
    """A Patient whose extension nests `levels` objects deep, each with a url."""
    inner: dict[str, Any] = {"url": "http://x", "valueString": "v"}
    for _ in range(levels - 1):
        inner = {"url": "http://x", "extension": [inner]}
    return {"resourceType": "Patient", "extension": [inner]}


def test_every_shape_rule_is_reported_in_document_order() -> None:
    patient = {"resourceType": "Patient", "active": None, "name": [{"given": ["Ann", " "], "family": ""}],
               "identifier": [], "contact": [{}], "managingOrganization": {"reference": "Organization/!"},
               "generalPractitioner": [{"reference": "Nope/1"}, {"reference": "#local"},
                                       {"reference": "urn:uuid:0e1f"}, {"reference": "https://x.org/Patient/1"}],
               "text": {"status": "generated", "div": " "}}
    assert _issues(patient) == [
        ("structure", ("Patient.active",)),
        ("value", ("Patient.name[0].given[1]",)),
        ("value", ("Patient.name[0].family",)),
        ("structure", ("Patient.identifier",)),
        ("structure", ("Patient.contact[0]",)),
        ("value", ("Patient.managingOrganization.reference",)),
        ("value", ("Patient.generalPractitioner[0].reference",)),
    ]


def test_a_null_in_an_array_is_a_placeholder_and_passes() -> None:
    reason = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                             "valueCode": "unknown"}]}
    assert _issues({"resourceType": "Patient", "name": [{"given": ["Ann", None], "_given": [None, reason]}]}) == []


def test_nesting_up_to_the_bound_passes_and_one_level_more_is_refused_where_it_starts() -> None:
    # Patient.extension[0] is depth 2, each level of extension two more, its url one below
    assert _issues(_nested(3), depth=7) == []
    with pytest.raises(Invalid) as refused:
        precheck(_nested(3), limits=ValidationLimits(6))
    assert refused.value.issues[0].code == "too-costly"
    assert refused.value.issues[0].expression == ("Patient.extension[0].extension[0].extension[0].url",)
