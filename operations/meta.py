"""$meta, $meta-add and $meta-delete: a resource's profiles, tags and security labels, read and changed as sets.

A change is written as a new version through the Repository (docs/decisions.md: "$meta-add and $meta-delete
write a version"), so the caller's write scopes, the patients' Consents, subscriptions and the audit trail see
it like any update. Changing security labels needs write scopes that reach every resource of the type: a
patient (or any caller whose write access depends on the content) may not relabel, not even their own data.
https://hl7.org/fhir/R4B/resource-operation-meta.html
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from operations.context import OperationCall
from operations.parameters import parameters
from resources.errors import Forbidden, Invalid
from resources.guard import current_guard
from resources.search.parse import parse_search
from resources.search.query import SYSTEM

_SETS = ("profile", "tag", "security")
_PAGE = 500  # resources read at a time by a type or system level $meta


def _key(kind: str, item: Any) -> Any:
    """The identity of a member: the URL of a profile, system and code of a tag or label (version, display aside)."""
    if kind == "profile":
        return item
    return (item.get("system"), item.get("code")) if isinstance(item, dict) else None


def _given_meta(call: OperationCall) -> dict[str, Any]:
    part = next((p for p in call.input.parts if p["name"] == "meta"), None)
    meta = part.get("valueMeta") if part is not None else None
    if not isinstance(meta, dict):
        raise Invalid("Parameter 'meta' (a Meta with profiles, tags or security labels) is required",
                      code="required", expression=("meta",))
    for kind in _SETS:
        items = meta.get(kind, [])
        if not isinstance(items, list) or any(
                (kind == "profile" and not isinstance(i, str)) or (kind != "profile" and not (
                    isinstance(i, dict) and isinstance(i.get("code"), str))) for i in items):
            shape = "canonical URLs" if kind == "profile" else "Codings with a code"
            raise Invalid(f"meta.{kind} must be a list of {shape}", code="value", expression=(f"meta.{kind}",))
    return meta


async def meta(call: OperationCall) -> dict[str, Any]:
    """The meta of one resource, or the profiles, tags and labels in use on a type or the whole server."""
    if call.id is not None:
        found = await call.target()
        assert found is not None
        return parameters({"name": "return", "valueMeta": found.get("meta") or {}})
    # only the resources that carry some, found through the index (_profile, _tag, _security present) and read
    # page by page: the cost grows with the labelled resources, not with the whole store (docs/operations-reference.md)
    repository = call.context.repository
    found = []
    for code in ("_profile", "_tag", "_security"):
        query = parse_search(call.resource_type or SYSTEM, [(f"{code}:missing", "false"), ("_count", str(_PAGE))],
                             repository.registry, repository.search_limits).query
        while True:
            page = await repository.search(query)
            found.extend(page.resources)
            if page.next_cursor is None:
                break
            query = replace(query, cursor=int(page.next_cursor))
    union: dict[str, dict[Any, Any]] = {k: {} for k in _SETS}
    for resource in found:
        stored = orjson.loads(resource.body or b"{}").get("meta") or {}
        for kind in _SETS:
            for item in stored.get(kind) or []:
                union[kind].setdefault(_key(kind, item), item)
    return parameters({"name": "return", "valueMeta": {k: list(v.values()) for k, v in union.items() if v}})


async def _change(call: OperationCall, adding: bool) -> dict[str, Any]:
    assert call.resource_type is not None and call.id is not None
    given = _given_meta(call)
    repository = call.context.repository
    resource = await call.target()
    assert resource is not None
    current = dict(resource.get("meta") or {})
    if given.get("security"):
        guard = current_guard()
        if guard is not None and guard.restricts(call.resource_type, "u", consent=False):
            raise Forbidden("Security labels are changed only by clinicians and administrators whose write scopes "
                            f"reach every {call.resource_type}", code="forbidden", expression=("meta.security",))
    for kind in _SETS:
        have = list(current.get(kind) or [])
        keys = [_key(kind, i) for i in have]
        for item in given.get(kind) or []:
            key = _key(kind, item)
            if adding and key not in keys:
                have.append(item)
                keys.append(key)
            elif not adding and key in keys:
                del have[keys.index(key)]
                keys.remove(key)
        if have:
            current[kind] = have
        else:
            current.pop(kind, None)
    if current != (resource.get("meta") or {}):
        stored = await repository.update(call.resource_type, call.id, {**resource, "meta": current})
        current = orjson.loads(stored.resource.body or b"{}").get("meta") or {}
    return parameters({"name": "return", "valueMeta": current})


async def meta_add(call: OperationCall) -> dict[str, Any]:
    """Add profiles, tags and security labels (sets: nothing is added twice)."""
    return await _change(call, adding=True)


async def meta_delete(call: OperationCall) -> dict[str, Any]:
    """Remove profiles, tags and security labels."""
    return await _change(call, adding=False)
