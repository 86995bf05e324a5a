"""Validation messages in FHIR terms (issue 33 item 14): the pure wording rules, table-driven.

https://hl7.org/fhir/R4B/datatypes.html#primitive
"""

from __future__ import annotations

from typing import Any

import pytest

from resources.errors import Invalid
from resources.messages import model_message, wrong_kind
from resources.search.values import date_value, number_value

MODEL_ERRORS: list[tuple[dict[str, Any], str, tuple[str, ...]]] = [
    ({"type": "extra_forbidden", "msg": "Extra inputs are not permitted", "input": 1}, "Patient.foo",
     ("Patient.foo is not an element of Patient", "camelCase")),
    ({"type": "missing", "msg": "Field required", "input": {}}, "Observation.code",
     ("Observation.code is required",)),
    ({"type": "list_type", "msg": "Input should be a valid list", "input": {}}, "Patient.name",
     ("Patient.name repeats", "JSON array")),
    ({"type": "value_error", "msg": "Value error, Date value string does not match spec regex.",
      "input": "1970-13-45"}, "Patient.birthDate", ("'1970-13-45' is not a valid FHIR date", "YYYY-MM-DD")),
    ({"type": "value_error", "msg": "Value error, Instant value string does not match spec regex.",
      "input": "2020"}, "Patient.meta.lastUpdated", ("FHIR instant", "time zone")),
    ({"type": "string_pattern_mismatch", "msg": "String should match pattern", "input": "a b"}, "Patient.id",
     ("not a FHIR id", "letters, digits")),
    ({"type": "greater_than_equal", "msg": "Input should be greater than or equal to 1", "input": 0,
      "ctx": {"ge": 1}}, "Patient.telecom[0].rank", ("Patient.telecom[0].rank", "at least 1")),
    ({"type": "model_validation_format", "msg": "Value is expected from the instance of HumanName", "input": 5,
      "ctx": {"model_class": "HumanName"}}, "Patient.name[0]", ("JSON object (a HumanName)",)),
    ({"type": "something_new", "msg": "Value error, odd"}, "Patient.x", ("Patient.x: odd",)),
]


@pytest.mark.parametrize(("error", "where", "wanted"), MODEL_ERRORS)
def test_model_messages(error: dict[str, Any], where: str, wanted: tuple[str, ...]) -> None:
    text = model_message(error, where)
    assert all(part in text for part in wanted), text
    assert "Input should" not in text and "Extra inputs" not in text and "Value error" not in text


@pytest.mark.parametrize(("value", "fhir_type", "json_kind", "wanted"), [
    ("yes", "boolean", "boolean", "true or false"),
    ("5", "decimal", "number", "a number, unquoted"),
    (5, "string", "string", "in quotes"),
    ("two", "positiveInt", "integer", "from 1"),
])
def test_wrong_json_kind(value: Any, fhir_type: str, json_kind: str, wanted: str) -> None:
    text = wrong_kind("Patient.x", value, fhir_type, json_kind)
    assert text.startswith("Patient.x: ") and wanted in text and f"FHIR {fhir_type}" in text


@pytest.mark.parametrize(("parse", "raw", "wanted"), [
    (date_value, "yesterday", "'yesterday' is not a date"),
    (date_value, "2020-13", "'2020-13' is not a date"),
    (date_value, "ge2020-13", "'ge2020-13' is not a date"),
    (number_value, "many", "'many' is not a number"),
    (number_value, "gtx1", "'gtx1' is not a number"),
])
def test_search_values_that_are_not_of_the_type(parse: Any, raw: str, wanted: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse("birthdate", raw)
    assert wanted in caught.value.diagnostics and "eq, ne, gt, lt, ge, le, sa, eb, ap" in caught.value.diagnostics
