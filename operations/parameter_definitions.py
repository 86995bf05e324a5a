"""One OperationDefinition.parameter, as every shipped OperationDefinition writes them.

https://hl7.org/fhir/R4B/operationdefinition.html
"""

from __future__ import annotations

from typing import Any


def param(name: str, use: str, low: int, high: str, kind: str | None, doc: str,
          parts: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """A parameter with its use, cardinality, type (None for a part holder), documentation and parts."""
    out: dict[str, Any] = {"name": name, "use": use, "min": low, "max": high, "documentation": doc}
    if kind is not None:
        out["type"] = kind
    if parts:
        out["part"] = list(parts)
    return out
