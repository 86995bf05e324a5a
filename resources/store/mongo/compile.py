"""Compiling the search query model to MongoDB filters over the envelope documents (a pure function).

Index entries live in typed arrays of each current-version document (`x.tok`, `x.str`, ...), one element per
entry with the parameter code in `p`; a filter is an `$elemMatch` on its array. Chains and `_has` become
`Subquery` markers: the store runs the inner query first and puts the ids it finds in their place.
https://hl7.org/fhir/R4B/search.html, https://www.mongodb.com/docs/manual/reference/operator/query/elemMatch/
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from resources.search.codesets import CANONICAL_SYSTEM
from resources.search.dates import MAX_MS
from resources.search.query import (
    SYSTEM,
    CompositeValue,
    Filter,
    RangeValue,
    ReferenceValue,
    SearchQuery,
    Sort,
    StringValue,
    TokenValue,
)
from resources.store.protocol import GroupKey, Measure

ARRAYS = {"token": "tok", "string": "str", "reference": "ref", "date": "dt", "number": "num", "quantity": "qty",
          "uri": "uri", "composite": "cmp"}
_NEVER: dict[str, Any] = {"_id": {"$in": []}}
_ALWAYS: dict[str, Any] = {}


@dataclass(frozen=True)
class Subquery:
    """Resources of `resource_type` matching `filters`; for _has, what they point at through `code`."""

    resource_type: str
    filters: tuple[Filter, ...]
    code: str = ""
    target_type: str | None = None


def _escape(text: str) -> str:
    return re.escape(text)


def _both(low: str, low_cond: dict[str, Any], high: str, high_cond: dict[str, Any]) -> dict[str, Any]:
    # one field (a number's single value) takes both operators in one condition
    if low == high:
        return {low: {**low_cond, **high_cond}}
    return {low: low_cond, high: high_cond}


def _range(value: RangeValue, low: str, high: str) -> dict[str, Any]:
    """The prefix semantics of search.html#prefix on an entry holding [low, high]."""
    a, b = value.low, value.high
    if value.prefix == "eq":
        return _both(low, {"$gte": a}, high, {"$lte": b})
    if value.prefix == "ap":
        margin = max((b - a) * 0.1, abs(a) * 0.1 if low == "v" else 86_400_000.0)
        return _both(low, {"$lte": b + margin}, high, {"$gte": a - margin})
    conditions: dict[str, dict[str, Any]] = {
        "ne": {"$or": [{low: {"$lt": a}}, {high: {"$gt": b}}]},
        "gt": {high: {"$gt": b}},
        "lt": {low: {"$lt": a}},
        "ge": {high: {"$gte": a}},
        "le": {low: {"$lte": b}},
        "sa": {low: {"$gt": b}},
        "eb": {high: {"$lt": a}},
    }
    return dict(conditions[value.prefix])


def _token(value: TokenValue) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if value.code is not None:
        out["c"] = value.code
    if not value.any_system:
        out["s"] = value.system
    return out


def _element(flt: Filter, value: Any) -> dict[str, Any]:
    """The $elemMatch condition of one value (without the parameter code)."""
    if isinstance(value, CompositeValue):
        cond: dict[str, Any] = {"c1": value.first.code}
        if not value.first.any_system:
            cond["s1"] = value.first.system
        second = value.second
        if isinstance(second, TokenValue):
            cond["c2"] = second.code
            if not second.any_system and second.system is not None:
                cond["s2"] = second.system
        elif isinstance(second, StringValue):
            cond["c2"] = {"$regex": "^" + _escape(second.normalized)}
        elif isinstance(second, ReferenceValue):
            cond["c2"] = second.id
        elif isinstance(second, RangeValue):
            cond.update(_range(second, "lo", "hi"))
            if second.system:
                cond["s2"] = second.system
            if second.code:
                cond["c2"] = second.code
        return cond
    if flt.type == "token" or flt.modifier == "identifier":
        if flt.modifier == "text":
            return {"t": {"$regex": "^" + _escape(value.code or ""), "$options": "i"}}
        return _token(value)
    if flt.type == "string":
        if flt.modifier == "exact":
            return {"e": value.text}
        if flt.modifier == "contains":
            return {"n": {"$regex": _escape(value.normalized)}}
        return {"n": {"$regex": "^" + _escape(value.normalized)}}
    if flt.type == "reference":
        ref: dict[str, Any] = {"i": value.id}
        if value.type:
            ref["t"] = value.type
        if value.url or (value.type is None and value.id and (value.id.startswith("#") or ":" in value.id)):
            return {"$or": [ref, {"u": value.url or value.id}]}
        return ref
    if flt.type == "date":
        return _range(value, "lo", "hi")
    if flt.type in ("number", "quantity"):
        cond = _range(value, "v", "v")
        if flt.type == "quantity" and isinstance(value, RangeValue):
            cond["s"] = value.system if value.system else {"$ne": CANONICAL_SYSTEM}
            if value.code:
                cond["c"] = value.code
        return cond
    if flt.type == "uri":
        if flt.modifier == "below":
            return {"v": {"$regex": "^" + _escape(value.uri)}}
        if flt.modifier == "above":
            return {"v": {"$in": [value.uri[:n] for n in range(1, len(value.uri) + 1)]}}
        return {"v": value.uri}
    return {"$expr": False}


