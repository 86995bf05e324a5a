"""PATCH documents: JSON Patch (RFC 6902), JSON Merge Patch (RFC 7396) and, through resources.fhirpath_patch,
FHIRPath Patch.

https://hl7.org/fhir/R4B/http.html#patch, https://www.rfc-editor.org/rfc/rfc6902 and
https://www.rfc-editor.org/rfc/rfc7396
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from resources.errors import Invalid, Unprocessable
from resources.fhirpath_patch import apply_fhirpath_patch

_OPS = ("add", "remove", "replace", "move", "copy", "test")


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise Invalid(f"Invalid JSON pointer '{path}'", code="value")
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, for_add: bool) -> int:
    if token == "-" and for_add:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise Unprocessable(f"Array index '{token}' is not a number")
    index = int(token)
    limit = len(container) if for_add else len(container) - 1
    if index > limit:
        raise Unprocessable(f"Array index {index} is out of bounds")
    return index


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for token in parts[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise Unprocessable(f"Path segment '{token}' does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, for_add=False)]
        else:
            raise Unprocessable(f"Path segment '{token}' does not exist")
    return node


def _get(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise Unprocessable(f"Path '/{'/'.join(parts)}' does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_add=False)]
    raise Unprocessable(f"Path '/{'/'.join(parts)}' does not exist")


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _parent(doc, parts)
    if isinstance(parent, dict):
        parent[parts[-1]] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, parts[-1], for_add=True), value)
    else:
        raise Unprocessable(f"Cannot add to a non-container at '/{'/'.join(parts)}'")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise Unprocessable("Cannot remove the whole document")
    parent = _parent(doc, parts)
    if isinstance(parent, dict):
        if parts[-1] not in parent:
            raise Unprocessable(f"Path '/{'/'.join(parts)}' does not exist")
        return parent.pop(parts[-1])
    if isinstance(parent, list):
        return parent.pop(_index(parent, parts[-1], for_add=False))
    raise Unprocessable(f"Path '/{'/'.join(parts)}' does not exist")


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _apply_one(doc: Any, op: dict[str, Any]) -> Any:
    name = op.get("op")
    parts = _pointer(op.get("path"))
    if name in ("add", "replace", "test") and "value" not in op:
        raise Invalid(f"JSON Patch operation '{name}' needs a value", code="required")
    if name == "add":
        return _add(doc, parts, copy.deepcopy(op["value"]))
    if name == "remove":
        _remove(doc, parts)
        return doc
    if name == "replace":
        _get(doc, parts)
        if not parts:
            return copy.deepcopy(op["value"])
        _remove(doc, parts)
        return _add(doc, parts, copy.deepcopy(op["value"]))
    if name in ("move", "copy"):
        source = _pointer(op.get("from"))
        if name == "move" and parts[: len(source)] == source and parts != source:
            raise Unprocessable("Cannot move a value into one of its own children")
        value = _remove(doc, source) if name == "move" else copy.deepcopy(_get(doc, source))
        return _add(doc, parts, value)
    if name == "test":
        if not _equal(_get(doc, parts), op["value"]):
            raise Unprocessable(f"JSON Patch test failed at '{op.get('path')}'")
        return doc
    raise Invalid(f"Unknown JSON Patch operation '{name}'; expected one of {', '.join(_OPS)}", code="value")


def apply_json_patch(doc: Any, patch: Any) -> Any:
    """A patched copy of doc; raises Invalid for a malformed patch, Unprocessable when it cannot apply."""
    if not isinstance(patch, list):
        raise Invalid("A JSON Patch document must be a JSON array of operations", code="structure")
    result = copy.deepcopy(doc)
    for op in patch:
        if not isinstance(op, dict):
            raise Invalid("Each JSON Patch operation must be an object", code="structure")
        result = _apply_one(result, op)
    return result


@dataclass(frozen=True)
class MergePatch:
    """A JSON Merge Patch document: its shape alone cannot tell it from a FHIRPath Patch, its media type can."""

    document: dict[str, Any]


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(merged.get(key), value)
    return merged


def apply_merge_patch(doc: dict[str, Any], patch: MergePatch) -> dict[str, Any]:
    """A merged copy of doc (RFC 7396 section 2): null removes a member, objects merge, anything else replaces."""
    if not isinstance(patch.document, dict):
        raise Invalid("A JSON Merge Patch of a resource must be a JSON object", code="structure")
    merged: dict[str, Any] = _merge(doc, patch.document)
    return merged


def apply_patch(resource: dict[str, Any], patch: Any) -> Any:
    """Apply a JSON Patch (an array), a JSON Merge Patch or a FHIRPath Patch (a Parameters resource)."""
    if isinstance(patch, MergePatch):
        return apply_merge_patch(resource, patch)
    if isinstance(patch, dict) and patch.get("resourceType") == "Parameters":
        return apply_fhirpath_patch(resource, patch)
    return apply_json_patch(resource, patch)
