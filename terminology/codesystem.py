"""A CodeSystem resource indexed for look-up and subsumption (nested concepts and parent/child properties).

https://hl7.org/fhir/R4B/codesystem.html
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Concept:
    """One concept: code, display, definition, designations, properties and its direct parents."""

    code: str
    display: str | None
    definition: str | None
    designations: list[dict[str, Any]]
    properties: list[dict[str, Any]]
    parents: set[str] = field(default_factory=set)
    children: set[str] = field(default_factory=set)

    @property
    def inactive(self) -> bool:
        """True when a property marks the concept inactive (status retired or inactive=true)."""
        for prop in self.properties:
            if prop.get("code") == "inactive" and prop.get("valueBoolean") is True:
                return True
            if prop.get("code") == "status" and prop.get("valueCode") in ("retired", "inactive"):
                return True
        return False

    @property
    def abstract(self) -> bool:
        """True when the concept is marked abstract / not selectable."""
        for prop in self.properties:
            if prop.get("code") in ("abstract", "notSelectable") and prop.get("valueBoolean") is True:
                return True
        return False


@dataclass
class CodeSystemIndex:
    """Every concept of a CodeSystem by code, with the is-a graph."""

    url: str
    version: str | None
    name: str | None
    content: str
    case_sensitive: bool
    concepts: dict[str, Concept]
    resource: dict[str, Any]

    @classmethod
    def of(cls, resource: dict[str, Any]) -> CodeSystemIndex:
        """Index a CodeSystem resource."""
        concepts: dict[str, Concept] = {}
        _collect(resource.get("concept") or [], None, concepts)
        for concept in concepts.values():  # hierarchy given by properties rather than nesting
            for prop in concept.properties:
                target = prop.get("valueCode")
                if prop.get("code") == "parent" and target in concepts:
                    concept.parents.add(target)
                    concepts[target].children.add(concept.code)
                elif prop.get("code") == "child" and target in concepts:
                    concept.children.add(target)
                    concepts[target].parents.add(concept.code)
        return cls(resource.get("url", ""), resource.get("version"), resource.get("name"),
                   resource.get("content", "complete"), bool(resource.get("caseSensitive", True)),
                   concepts, resource)

    def find(self, code: str) -> Concept | None:
        """The concept with this code (case-insensitively when the system says so)."""
        found = self.concepts.get(code)
        if found is None and not self.case_sensitive:
            lowered = code.lower()
            found = next((c for k, c in self.concepts.items() if k.lower() == lowered), None)
        return found

    def descendants(self, code: str) -> set[str]:
        """Every concept below `code` (not itself)."""
        return self._closure(code, "children")

    def ancestors(self, code: str) -> set[str]:
        """Every concept above `code` (not itself)."""
        return self._closure(code, "parents")

    def _closure(self, code: str, direction: str) -> set[str]:
        out: set[str] = set()
        stack = list(getattr(self.concepts[code], direction)) if code in self.concepts else []
        while stack:
            current = stack.pop()
            if current not in out:
                out.add(current)
                stack.extend(getattr(self.concepts[current], direction))
        return out

    def subsumes(self, a: str, b: str) -> str:
        """The $subsumes outcome of a and b: equivalent, subsumes, subsumed-by or not-subsumed."""
        if a == b:
            return "equivalent"
        if b in self.descendants(a):
            return "subsumes"
        if a in self.descendants(b):
            return "subsumed-by"
        return "not-subsumed"

    def property_values(self, concept: Concept, code: str) -> Iterator[str]:
        """The values of one property of a concept, as strings (for `=` filters)."""
        for prop in concept.properties:
            if prop.get("code") == code:
                for key, value in prop.items():
                    if key.startswith("value"):
                        yield value["code"] if isinstance(value, dict) and "code" in value else str(value).lower() \
                            if isinstance(value, bool) else str(value)


def _collect(items: list[dict[str, Any]], parent: str | None, into: dict[str, Concept]) -> None:
    for item in items:
        code = item.get("code")
        if not isinstance(code, str):
            continue
        concept = into.get(code)
        if concept is None:
            concept = Concept(code, item.get("display"), item.get("definition"), item.get("designation") or [],
                              item.get("property") or [])
            into[code] = concept
        if parent is not None:
            concept.parents.add(parent)
            into[parent].children.add(code)
        _collect(item.get("concept") or [], code, into)
