"""Compilation of a SearchQuery into SQLite SQL: a pure function of the query and the parameter ids.

User values only ever travel as bound parameters, never as SQL text.
https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resources.search.query import Filter, RangeValue, ReferenceValue, SearchQuery, StringValue, TokenValue, UriValue

ParamId = Callable[[str, str], int | None]
Clause = tuple[str, list[Any]]

_TABLE = {"token": "idx_token", "string": "idx_string", "reference": "idx_ref", "date": "idx_date",
          "number": "idx_number", "quantity": "idx_quantity", "uri": "idx_uri"}
_NEVER: Clause = ("0", [])


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _token_match(value: TokenValue) -> Clause:
    parts, args = [], []
    if value.code is not None:
        parts.append("code = ?")
        args.append(value.code)
    if not value.any_system:
        if value.system is None:
            parts.append("system IS NULL")
        else:
            parts.append("system = ?")
            args.append(value.system)
    return " AND ".join(parts) or "1", args


def _range_match(value: RangeValue, low: str, high: str) -> Clause:
    a, b = value.low, value.high
    conditions = {
        "eq": (f"{low} >= ? AND {high} <= ?", [a, b]),
        "ne": (f"NOT ({low} >= ? AND {high} <= ?)", [a, b]),
        "gt": (f"{high} > ?", [b]),
        "lt": (f"{low} < ?", [a]),
        "ge": (f"{high} >= ?", [a]),
        "le": (f"{low} <= ?", [b]),
        "sa": (f"{low} > ?", [b]),
        "eb": (f"{high} < ?", [a]),
    }
    if value.prefix == "ap":
        margin = max((b - a) * 0.1, abs(a) * 0.1 if low == "value" else 86_400_000.0)
        return f"{high} >= ? AND {low} <= ?", [a - margin, b + margin]
    sql, args = conditions[value.prefix]
    return sql, list(args)


def _value_match(flt: Filter, value: Any) -> Clause:
    if flt.type == "token" or flt.modifier == "identifier":
        if flt.modifier == "text":
            return "text >= ? AND text < ?", [value.code or "", (value.code or "") + "\U0010ffff"]
        return _token_match(value)
    if flt.type == "string":
        assert isinstance(value, StringValue)
        if flt.modifier == "exact":
            return "exact = ?", [value.text]
        if flt.modifier == "contains":
            return "norm LIKE ? ESCAPE '\\'", [f"%{_escape_like(value.normalized)}%"]
        return "norm >= ? AND norm < ?", [value.normalized, value.normalized + "\U0010ffff"]
    if flt.type == "reference":
        assert isinstance(value, ReferenceValue)
        parts, args = ["target_id = ?"], [value.id]
        if value.type:
            parts.append("target_type = ?")
            args.append(value.type)
        sql = " AND ".join(parts)
        if value.url:
            return f"(({sql}) OR url = ?)", [*args, value.url]
        return sql, args
    if flt.type == "date":
        return _range_match(value, "low", "high")
    if flt.type in ("number", "quantity"):
        sql, args = _range_match(value, "value", "value")
        if flt.type == "quantity" and isinstance(value, RangeValue):
            if value.system:
                sql += " AND system = ?"
                args.append(value.system)
            if value.code:
                sql += " AND code = ?"
                args.append(value.code)
        return sql, args
    if flt.type == "uri":
        assert isinstance(value, UriValue)
        if flt.modifier == "below":
            return "value >= ? AND value < ?", [value.uri, value.uri + "\U0010ffff"]
        if flt.modifier == "above":
            return "? >= value AND substr(?, 1, length(value)) = value", [value.uri, value.uri]
        return "value = ?", [value.uri]
    return _NEVER


def _resource_filter(flt: Filter) -> Clause:
    if flt.code == "_id":
        ids = [v.code for v in flt.values if isinstance(v, TokenValue)]
        sql = f"r.id IN ({','.join('?' * len(ids))})"
        return (f"NOT ({sql})" if flt.modifier == "not" else sql), list(ids)
    parts, args = [], []
    for value in flt.values:
        assert isinstance(value, RangeValue)
        sql, more = _range_match(value, "r.updated", "r.updated")
        parts.append(f"({sql})")
        args.extend(more)
    return "(" + " OR ".join(parts) + ")", args


def compile_filter(flt: Filter, resource_type: str, param_id: ParamId) -> Clause:
    """One filter as a condition on the resource row `r`."""
    if flt.code in ("_id", "_lastUpdated"):
        return _resource_filter(flt)
    table = _TABLE.get(flt.type)
    key = f"{flt.code}:identifier" if flt.modifier == "identifier" else flt.code
    pid = param_id(resource_type, key)
    if flt.modifier == "identifier":
        table = "idx_token"
    if table is None:
        return _NEVER
    if flt.missing is not None:
        if pid is None:
            return ("1", []) if flt.missing else _NEVER
        sub = f"SELECT rid FROM {table} WHERE pid = ?"
        return (f"r.rid NOT IN ({sub})" if flt.missing else f"r.rid IN ({sub})"), [pid]
    if pid is None:
        return ("1", []) if flt.modifier == "not" else _NEVER
    ors, args = [], [pid]
    for value in flt.values:
        sql, more = _value_match(flt, value)
        ors.append(f"({sql})")
        args.extend(more)
    sub = f"SELECT rid FROM {table} WHERE pid = ? AND ({' OR '.join(ors)})"
    return (f"r.rid NOT IN ({sub})" if flt.modifier == "not" else f"r.rid IN ({sub})"), args


def compile_search(query: SearchQuery, param_id: ParamId) -> tuple[str, list[Any], str, list[Any]]:
    """SQL for one page (count + 1 rows, to know whether a next page exists) and for the total."""
    where, args = ["r.type = ?", "r.deleted = 0"], [query.resource_type]
    for flt in query.filters:
        sql, more = compile_filter(flt, query.resource_type, param_id)
        where.append(sql)
        args.extend(more)
    count_sql = f"SELECT count(*) FROM resource r WHERE {' AND '.join(where)}"
    count_args = list(args)
    if query.cursor is not None:
        where.append("r.rid > ?")
        args.append(query.cursor)
    page_sql = (f"SELECT r.rid, r.type, r.id, r.vid, r.updated, r.body FROM resource r "
                f"WHERE {' AND '.join(where)} ORDER BY r.rid LIMIT ?")
    args.append(query.count + 1)
    return page_sql, args, count_sql, count_args
