"""JSON Patch (RFC 6902) against the FHIR test cases.

https://hl7.org/fhir/R4B/http.html#patch
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from resources.errors import FhirError
from resources.patch import apply_json_patch
from tests.conftest import DATA

CASES: list[dict[str, Any]] = orjson.loads((DATA / "json-patch-tests.json").read_bytes())


@pytest.mark.parametrize("case", CASES, ids=[c["comment"] for c in CASES])
def test_json_patch_case(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(FhirError):
            apply_json_patch(case["doc"], case["patch"])
    else:
        assert apply_json_patch(case["doc"], case["patch"]) == case["expected"]


def test_patch_does_not_modify_its_input() -> None:
    doc = {"a": [1, 2]}
    apply_json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3}])
    assert doc == {"a": [1, 2]}


@pytest.mark.parametrize("patch", [{"op": "add"}, [{"op": "jump", "path": "/a"}], [{"op": "add", "path": "a"}],
                                   [{"op": "add", "path": "/a"}], ["not an object"]])
def test_malformed_patches_are_invalid(patch: Any) -> None:
    with pytest.raises(FhirError) as caught:
        apply_json_patch({"a": 1}, patch)
    assert caught.value.status == 400
