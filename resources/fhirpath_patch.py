"""FHIRPath Patch: a Parameters resource of add, insert, delete, replace and move operations.

Paths are the FHIRPath subset that names elements: dotted element names, `[n]` indexes, `first()`, `last()`
and `where(element='literal')` filters. https://hl7.org/fhir/R4B/fhirpatch.html
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from resources.elements import element_info
from resources.errors import Invalid, Unprocessable
from resources.search.paths import split_steps

_STEP = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?P<index>\d+)\])?$")
_WHERE = re.compile(
    r"where\(\s*(?P<field>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*'(?P<value>[^']*)'\s*\)(?:\[(?P<index>\d+)\])?$")
_INDEX = re.compile(r"\[(?P<index>\d+)\]$")


@dataclass
class Node:
    """A located element: its container, its key (or index) there, and its schema type."""

    container: Any
    key: Any
    type: str | None

    @property
    def value(self) -> Any:
        return self.container[self.key]


def _child(node: Node, name: str) -> list[Node]:
    value = node.value
    if not isinstance(value, dict):
        return []
    info = element_info(node.type or "", name)
    key = name
    if key not in value:  # a choice element: deceased -> deceasedBoolean
        key = next((k for k in value if k.startswith(name) and k[len(name):len(name) + 1].isupper()), name)
        info = element_info(node.type or "", key) if key != name else info
    child_type = info[1] if info else None
    found = value.get(key)
    if isinstance(found, list):
        return [Node(found, i, child_type) for i in range(len(found))]
    return [Node(value, key, child_type)] if found is not None else []


def locate(resource: dict[str, Any], path: str) -> list[Node]:
    """The elements a patch path selects, with where they live."""
    steps = split_steps(path.strip())
    if not steps or steps[0] != resource.get("resourceType"):
        raise Invalid(f"FHIRPath Patch path '{path}' must start with {resource.get('resourceType')}", code="value")
    nodes = [Node({"root": resource}, "root", resource.get("resourceType"))]
    for step in steps[1:]:
        if step in ("first()", "last()"):
            nodes = nodes[:1] if step == "first()" else nodes[-1:]
        elif (match := _WHERE.match(step)) is not None:
            field, literal = match.group("field"), match.group("value")
            nodes = [n for n in nodes if isinstance(n.value, dict) and str(n.value.get(field)) == literal]
            if match.group("index") is not None:
                nodes = nodes[int(match.group("index")):][:1]
        elif (match := _INDEX.fullmatch(step)) is not None:
            nodes = nodes[int(match.group("index")):][:1]
        elif (match := _STEP.match(step)) is not None:
            nodes = [child for n in nodes for child in _child(n, match.group("name"))]
            if match.group("index") is not None:
                nodes = nodes[int(match.group("index")):][:1]
        else:
            raise Invalid(f"Unsupported FHIRPath Patch path step '{step}' in '{path}'", code="not-supported")
    return nodes


def _value(part: dict[str, Any]) -> tuple[Any, str | None]:
    """A value[x] part's JSON value and type suffix, or a complex value built from nested parts."""
    for key, value in part.items():
        if key.startswith("value") and key != "value":
            return value, key[len("value"):]
    if "part" in part:
        built: dict[str, Any] = {}
        for sub in part["part"]:
            value, _ = _value(sub)
            name = sub.get("name")
            if name in built:  # a repeated part makes a list
                existing = built[name]
                built[name] = [*(existing if isinstance(existing, list) else [existing]), value]
            else:
                built[name] = value
        return built, None
    raise Invalid("A FHIRPath Patch value part has no value", code="required")


def _parts(operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p.get("name"): p for p in operation.get("part", []) if isinstance(p, dict)}


def _one(nodes: list[Node], what: str, path: str) -> Node:
    if len(nodes) != 1:
        raise Unprocessable(f"FHIRPath Patch {what}: path '{path}' selects {len(nodes)} elements, not one")
    return nodes[0]


def _add(resource: dict[str, Any], parts: dict[str, dict[str, Any]], path: str) -> None:
    target = _one(locate(resource, path), "add", path)
    holder = target.value
    name = parts.get("name", {}).get("valueString")
    if not isinstance(holder, dict) or not name:
        raise Invalid("FHIRPath Patch add needs a path to an element and a name", code="required")
    value, suffix = _value(parts.get("value", {}))
    info = element_info(target.type or "", name)
    key = name
    if info is None and suffix:
        key = name + suffix[0].upper() + suffix[1:]
        info = element_info(target.type or "", key)
    if info is not None and info[0]:
        holder.setdefault(key, []).append(value)
    elif key in holder:
        raise Unprocessable(f"FHIRPath Patch add: {path}.{name} already has a value")
    else:
        holder[key] = value


def _apply(resource: dict[str, Any], operation: dict[str, Any]) -> None:
    parts = _parts(operation)
    kind = parts.get("type", {}).get("valueCode")
    path = parts.get("path", {}).get("valueString")
    if not kind or not path:
        raise Invalid("Each FHIRPath Patch operation needs a type and a path", code="required")
    if kind == "add":
        _add(resource, parts, path)
    elif kind == "delete":
        nodes = locate(resource, path)
        if len(nodes) > 1:
            raise Unprocessable(f"FHIRPath Patch delete: path '{path}' selects {len(nodes)} elements")
        for node in nodes:
            del node.container[node.key]
    elif kind == "replace":
        node = _one(locate(resource, path), "replace", path)
        node.container[node.key] = _value(parts.get("value", {}))[0]
    elif kind == "insert":
        nodes = locate(resource, path)
        listed = nodes[0].container if nodes and isinstance(nodes[0].container, list) else None
        index = parts.get("index", {}).get("valueInteger")
        if listed is None or not isinstance(index, int) or not 0 <= index <= len(listed):
            raise Unprocessable(f"FHIRPath Patch insert: '{path}' is not a list or index {index} is out of range")
        listed.insert(index, _value(parts.get("value", {}))[0])
    elif kind == "move":
        nodes = locate(resource, path)
        listed = nodes[0].container if nodes and isinstance(nodes[0].container, list) else None
        source = parts.get("source", {}).get("valueInteger")
        destination = parts.get("destination", {}).get("valueInteger")
        if listed is None or not isinstance(source, int) or not isinstance(destination, int) or not (
                0 <= source < len(listed) and 0 <= destination < len(listed)):
            raise Unprocessable(f"FHIRPath Patch move: '{path}' is not a list or the indexes are out of range")
        listed.insert(destination, listed.pop(source))
    else:
        raise Invalid(f"Unknown FHIRPath Patch operation type '{kind}'", code="value")
    _drop_empty(resource)


def _drop_empty(value: Any) -> None:
    # a delete can leave an empty list or object behind, which FHIR JSON does not allow
    if isinstance(value, dict):
        for key in list(value):
            _drop_empty(value[key])
            if value[key] in ([], {}):
                del value[key]
    elif isinstance(value, list):
        for item in value:
            _drop_empty(item)


def apply_fhirpath_patch(resource: dict[str, Any], parameters: Any) -> dict[str, Any]:
    """A patched copy of the resource; Invalid for a malformed patch, Unprocessable when it cannot apply."""
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise Invalid("A FHIRPath Patch is a Parameters resource", code="structure")
    operations = [p for p in parameters.get("parameter", []) if isinstance(p, dict) and p.get("name") == "operation"]
    if not operations:
        raise Invalid("The FHIRPath Patch has no operation parameters", code="required")
    result = copy.deepcopy(resource)
    for operation in operations:
        _apply(result, operation)
    return result
