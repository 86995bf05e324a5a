"""Search-parameter registry built from the official R4B SearchParameter bundle.

https://hl7.org/fhir/R4B/searchparameter-registry.html
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources as pkg
from typing import Any

import orjson

# Parameters whose value is found in the resource table, not in index tables.
RESOURCE_TABLE_PARAMS = frozenset({"_id", "_lastUpdated"})
_ROOT_TYPES = ("Resource", "DomainResource")


@dataclass(frozen=True)
class Component:
    """One component of a composite search parameter."""

    definition: str
    expression: str


@dataclass(frozen=True)
class SearchParam:
    """A search parameter as it applies to one resource type (its expression narrowed to that type)."""

    code: str
    type: str
    url: str
    resource_type: str
    expression: str | None
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    modifiers: tuple[str, ...] = ()


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on its top-level '|' operators."""
    parts: list[str] = []
    depth, quote, start = 0, False, 0
    for i, ch in enumerate(expression):
        if ch == "'" and (i == 0 or expression[i - 1] != "\\"):
            quote = not quote
        elif not quote and ch in "([":
            depth += 1
        elif not quote and ch in ")]":
            depth -= 1
        elif not quote and depth == 0 and ch == "|":
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def strip_parens(expression: str) -> str:
    """Remove parentheses that wrap a whole expression."""
    text = expression.strip()
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(text) - 1:
                return text
        text = text[1:-1].strip()
    return text


def _root_name(part: str) -> str:
    text = strip_parens(part)
    end = len(text)
    for i, ch in enumerate(text):
        if not (ch.isalnum() or ch == "_"):
            end = i
            break
    return text[:end]


def narrow_expression(expression: str, resource_type: str) -> str | None:
    """The parts of a multi-type expression that apply to one resource type, or None."""
    kept = [p for p in split_union(expression) if _root_name(p) in (resource_type, *_ROOT_TYPES)]
    return " | ".join(kept) if kept else None


@dataclass
class SearchRegistry:
    """Search parameters by resource type and code; custom SearchParameters can be added at run time."""

    by_type: dict[str, dict[str, SearchParam]] = field(default_factory=dict)
    common: dict[str, SearchParam] = field(default_factory=dict)
    version: int = 0  # bumped on every change, so derived views (the CapabilityStatement) know to rebuild
    _subsumed: dict[str, tuple[int, dict[str, tuple[str, ...]]]] = field(default_factory=dict, repr=False)

    def add_definition(self, definition: Mapping[str, Any], resource_types: Iterable[str]) -> list[SearchParam]:
        """Register one SearchParameter resource for each of its base types."""
        self.version += 1
        added: list[SearchParam] = []
        bases = definition.get("base", [])
        expression = definition.get("expression")
        components = tuple(Component(c.get("definition", ""), c.get("expression", ""))
                           for c in definition.get("component", []))
        for base in bases:
            targets = list(resource_types) if base in _ROOT_TYPES else [base]
            for resource_type in targets:
                narrowed = narrow_expression(expression, resource_type) if expression else None
                if expression and narrowed is None:
                    continue
                param = SearchParam(
                    code=definition["code"], type=definition["type"], url=definition.get("url", ""),
                    resource_type=resource_type, expression=narrowed, targets=tuple(definition.get("target", [])),
                    components=components, modifiers=tuple(definition.get("modifier", [])),
                )
                self.by_type.setdefault(resource_type, {})[param.code] = param
                added.append(param)
                if base in _ROOT_TYPES:
                    self.common[param.code] = param
        return added

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        """The parameter `code` of `resource_type`, if defined."""
        return self.by_type.get(resource_type, {}).get(code)

    def for_type(self, resource_type: str) -> dict[str, SearchParam]:
        """All parameters of a resource type by code."""
        return self.by_type.get(resource_type, {})

    def remove_url(self, url: str) -> None:
        """Forget every registration of the definition with this canonical URL."""
        self.version += 1
        for params in self.by_type.values():
            for code in [c for c, p in params.items() if p.url == url]:
                del params[code]
        for code in [c for c, p in self.common.items() if p.url == url]:
            del self.common[code]

    def subsumed(self, resource_type: str) -> dict[str, tuple[str, ...]]:
        """For each parameter of a type, the parameters whose values are always among its own.

        Parameter B holds every value of A when A's expression is a strict subset of the union branches of
        B's, with the same type (and, for composites, the same components): Observation's `combo-code`
        (`code | component.code`) holds every value of `code` and of `component-code`. A store may then keep
        B's entries that A already has only once, and search B over both. References are left out: chains,
        `_has` and includes address one parameter's entries.
        """
        cached = self._subsumed.get(resource_type)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        params = [p for p in self.for_type(resource_type).values() if p.expression and p.type != "reference"]
        found: dict[str, tuple[str, ...]] = {}
        for wide in params:
            branches = set(split_union(wide.expression or ""))
            parts = tuple(c.expression for c in wide.components)
            narrow = tuple(sorted(
                p.code for p in params if p is not wide and p.type == wide.type
                and set(split_union(p.expression or "")) < branches
                and tuple(c.expression for c in p.components) == parts))
            if narrow:
                found[wide.code] = narrow
        self._subsumed[resource_type] = (self.version, found)
        return found

    def by_url(self, url: str) -> list[SearchParam]:
        """Every per-type registration of the definition with this canonical URL."""
        return [p for params in self.by_type.values() for p in params.values() if p.url == url]


def load_definitions() -> list[dict[str, Any]]:
    """The official R4B SearchParameter definitions shipped in resources/data, then CareLoop's own few."""
    out: list[dict[str, Any]] = []
    for name in ("search-parameters.json", "careloop-search-parameters.json"):
        bundle = orjson.loads(pkg.files("resources").joinpath(f"data/{name}").read_bytes())
        out.extend(entry["resource"] for entry in bundle["entry"])
    return out


def default_registry(resource_types: Iterable[str]) -> SearchRegistry:
    """A registry holding every official R4B search parameter for the given resource types."""
    types = sorted(resource_types)
    registry = SearchRegistry()
    for definition in load_definitions():
        registry.add_definition(definition, types)
    return registry