def _array(flt: Filter) -> str:
    return "tok" if flt.modifier in ("identifier", "of-type") else ARRAYS.get(flt.type, "")


def compile_filter(flt: Filter, resource_type: str) -> dict[str, Any] | tuple[Any, ...]:
    """One filter as a MongoDB condition on the current-version document (or a marker to resolve first)."""
    if flt.code == "_id":
        ids = [v.code for v in flt.values if isinstance(v, TokenValue)]
        return {"i": {"$nin": ids}} if flt.modifier == "not" else {"i": {"$in": ids}}
    if flt.code == "_lastUpdated":
        return {"$or": [_range(v, "u", "u") for v in flt.values if isinstance(v, RangeValue)]}
    if flt.type == "compartment" and flt.missing is not None:  # in some patient's compartment, or in none
        return {"c.0": {"$exists": not flt.missing}}
    if flt.type == "compartment":
        return {"c": {"$in": [v.id for v in flt.values if isinstance(v, ReferenceValue)]}}
    if flt.type in ("any-of", "none-of"):
        return (flt.type, [[compile_filter(inner, resource_type) for inner in group] for group in flt.any_of])
    if flt.type == "resource-type":  # the document's type is flt.code, and then one of the groups holds (if any)
        if resource_type not in (SYSTEM, flt.code):
            return _NEVER
        groups = [[compile_filter(inner, flt.code) for inner in group] for group in flt.any_of]
        return ("any-of", [[{"t": flt.code}, *group] for group in groups] or [[{"t": flt.code}]])
    if flt.chain:
        return ("chain", flt.code, [(c.target_type, Subquery(c.target_type, (c.inner,))) for c in flt.chain])
    if flt.has is not None:
        return ("has", Subquery(flt.has.source_type, (flt.has.inner,), flt.has.reference, resource_type))
    array = _array(flt)
    if not array:
        return _NEVER
    key = f"{flt.code}:{flt.modifier}" if flt.modifier in ("identifier", "of-type") else flt.code
    field = f"x.{array}"
    if flt.missing is not None:
        return {f"{field}.p": {"$ne": key}} if flt.missing else {f"{field}.p": key}
    if not flt.values:
        return _ALWAYS if flt.modifier == "not" else _NEVER
    alternatives = [{field: {"$elemMatch": {"p": key, **_element(flt, v)}}} for v in flt.values]
    match = alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}
    return {"$nor": [match]} if flt.modifier == "not" else match


def sort_spec(sort: tuple[Sort, ...]) -> list[tuple[str, int]]:
    """Sort keys: each parameter's precomputed (has, low, high) sort values, then the row number."""
    keys: list[tuple[str, int]] = []
    for key in sort:
        direction = -1 if key.descending else 1
        if key.code == "_id":
            keys.append(("i", direction))
        elif key.code == "_lastUpdated":
            keys.append(("u", direction))
        else:
            keys.append((f"k.{key.code}.h", -1))  # resources with a value first, either direction
            keys.append((f"k.{key.code}.{'hi' if key.descending else 'lo'}", direction))
    keys.append(("r", 1))
    return keys


def base_filter(query: SearchQuery, types: tuple[str, ...]) -> dict[str, Any]:
    """The conditions every result shares: its type(s) and not deleted."""
    if query.is_system:
        return {"d": False, **({"t": {"$in": list(types)}} if types else {})}
    return {"t": query.resource_type, "d": False}


def aggregate_pipeline(where: dict[str, Any], keys: tuple[GroupKey, ...]) -> list[dict[str, Any]]:
    """An aggregation pipeline counting the matches of `where` by the keys' values (the store's GROUP BY)."""
    stages: list[dict[str, Any]] = [{"$match": where}]
    values = _key_values(keys, stages)
    stages.append({"$group": {"_id": values or None, "n": {"$sum": 1}}})
    return stages


def _either(values: list[Any]) -> Any:
    """The first of these expressions that is not null (null when none has a value)."""
    found: Any = None
    for value in reversed(values):
        found = value if found is None else {"$ifNull": [value, found]}
    return found


def _date_end(entry: str) -> dict[str, Any]:
    """The end of a date index entry; a range open at the end (an ongoing Period) by its start."""
    return {"$cond": [{"$gte": [f"{entry}.hi", MAX_MS]}, f"{entry}.lo", f"{entry}.hi"]}


