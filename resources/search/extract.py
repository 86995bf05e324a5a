"""Conversion of FHIRPath results into typed index values, one function per parameter type.

https://hl7.org/fhir/R4B/search.html#ptypes
"""

from __future__ import annotations

from typing import Any

from resources.search.dates import MAX_MS, MIN_MS, date_range
from resources.search.normalize import normalize_string

TokenValue = tuple[str | None, str | None, str | None]  # system, code, normalised text
ReferenceValue = tuple[str | None, str | None, str | None]  # target type, target id, absolute or canonical url
QuantityValue = tuple[str | None, str | None, float]  # system, code (or unit), value

_STRING_PARTS = ("text", "family", "given", "prefix", "suffix", "line", "city", "district", "state",
                 "postalCode", "country")


def tokens(value: Any) -> list[TokenValue]:
    """Token index values of Coding, CodeableConcept, Identifier, ContactPoint, code, boolean or string."""
    if isinstance(value, bool):
        return [(None, "true" if value else "false", None)]
    if isinstance(value, str):
        return [(None, value, None)]
    if isinstance(value, int | float):
        return [(None, str(value), None)]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and "code" not in value and "value" not in value):
        out: list[TokenValue] = []
        text = value.get("text")
        for coding in value.get("coding", []):
            if isinstance(coding, dict):
                out.extend(tokens(coding))
        if isinstance(text, str):
            out.append((None, None, normalize_string(text)))
        return out
    if "code" in value or "system" in value and "value" not in value:
        display = value.get("display")
        return [(value.get("system"), value.get("code"), normalize_string(display) if display else None)]
    if "value" in value or "system" in value:  # Identifier or ContactPoint
        type_text = None
        kind = value.get("type")
        if isinstance(kind, dict) and isinstance(kind.get("text"), str):
            type_text = normalize_string(kind["text"])
        system = value.get("system")
        if "use" in value and system in ("phone", "fax", "email", "pager", "url", "sms", "other"):
            system = None  # ContactPoint.system is a kind, not a namespace
        return [(system, str(value.get("value")) if "value" in value else None, type_text)]
    return []


def identifier_types(value: Any) -> list[tuple[str | None, str, str]]:
    """(type system, type code, value) of an Identifier with a coded type (for :of-type)."""
    if not isinstance(value, dict) or not isinstance(value.get("value"), str):
        return []
    kind = value.get("type")
    codings = kind.get("coding", []) if isinstance(kind, dict) else []
    return [(c.get("system"), c["code"], value["value"]) for c in codings
            if isinstance(c, dict) and isinstance(c.get("code"), str)]


def strings(value: Any) -> list[str]:
    """String index values: the string itself, or the parts of a HumanName or Address."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        out: list[str] = []
        for key in _STRING_PARTS:
            part = value.get(key)
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, list):
                out.extend(p for p in part if isinstance(p, str))
        return out
    return []


def references(value: Any) -> list[ReferenceValue]:
    """Reference index values from a Reference or a canonical/uri string."""
    if isinstance(value, str):
        return [(None, None, value.split("|", 1)[0])]
    if not isinstance(value, dict):
        return []
    ref = value.get("reference")
    if not isinstance(ref, str) or ref.startswith("#"):
        return []
    parts = ref.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and "://" not in ref and "?" not in ref:
        return [(parts[-2], parts[-1], None)]
    if "://" in ref and len(parts) >= 2:
        return [(parts[-2], parts[-1], ref)]
    return [(None, None, ref)]


def reference_identifiers(value: Any) -> list[TokenValue]:
    """The logical identifier of a Reference (for the :identifier modifier)."""
    if isinstance(value, dict) and isinstance(value.get("identifier"), dict):
        ident = value["identifier"]
        return [(ident.get("system"), ident.get("value"), None)]
    return []


def dates(value: Any) -> list[tuple[int, int]]:
    """Date ranges from date, dateTime, instant, Period or Timing."""
    if isinstance(value, str):
        found = date_range(value)
        return [found] if found else []
    if not isinstance(value, dict):
        return []
    if "start" in value or "end" in value:
        start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
        return [(start[0] if start else MIN_MS, end[1] if end else MAX_MS)]
    out: list[tuple[int, int]] = []
    for event in value.get("event", []):
        out.extend(dates(event))
    bounds = value.get("repeat", {}).get("boundsPeriod") if isinstance(value.get("repeat"), dict) else None
    if bounds:
        out.extend(dates(bounds))
    return out


def numbers(value: Any) -> list[float]:
    """Number index values."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict) and isinstance(value.get("value"), int | float):
        return [float(value["value"])]
    return []


def quantities(value: Any) -> list[QuantityValue]:
    """Quantity index values (value with system and code, falling back to the unit)."""
    if isinstance(value, dict) and isinstance(value.get("value"), int | float) and not isinstance(
            value.get("value"), bool):
        code = value.get("code") or value.get("unit")
        return [(value.get("system"), code, float(value["value"]))]
    if isinstance(value, dict) and ("low" in value or "high" in value):  # Range
        return [q for key in ("low", "high") for q in quantities(value.get(key))]
    return []


def uris(value: Any) -> list[str]:
    """Uri index values."""
    return [value] if isinstance(value, str) else []
