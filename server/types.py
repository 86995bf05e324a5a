"""Resource-type checks at the HTTP edge.

https://hl7.org/fhir/R4B/http.html#general
"""

from __future__ import annotations

from resources.errors import NotFound
from resources.models import resource_types


def known_type(name: str) -> str:
    """The name when it is an R4B resource type; 404 not-supported otherwise."""
    if name not in resource_types():
        raise NotFound(f"Unknown resource type '{name}'", code="not-supported")
    return name
