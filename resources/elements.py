"""The R4B element tables: resource types, each element's cardinality and type, and primitives' JSON kinds.

Built from the official JSON schema and the R4B models by tools/element_tables.py, so that neither the 3.4 MB
schema nor the models need loading to answer these questions.
https://hl7.org/fhir/R4B/json.html#primitive
"""

from __future__ import annotations

from functools import cache
from importlib import resources as pkg
from typing import Any

import orjson

from resources.errors import Issue
from resources.messages import control_characters, wrong_kind


def _data(name: str) -> Any:
    return orjson.loads(pkg.files("resources").joinpath("data", name).read_bytes())


@cache
def resource_type_names() -> frozenset[str]:
    """Every resource type of R4B."""
    return frozenset(_data("resource-types.json")["resourceTypes"])


@cache
def summary_names(resource_type: str) -> frozenset[str]:
    """JSON names of the elements marked isSummary for a type (choice elements by each typed name)."""
    return frozenset(_summaries().get(resource_type, ("resourceType", "id", "meta")))


@cache
def _summaries() -> dict[str, list[str]]:
    table: dict[str, list[str]] = _data("resource-types.json")["summary"]
    return table


@cache
def _tables() -> tuple[dict[str, str], dict[str, dict[str, tuple[bool, str]]]]:
    data = _data("elements.json")
    elements = {name: {prop: (bool(repeats), kind) for prop, (repeats, kind) in props.items()}
                for name, props in data["elements"].items()}
    return data["primitives"], elements


def element_info(definition: str, name: str) -> tuple[bool, str] | None:
    """(repeats, type) of element `name` of a type or backbone element, or None when it has no such element."""
    return _tables()[1].get(definition, {}).get(name)


# FHIR strings hold no control characters but tab, CR and LF (datatypes.html#string); the R4B models' patterns
# use \S, which lets them through
_CONTROL = frozenset(chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)))
_KIND_OK = {
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
}


@cache
def _plans() -> dict[str, dict[str, tuple[Any, bool, str]]]:
    """Per type and element: (the JSON kind test of a primitive or None, whether it is a string, its type)."""
    primitives, elements = _tables()
    return {definition: {name: (_KIND_OK[primitives[kind]] if kind in primitives else None,
                                primitives.get(kind) == "string", kind)
                         for name, (_, kind) in props.items()}
            for definition, props in elements.items()}


def kind_issues(resource_type: str, data: dict[str, Any], limit: int = 20) -> list[Issue]:
    """Primitive values of the wrong JSON kind ("true" for a boolean, "5" for a decimal); empty when none.

    The R4B models coerce such values, the JSON format does not allow them.
    """
    primitives = _tables()[0]
    plans = _plans()
    issues: list[Issue] = []

    def report(kind: str, one: Any, where: str) -> None:
        json_kind = primitives[kind]
        if not _KIND_OK[json_kind](one):
            issues.append(Issue("structure", wrong_kind(where, one, kind, json_kind), expression=(where,)))
        else:
            issues.append(Issue("value", control_characters(where, one, kind), expression=(where,)))

    def walk(definition: str, value: dict[str, Any], path: str) -> None:
        # Paths are spelled out only for an issue or a nested element: a valid resource (nearly every one)
        # has most of its values primitive, and building each one's path was a third of this walk.
        plan = plans.get(definition)
        if plan is None:
            return
        for key, item in value.items():
            found = plan.get(key)
            if found is None:
                continue  # unknown elements are the models' to report
            ok, string, kind = found
            many = isinstance(item, list)
            if ok is not None:
                for index, one in enumerate(item) if many else ((None, item),):
                    # null placeholders in arrays are the shape check's to judge
                    if one is not None and (not ok(one) or string and not _CONTROL.isdisjoint(one)) \
                            and len(issues) < limit:
                        report(kind, one, f"{path}.{key}" if index is None else f"{path}.{key}[{index}]")
                continue
            for index, one in enumerate(item) if many else ((None, item),):
                if isinstance(one, dict) and len(issues) < limit:
                    nested = one.get("resourceType") if kind == "ResourceList" else kind
                    if isinstance(nested, str):
                        walk(nested, one, f"{path}.{key}" if index is None else f"{path}.{key}[{index}]")

    walk(resource_type, data, resource_type)
    return issues
