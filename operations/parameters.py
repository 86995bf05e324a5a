"""Operation input and output as FHIR Parameters: from a query string or a Parameters body, typed accessors.

https://hl7.org/fhir/R4B/operations.html#request
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from resources.errors import Invalid

# what a GET parameter's text becomes in a Parameters part
_PRIMITIVE_KEYS = ("valueString", "valueCode", "valueUri", "valueUrl", "valueCanonical", "valueInteger",
                   "valueBoolean", "valueDecimal", "valueDateTime", "valueDate", "valueId", "valueOid")


@dataclass(frozen=True)
class OperationInput:
    """The parameters of one operation call, each name with its parts in order."""

    parts: tuple[dict[str, Any], ...]
    query: bool = False  # True when built from a query string (values are text)

    @classmethod
    def from_query(cls, pairs: Sequence[tuple[str, str]]) -> OperationInput:
        """GET [base]/...$op?name=value: every value a string part."""
        return cls(tuple({"name": k, "valueString": v} for k, v in pairs if k not in ("_format", "_pretty")), True)

    @classmethod
    def from_body(cls, body: Any, pairs: Sequence[tuple[str, str]] = ()) -> OperationInput:
        """POST with a Parameters resource (query parameters join it)."""
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise Invalid("An operation body must be a Parameters resource", code="structure")
        parts = body.get("parameter") or []
        if not isinstance(parts, list) or not all(isinstance(p, dict) and isinstance(p.get("name"), str)
                                                  for p in parts):
            raise Invalid("Parameters.parameter must be a list of parts with a name", code="structure",
                          expression=("Parameters.parameter",))
        return cls(tuple(parts) + cls.from_query(pairs).parts)

    def _all(self, name: str) -> list[dict[str, Any]]:
        return [p for p in self.parts if p["name"] == name]

    def _one(self, name: str) -> dict[str, Any] | None:
        found = self._all(name)
        if len(found) > 1:
            raise Invalid(f"Parameter '{name}' may be given once", code="value", expression=(name,))
        return found[0] if found else None

    def text(self, name: str) -> str | None:
        """A primitive parameter as text (code, uri, string...)."""
        part = self._one(name)
        if part is None:
            return None
        for key in _PRIMITIVE_KEYS:
            if key in part:
                value = part[key]
                return str(value).lower() if isinstance(value, bool) else str(value)
        raise Invalid(f"Parameter '{name}' must have a primitive value", code="value", expression=(name,))

    def texts(self, name: str) -> list[str]:
        """Every value of a primitive parameter that may repeat."""
        values = []
        for part in self._all(name):
            value = next((part[key] for key in _PRIMITIVE_KEYS if key in part), None)
            if value is None:
                raise Invalid(f"Parameter '{name}' must have a primitive value", code="value", expression=(name,))
            values.append(str(value))
        return values

    def required_text(self, name: str) -> str:
        """A primitive parameter that must be present."""
        value = self.text(name)
        if value is None or value == "":
            raise Invalid(f"Parameter '{name}' is required", code="required", expression=(name,))
        return value

    def integer(self, name: str, minimum: int = 0) -> int | None:
        """A non-negative integer parameter."""
        raw = self.text(name)
        if raw is None:
            return None
        if not raw.lstrip("-").isdigit() or int(raw) < minimum:
            raise Invalid(f"Parameter '{name}' must be an integer of at least {minimum}, not '{raw}'", code="value",
                          expression=(name,))
        return int(raw)

    def boolean(self, name: str) -> bool | None:
        """A boolean parameter."""
        raw = self.text(name)
        if raw is None:
            return None
        if raw not in ("true", "false"):
            raise Invalid(f"Parameter '{name}' must be true or false, not '{raw}'", code="value", expression=(name,))
        return raw == "true"

    def coding(self, name: str) -> dict[str, Any] | None:
        """A Coding parameter (in a query: system|code)."""
        part = self._one(name)
        if part is None:
            return None
        if "valueCoding" in part and isinstance(part["valueCoding"], dict):
            return dict(part["valueCoding"])
        if "valueString" in part and self.query:
            system, sep, code = str(part["valueString"]).rpartition("|")
            return {"system": system, "code": code} if sep else {"code": code}
        raise Invalid(f"Parameter '{name}' must be a Coding", code="value", expression=(name,))

    def codeable_concept(self, name: str) -> dict[str, Any] | None:
        """A CodeableConcept parameter."""
        part = self._one(name)
        if part is None:
            return None
        value = part.get("valueCodeableConcept")
        if not isinstance(value, dict):
            raise Invalid(f"Parameter '{name}' must be a CodeableConcept", code="value", expression=(name,))
        return value

    def resource(self, name: str, resource_type: str) -> dict[str, Any] | None:
        """A resource parameter of a given type."""
        part = self._one(name)
        if part is None:
            return None
        value = part.get("resource")
        if not isinstance(value, dict) or value.get("resourceType") != resource_type:
            raise Invalid(f"Parameter '{name}' must carry a {resource_type} resource", code="value",
                          expression=(name,))
        return value


def parameters(*parts: dict[str, Any] | None) -> dict[str, Any]:
    """A Parameters resource from parts (None parts left out)."""
    return {"resourceType": "Parameters", "parameter": [p for p in parts if p is not None]}


def part(name: str, kind: str, value: Any) -> dict[str, Any] | None:
    """One part `{"name": name, "value<kind>": value}`, or None when value is None."""
    return None if value is None else {"name": name, f"value{kind}": value}
