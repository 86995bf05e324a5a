"""Required bindings: a `code` element bound to a value set with strength `required` holds one of its codes.

The element-to-value-set table and the expansions come from the R4B StructureDefinitions and terminology,
built once by tools/required_bindings.py into terminology/data/required-bindings.json.
https://hl7.org/fhir/R4B/terminologies.html#required
"""

from __future__ import annotations

from importlib import resources as pkg
from typing import Any

import orjson

from resources.errors import Invalid, Issue

_SHOWN = 12  # codes listed in an error message


class RequiredBindings:
    """Checks every stored resource's coded elements against their required value sets."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        if data is None:
            data = orjson.loads(pkg.files("terminology").joinpath("data", "required-bindings.json").read_bytes())
        self._codes: dict[str, frozenset[str]] = {url: frozenset(codes) for url, codes in data["valueSets"].items()}
        self._ordered: dict[str, list[str]] = data["valueSets"]
        self._types: dict[str, Any] = data["types"]

    @property
    def value_set_count(self) -> int:
        """How many value sets are enforced."""
        return len(self._codes)

    def check(self, resource_type: str, resource: dict[str, Any]) -> None:
        """Raise 400 code-invalid naming each element whose code is outside its required value set."""
        issues: list[Issue] = []
        self._resource(resource_type, resource, resource_type, issues)
        if issues:
            raise Invalid(issues[0].diagnostics, issues=tuple(issues))

    def _resource(self, resource_type: str, resource: dict[str, Any], path: str, issues: list[Issue]) -> None:
        tree = self._types.get(resource_type)
        if tree is not None:
            self._walk(tree, resource, path, issues)
        for index, inner in enumerate(resource.get("contained") or []):
            if isinstance(inner, dict) and isinstance(inner.get("resourceType"), str):
                self._resource(inner["resourceType"], inner, f"{path}.contained[{index}]", issues)

    def _walk(self, node: Any, value: Any, path: str, issues: list[Issue]) -> None:
        if isinstance(value, list):
            for index, item in enumerate(value):
                self._walk(node, item, f"{path}[{index}]", issues)
            return
        if isinstance(node, dict):
            if isinstance(value, dict):
                for key, inner in node.items():
                    if key in value:
                        self._walk(inner, value[key], f"{path}.{key}", issues)
            return
        if node.startswith("#"):
            tree = self._types.get(node[1:])
            if tree is not None:
                self._walk(tree, value, path, issues)
            return
        codes = self._codes.get(node)
        if codes is not None and isinstance(value, str) and value not in codes:
            listed = self._ordered[node]
            shown = ", ".join(listed[:_SHOWN]) + (", ..." if len(listed) > _SHOWN else "")
            issues.append(Issue("code-invalid", f"{path}: '{value}' is not a code of the required value set "
                                                f"{node} ({shown})", expression=(path,)))
