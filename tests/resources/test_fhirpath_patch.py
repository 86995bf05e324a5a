"""FHIRPath Patch operations: add, insert, delete, replace, move.

https://hl7.org/fhir/R4B/fhirpatch.html
"""

from __future__ import annotations

from typing import Any

import pytest

from resources.errors import FhirError
from resources.fhirpath_patch import apply_fhirpath_patch

PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "id": "p", "name": [{"family": "Ames", "given": ["Bea"]}],
    "identifier": [{"system": "urn:s", "value": "1"}, {"system": "urn:t", "value": "2"}],
}


def operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    out: list[dict[str, Any]] = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name == "name":
            out.append({"name": "name", "valueString": value})
        elif name in ("index", "source", "destination"):
            out.append({"name": name, "valueInteger": value})
        elif name == "parts":
            out.append({"name": "value", "part": value})
        else:
            out.append({"name": "value", name: value})
    return {"name": "operation", "part": out}


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(operations)}


def test_add_single_element() -> None:
    result = apply_fhirpath_patch(PATIENT, patch(operation("add", "Patient", name="birthDate", valueDate="1970")))
    assert result["birthDate"] == "1970"


def test_add_choice_element_uses_the_value_type() -> None:
    result = apply_fhirpath_patch(PATIENT, patch(operation("add", "Patient", name="deceased", valueBoolean=True)))
    assert result["deceasedBoolean"] is True


def test_add_complex_value_to_a_list() -> None:
    result = apply_fhirpath_patch(PATIENT, patch(operation("add", "Patient", name="telecom", parts=[
        {"name": "system", "valueCode": "phone"}, {"name": "value", "valueString": "555"}])))
    assert result["telecom"] == [{"system": "phone", "value": "555"}]


def test_replace_delete_insert_move() -> None:
    result = apply_fhirpath_patch(PATIENT, patch(
        operation("replace", "Patient.name[0].family", valueString="Zed"),
        operation("delete", "Patient.identifier.where(system='urn:t')"),
        operation("insert", "Patient.name[0].given", index=0, valueString="Ann"),
        operation("add", "Patient", name="identifier", valueIdentifier={"system": "urn:u", "value": "3"}),
        operation("move", "Patient.identifier", source=1, destination=0),
    ))
    assert result["name"] == [{"family": "Zed", "given": ["Ann", "Bea"]}]
    assert result["identifier"] == [{"system": "urn:u", "value": "3"}, {"system": "urn:s", "value": "1"}]
    assert PATIENT["name"][0]["family"] == "Ames"  # the input is not modified


def test_delete_of_nothing_is_no_op_and_last_item_removes_the_list() -> None:
    result = apply_fhirpath_patch(PATIENT, patch(operation("delete", "Patient.telecom"),
                                                 operation("delete", "Patient.name[0].given[0]")))
    assert result["name"] == [{"family": "Ames"}]


@pytest.mark.parametrize(("operations", "status"), [
    ([operation("replace", "Patient.identifier", valueString="x")], 422),
    ([operation("insert", "Patient.name", index=9, valueHumanName={"family": "X"})], 422),
    ([operation("add", "Patient", name="gender", valueCode="male"),
      operation("add", "Patient", name="gender", valueCode="female")], 422),
    ([operation("explode", "Patient")], 400),
    ([operation("delete", "Observation.code")], 400),
    ([], 400),
])
def test_bad_patches(operations: list[dict[str, Any]], status: int) -> None:
    with pytest.raises(FhirError) as caught:
        apply_fhirpath_patch(PATIENT, patch(*operations))
    assert caught.value.status == status
