"""Rewriting of references inside transaction resources (placeholder ids and conditional references).

R4B asks servers to replace every matching link in the bundle, in references, uri-typed elements and the
narrative, so the rewrite works on the serialised JSON in one pass. https://hl7.org/fhir/R4B/http.html#trules
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from resources.elements import resource_type_names

_URN = re.compile(rb"urn:(?:uuid|oid):[0-9A-Za-z\-.]+")
_CONDITIONAL = re.compile(rb'"reference":"([A-Z][A-Za-z]+\?[^"]*)"')


class Rewriter:
    """Replaces placeholder ids, absolute fullUrls and conditional references in serialised JSON."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping
        self._urns = {k.encode(): v.encode() for k, v in mapping.items() if k.startswith("urn:")}
        self._others = [(b'"' + k.encode() + b'"', b'"' + v.encode() + b'"')
                        for k, v in mapping.items() if not k.startswith("urn:")]

    def rewrite(self, blob: bytes) -> bytes:
        """The JSON bytes with every known link replaced."""
        if self._urns and b"urn:" in blob:
            blob = _URN.sub(lambda m: self._urns.get(m.group(0), m.group(0)), blob)
        for key, value in self._others:
            if key in blob:
                blob = blob.replace(key, value)
        return blob


def rewrite_blob(resources: list[Any], mapping: dict[str, str]) -> list[Any]:
    """Copies of the resources where every placeholder or conditional reference in mapping is replaced."""
    result: list[Any] = orjson.loads(Rewriter(mapping).rewrite(orjson.dumps(resources)))
    return result


def conditional_references(resource: dict[str, Any]) -> list[str]:
    """The conditional references (Type?criteria) a resource holds."""
    found = {m.group(1).decode() for m in _CONDITIONAL.finditer(orjson.dumps(resource))}
    return sorted(r for r in found if r.split("?", 1)[0] in resource_type_names())
