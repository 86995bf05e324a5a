"""The per-class forms of fhir_core's model checks answer exactly as fhir_core's own, and the models use them.

Compared on every element of every shipped R4B example: the null check on each element's data as given and
with a null put into each list it holds (refused in a list of a complex type, kept in a primitive list, where
a null is a placeholder), the after-construction check on each built element and on elements built broken.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from resources.model_fastpath import (
    AFTER,
    NAME,
    ORIGINAL,
    ORIGINAL_AFTER,
    install,
    reject_null_complex_elements,
    validate_after_model_construction,
)
from resources.models import model_issues, warm_up

EXAMPLES = sorted((Path(__file__).parent.parent / "data" / "examples").glob("*.json"))


@pytest.fixture(scope="module")
def original() -> Any:
    """fhir_core's own check, as its class defined it."""
    assert isinstance(ORIGINAL, classmethod)
    return ORIGINAL.__func__


def _outcome(check: Any, cls: Any, data: Any) -> Any:
    try:
        return ("ok", check(cls, data) is data)
    except ValidationError as exc:
        return ("error", exc.title, exc.errors(include_url=False))


def _after_outcome(check: Any, element: Any) -> Any:
    try:
        return ("ok", check(element) is element)
    except (ValueError, ValidationError) as exc:
        return ("error", type(exc).__name__, str(exc))


def _elements(model: Any, data: Any) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(built element, its data) for the resource and every nested element of a complex type."""
    if not isinstance(data, dict):
        return
    yield model, data
    for name in type(model).model_fields:
        child = getattr(model, name, None)
        key = type(model).model_fields[name].alias or name
        raw = data.get(key)
        children = child if isinstance(child, list) else [child]
        raws = raw if isinstance(raw, list) else [raw]
        for one, one_raw in zip(children, raws, strict=False):
            if hasattr(type(one), "model_fields") and isinstance(one_raw, dict):
                yield from _elements(one, one_raw)


def test_the_models_are_built_with_it() -> None:
    from fhir.resources.R4B import get_fhir_model_class

    assert install()
    for resource_type in ("Patient", "Observation", "Claim", "Bundle"):
        validators = get_fhir_model_class(resource_type).__pydantic_decorators__.model_validators
        assert validators[NAME].func.__func__ is reject_null_complex_elements
        assert validators[AFTER].func is validate_after_model_construction


def test_it_answers_as_fhir_core_does_on_every_example(original: Any) -> None:
    from fhir.resources.R4B import get_fhir_model_class

    warm_up()
    compared = nulls = 0
    for path in EXAMPLES:
        data = orjson.loads(path.read_bytes())
        model = get_fhir_model_class(data["resourceType"]).model_validate(data)
        for built, element in _elements(model, data):
            cls = type(built)
            assert _after_outcome(validate_after_model_construction, built) == _after_outcome(ORIGINAL_AFTER, built)
            assert _outcome(reject_null_complex_elements, cls, element) == _outcome(original, cls, element)
            compared += 1
            for key, value in element.items():
                if isinstance(value, list):  # a null in each list: refused in a complex list, kept in a primitive one
                    broken = copy.copy(element)
                    broken[key] = [*value, None]
                    mine, theirs = _outcome(reject_null_complex_elements, cls, broken), _outcome(original, cls, broken)
                    assert mine == theirs, (path.name, cls.__name__, key)
                    nulls += mine[0] == "error"
    assert compared > 10_000 and nulls > 1_000


def test_broken_elements_are_refused_alike() -> None:
    from fhir.resources.R4B import get_fhir_model_class

    observation, coding = get_fhir_model_class("Observation"), get_fhir_model_class("Coding")
    code = {"text": "glucose"}
    broken = [observation.model_construct(status="final", code=code, valueString="a", valueBoolean=True),
              observation.model_construct(code=code),  # no status: a required primitive
              get_fhir_model_class("Patient").model_construct(deceasedBoolean=True, deceasedDateTime="2020"),
              coding.model_construct(code="x")]  # nothing required, no choice: passes both
    outcomes = [_after_outcome(validate_after_model_construction, one) for one in broken]
    assert outcomes == [_after_outcome(ORIGINAL_AFTER, one) for one in broken]
    assert [o[0] for o in outcomes] == ["error", "error", "error", "ok"]


def test_a_null_in_a_complex_list_is_still_refused_through_the_model() -> None:
    issues = model_issues("Patient", {"resourceType": "Patient", "identifier": [{"value": "1"}, None]})
    assert [(i.code, i.expression) for i in issues] == [("structure", ("Patient.identifier",))]
    # in a primitive list a null stands in for a value that only has an extension (json.html#primitive)
    reason = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                             "valueCode": "unknown"}]}
    assert model_issues("Patient", {"resourceType": "Patient",
                                    "name": [{"given": ["Ann", None], "_given": [None, reason]}]}) == []
