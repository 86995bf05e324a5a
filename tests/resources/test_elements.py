"""The element tables agree with the official R4B JSON schema, and the JSON-kind check refuses what it refuses.

The serving process no longer compiles the schema; these tests keep the small tables that replace it honest,
by comparing them with the schema (through jsonschema-rs) on every R4B example and on mutations of each.
https://hl7.org/fhir/R4B/json.html#schema
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest

from resources.elements import element_info, kind_issues, resource_type_names, summary_names
from resources.models import model_issues
from tools.element_tables import element_table, summary_table

DATA = Path(__file__).resolve().parents[2] / "resources" / "data"
EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "data" / "examples").glob("*.json"))


@cache
def _schema() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((DATA / "fhir.schema.json").read_bytes())
    return data


@cache
def _validator() -> Any:
    # the schema's definitions, dispatching on resourceType with if/then rather than trying the 141 types of
    # its oneOf; the string pattern read as FHIR means it (no control characters)
    definitions = dict(_schema()["definitions"])
    for name in ("string", "markdown"):
        definitions[name] = {**definitions[name], "pattern": "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F]+$"}
    dispatch = [{"if": {"properties": {"resourceType": {"const": name}}, "required": ["resourceType"]},
                 "then": {"$ref": f"#/definitions/{name}"}} for name in sorted(_schema()["discriminator"]["mapping"])]
    return jsonschema_rs.validator_for({"$schema": "http://json-schema.org/draft-07/schema#",
                                        "definitions": definitions, "allOf": dispatch})


@cache
def _primitives() -> dict[str, str]:
    table: dict[str, str] = element_table(_schema())["primitives"]
    return table


def _primitive_leaves(definition: str, value: Any, trail: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    # (path of keys and indexes, FHIR primitive type) of every primitive value in a resource
    primitives = _primitives()
    for key, item in value.items():
        info = element_info(definition, key)
        if info is None:
            continue
        for index, one in enumerate(item) if isinstance(item, list) else [(None, item)]:
            where = (*trail, key) if index is None else (*trail, key, index)
            if info[1] in primitives and one is not None:
                yield where, info[1]
            elif isinstance(one, dict):
                nested = one.get("resourceType") if info[1] == "ResourceList" else info[1]
                if isinstance(nested, str):
                    yield from _primitive_leaves(nested, one, where)


def _set(resource: dict[str, Any], where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    holder: Any = out
    for step in where[:-1]:
        holder = holder[step]
    holder[where[-1]] = value
    return out


def _wrong_kind(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return 5


def test_the_shipped_tables_are_those_the_schema_and_models_give() -> None:
    stored = orjson.loads((DATA / "elements.json").read_bytes())
    assert stored == element_table(_schema()), "run python -m tools.element_tables"
    types = orjson.loads((DATA / "resource-types.json").read_bytes())
    assert types["resourceTypes"] == sorted(_schema()["discriminator"]["mapping"])
    assert types["summary"] == summary_table(types["resourceTypes"])
    assert len(resource_type_names()) == 141
    assert {"identifier", "name", "birthDate", "_birthDate", "gender"} <= summary_names("Patient")
    assert "contact" not in summary_names("Patient")


def test_element_info_reads_cardinality_and_type() -> None:
    assert element_info("Patient", "name") == (True, "HumanName")
    assert element_info("Patient", "gender") == (False, "code")
    assert element_info("Observation", "valueQuantity") == (False, "Quantity")
    assert element_info("Extension", "valueBase64Binary") == (False, "base64Binary")
    assert element_info("Patient", "nonsense") is None


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_each_example_and_its_mutations_are_judged_as_the_schema_judges_them(path: Path) -> None:
    example = orjson.loads(path.read_bytes())
    kind = example["resourceType"]
    assert kind_issues(kind, example) == []
    assert _validator().is_valid(example)
    # the schema takes anything for xhtml (a JSON string is required all the same, and checked)
    leaves = [leaf for leaf in _primitive_leaves(kind, example, ()) if leaf[1] != "xhtml"]
    # up to 8 primitives spread over the example (about 5,000 mutations in all): the wrong JSON kind
    for where, primitive in leaves[::max(1, len(leaves) // 8)][:8]:
        value: Any = example
        for step in where:
            value = value[step]
        mutated = _set(example, where, _wrong_kind(value))
        found = kind_issues(kind, mutated)
        assert not _validator().is_valid(mutated), (where, primitive)
        assert len(found) == 1 and found[0].code == "structure", (where, primitive, found)
        expected = kind + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in where)
        assert found[0].expression == (expected,)


def test_stricter_than_the_schema_where_fhir_is_stricter() -> None:
    # the schema types integer as "number", so 2.0 passes it; FHIR's integer rule does not allow it
    patient = {"resourceType": "Patient", "multipleBirthInteger": 2.0}
    assert _validator().is_valid(patient)
    assert [i.expression for i in kind_issues("Patient", patient)] == [("Patient.multipleBirthInteger",)]
    # control characters, in any string-kind primitive, nested in a contained resource
    nested = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
              "contained": [{"resourceType": "Patient", "id": "p", "name": [{"given": ["a\u0007b"]}]}]}
    issues = kind_issues("Observation", nested)
    assert [(i.code, i.expression) for i in issues] == [("value", ("Observation.contained[0].name[0].given[0]",))]
    # the model check runs the kind check first: the models alone would take "true" for a boolean
    assert [i.code for i in model_issues("Patient", {"resourceType": "Patient", "active": "true"})] == ["structure"]
