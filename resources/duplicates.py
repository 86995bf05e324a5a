"""One record per patient: a create whose identifier of a configured system already belongs to a stored Patient
is refused (409 naming it) or answered with that record, as a conditional create would (DOMAIN.md §5).

https://hl7.org/fhir/R4B/http.html#ccreate
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from resources.errors import Conflict, Issue

MODES = ("refuse", "merge")


@dataclass(frozen=True)
class DuplicateRule:
    """The identifier systems that name one person only, per resource type, and what a duplicate create gets."""

    systems: frozenset[str]
    mode: str = "refuse"  # refuse: 409; merge: 200 with the existing record, nothing written
    resource_type: str = "Patient"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")

    def keys(self, resource_type: str, body: Any) -> list[tuple[str, str]]:
        """The (system, value) identifiers of a body being created that must be unique."""
        if resource_type != self.resource_type or not isinstance(body, dict) or not self.systems:
            return []
        found = []
        for identifier in body.get("identifier") or []:
            if isinstance(identifier, dict) and identifier.get("system") in self.systems and isinstance(
                    identifier.get("value"), str) and identifier["value"]:
                found.append((identifier["system"], identifier["value"]))
        return found

    def criteria(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The search that finds the stored records holding any of these identifiers."""
        escaped = (f"{_escape(system)}|{_escape(value)}" for system, value in keys)
        return [("identifier", ",".join(escaped))]

    def refusal(self, resource_type: str, keys: Sequence[tuple[str, str]], existing: Sequence[str]) -> Conflict:
        """409 naming the stored record(s) the create would duplicate."""
        names = ", ".join(f"{resource_type}/{id_}" for id_ in existing)
        shown = ", ".join(f"{s}|{v}" for s, v in keys)
        text = f"A {resource_type} with identifier {shown} already exists: {names}; update it or use $merge"
        return Conflict(text, code="duplicate", issues=(
            Issue("duplicate", text, expression=(f"{resource_type}.identifier",)),
            *(Issue("duplicate", f"{resource_type}/{id_}", severity="information") for id_ in existing)))


def _escape(text: str) -> str:
    # a search value's own separators must not split it (https://hl7.org/fhir/R4B/search.html#escaping)
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")
