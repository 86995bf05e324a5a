"""Resource-type checks at the HTTP edge.

https://hl7.org/fhir/R4B/http.html#general
"""

from __future__ import annotations

from functools import cache

from resources.errors import NotFound
from resources.models import resource_types


@cache
def _by_folded_name() -> dict[str, str]:
    return {name.lower(): name for name in resource_types()}


def type_hint(name: str) -> str:
    """A suggestion for a misspelt resource type (type names are case-sensitive), or an empty string."""
    found = _by_folded_name().get(name.lower())
    return f"; did you mean '{found}'? Resource type names are case-sensitive" if found and found != name else ""


def known_type(name: str) -> str:
    """The name when it is an R4B resource type; 404 not-supported otherwise."""
    if name not in resource_types():
        raise NotFound(f"Unknown resource type '{name}'{type_hint(name)}", code="not-supported")
    return name