def _key_values(keys: tuple[GroupKey, ...], stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Append the stages that put each key's value on the matches; the group id of those values."""
    values: dict[str, Any] = {}
    for n, key in enumerate(keys):
        source = "$x"
        if key.linked is not None:
            linked = key.linked
            # the linked resource by its identifier value: an equality $lookup on the token index
            stages += [{"$addFields": {f"_j{n}": {"$concat": [linked.prefix, "$i"]}}},
                       {"$lookup": {"from": "resources", "localField": f"_j{n}", "foreignField": "x.tok.c",
                                    "as": f"_l{n}"}},
                       {"$addFields": {f"_d{n}": {"$arrayElemAt": [{"$filter": {
                           "input": f"$_l{n}", "as": "o", "cond": {"$and": [
                               {"$eq": ["$$o.t", linked.resource_type]}, {"$eq": ["$$o.d", False]}]}}}, 0]}}}]
            source = f"$_d{n}.x"
        array = {"string": "str", "date": "dt", "reference": "ref"}.get(key.kind, "tok")
        found = []
        for j, code in enumerate((key.param, *key.also)):
            tests: list[Any] = [{"$eq": ["$$e.p", code]}]
            if key.kind == "reference":
                tests.append({"$eq": ["$$e.t", key.target]})
            if key.kind == "token" and key.system is not None:
                tests.append({"$eq": ["$$e.s", key.system]})
            if key.kind == "token" and key.codes:
                tests.append({"$in": ["$$e.c", list(key.codes)]})
            stages.append({"$addFields": {f"_v{n}_{j}": _first_where(f"{source}.{array}", tests)}})
            entry = f"$_v{n}_{j}"
            if key.kind == "date":
                value = f"{entry}.lo" if key.bound == "low" else _date_end(entry)
                band: Any = str(len(key.bands))
                for edge in reversed(range(len(key.bands))):
                    band = {"$cond": [{"$gt": [value, key.bands[edge]]}, str(edge), band]}
                found.append({"$cond": [{"$eq": [{"$ifNull": [f"{entry}.lo", None]}, None]}, None, band]})
            else:
                field = {"string": "e", "reference": "i"}.get(key.kind, "c")
                found.append(f"{entry}.{field}")
        values[f"k{n}"] = _either(found)
    return values


def _first_where(array: Any, tests: list[Any]) -> dict[str, Any]:
    """The first index element in an array expression that passes every test (missing when there is none)."""
    cond = tests[0] if len(tests) == 1 else {"$and": tests}
    return {"$arrayElemAt": [{"$filter": {"input": {"$ifNull": [array, []]}, "as": "e", "cond": cond}}, 0]}


def tally_pipeline(where: dict[str, Any], keys: tuple[GroupKey, ...], measures: tuple[Measure, ...],
                   ) -> list[dict[str, Any]]:
    """An aggregation pipeline of the count and measures of the matches of `where` per keys' values."""
    latest = [n for n, m in enumerate(measures) if m.op == "latest"]
    if len(latest) > 1:
        raise ValueError("a tally picks the latest match by one measure only")
    stages: list[dict[str, Any]] = [{"$match": where}]
    values = _key_values(keys, stages)
    group: dict[str, Any] = {"_id": values or None, "n": {"$sum": 1}}
    for n, measure in enumerate(measures):
        if measure.op not in ("sum", "min", "max", "latest", "ids"):
            raise ValueError(f"unknown measure {measure.op!r}")
        if measure.op == "ids":
            group[f"m{n}"] = {"$push": {"r": "$r", "i": "$i"}}
            continue
        array, found = ("$x.qty", []) if measure.op == "sum" else ("$x.dt", [])
        for j, code in enumerate((measure.param, *measure.also)):
            stages.append({"$addFields": {f"_w{n}_{j}": _first_where(array, [{"$eq": ["$$e.p", code]}])}})
            found.append(f"$_w{n}_{j}.v" if measure.op == "sum" else _date_end(f"$_w{n}_{j}"))
        stages.append({"$addFields": {f"_m{n}": _either(found)}})
        if measure.op == "sum":  # with how many had a value: no value at all is null, not 0
            group[f"m{n}"] = {"$sum": f"$_m{n}"}
            group[f"h{n}"] = {"$sum": {"$cond": [{"$eq": [{"$ifNull": [f"$_m{n}", None]}, None]}, 0, 1]}}
        elif measure.op == "latest":
            group[f"m{n}"] = {"$first": {"$cond": [{"$eq": [{"$ifNull": [f"$_m{n}", None]}, None]}, None, "$i"]}}
        else:
            group[f"m{n}"] = {f"${measure.op}": f"$_m{n}"}
    # the latest first (null last), the first stored first on a tie
    stages.append({"$sort": {f"_m{latest[0]}": -1, "r": 1} if latest else {"r": 1}})
    stages.append({"$group": group})
    return stages
