"""Rewriting of references inside a resource (transaction placeholders and conditional references).

https://hl7.org/fhir/R4B/http.html#trules
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def rewrite_references(value: Any, mapping: Callable[[str], str | None]) -> Any:
    """A copy of value where every Reference.reference (and uri/url value) that mapping knows is replaced."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(item, str) and key in ("reference", "url", "uri", "valueReference", "valueUri",
                                                   "valueUrl", "valueCanonical", "fullUrl"):
                replaced = mapping(item)
                out[key] = replaced if replaced is not None else item
            elif key == "div" and isinstance(item, str):
                out[key] = _rewrite_div(item, mapping)
            else:
                out[key] = rewrite_references(item, mapping)
        return out
    if isinstance(value, list):
        return [rewrite_references(item, mapping) for item in value]
    return value


def _rewrite_div(div: str, mapping: Callable[[str], str | None]) -> str:
    if "urn:uuid:" not in div:
        return div
    start = 0
    while (at := div.find("urn:uuid:", start)) >= 0:
        end = at + len("urn:uuid:")
        while end < len(div) and (div[end].isalnum() or div[end] == "-"):
            end += 1
        replaced = mapping(div[at:end])
        if replaced is not None:
            div = div[:at] + replaced + div[end:]
            end = at + len(replaced)
        start = end
    return div


def collect_references(value: Any, out: set[str]) -> set[str]:
    """Every Reference.reference string inside value."""
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str):
            out.add(ref)
        for item in value.values():
            collect_references(item, out)
    elif isinstance(value, list):
        for item in value:
            collect_references(item, out)
    return out
