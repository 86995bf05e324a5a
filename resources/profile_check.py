"""A profile's cardinality and fixed/pattern values checked against a resource: the part of profile
validation that needs no FHIRPath engine and no terminology (docs/operations-reference.md says what is left out).

https://hl7.org/fhir/R4B/profiling.html#cardinality
"""

from __future__ import annotations

from typing import Any

from resources.errors import Issue

Located = tuple[str, Any]  # (FHIRPath expression with indexes, value)


def _keys(node: dict[str, Any], name: str) -> list[str]:
    """The JSON keys an element name stands for (a choice `value[x]` is valueQuantity, valueString...)."""
    if name.endswith("[x]"):
        stem = name[:-3]
        return [k for k in node if k.startswith(stem) and k[len(stem):len(stem) + 1].isupper()]
    return [name] if name in node else []


def _children(located: list[Located], name: str) -> list[Located]:
    found: list[Located] = []
    for expr, node in located:
        if not isinstance(node, dict):
            continue
        for key in _keys(node, name):
            value = node[key]
            if isinstance(value, list):
                found.extend((f"{expr}.{key}[{i}]", item) for i, item in enumerate(value))
            else:
                found.append((f"{expr}.{key}", value))
    return found


def locate(resource: dict[str, Any], path: str) -> list[Located]:
    """Every value at an element path (Patient.name.family), each with its expression."""
    segments = path.split(".")
    located: list[Located] = [(segments[0], resource)]
    for name in segments[1:]:
        located = _children(located, name)
    return located


def _matches(pattern: Any, value: Any) -> bool:
    """A pattern holds when every part of it is in the value (lists: each pattern item in some value item)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_matches(v, value.get(k)) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches(p, v) for v in value) for p in pattern)
    return bool(pattern == value)


def _value(element: dict[str, Any], prefix: str) -> tuple[bool, Any]:
    for key, value in element.items():
        if key.startswith(prefix) and key[len(prefix):len(prefix) + 1].isupper():
            return True, value
    return False, None


def check(resource: dict[str, Any], elements: list[dict[str, Any]], profile: str) -> list[Issue]:
    """Issues of min/max and fixed/pattern values of the profile's elements; slices are not looked at."""
    issues: list[Issue] = []
    resource_type = resource.get("resourceType")
    for element in elements:
        path, element_id = element.get("path"), element.get("id") or element.get("path") or ""
        if not isinstance(path, str) or "." not in path or ":" in element_id or path.split(".")[0] != resource_type:
            continue  # the root, and slices (their discriminators need FHIRPath): not checked here
        parent_path, name = path.rsplit(".", 1)
        for parent_expr, parent in locate(resource, parent_path):
            found = _children([(parent_expr, parent)], name)
            count, where = len(found), f"{parent_expr}.{name.removesuffix('[x]')}"  # FHIRPath names a choice so
            low, high = element.get("min"), element.get("max")
            if isinstance(low, int) and count < low:
                issues.append(Issue("required", f"{where}: at least {low} required by {profile}, {count} found",
                                    expression=(where,)))
            if isinstance(high, str) and high.isdigit() and count > int(high):
                issues.append(Issue("structure", f"{where}: at most {high} allowed by {profile}, {count} found",
                                    expression=(where,)))
            for kind, same in (("fixed", lambda want, got: want == got), ("pattern", _matches)):
                present, wanted = _value(element, kind)
                if not present:
                    continue
                for expr, value in found:
                    if not same(wanted, value):
                        issues.append(Issue("value", f"{expr} must be {'exactly' if kind == 'fixed' else 'like'} "
                                            f"{wanted!r} ({kind} value of {profile})", expression=(expr,)))
    return issues
