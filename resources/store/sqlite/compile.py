"""Compilation of a SearchQuery into SQLite SQL: a pure function of the query and the parameter ids.

It also reads the shipped Patient CompartmentDefinition, which decides the types that have compartment entries.

User values only ever travel as bound parameters, never as SQL text.
https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Any, Protocol

import orjson

from resources.search.codesets import CANONICAL_SYSTEM
from resources.search.dates import MAX_MS
from resources.search.index import load_patient_compartment
from resources.search.query import (
    CompositeValue,
    Filter,
    RangeValue,
    ReferenceValue,
    SearchQuery,
    Sort,
    StringValue,
    TokenValue,
    UriValue,
)
from resources.store.protocol import GroupKey


class ParamId(Protocol):
    """The index ids of search parameters (see SqliteStore.param_id)."""

    def __call__(self, resource_type: str, code: str) -> int | None:
        """The id of one parameter's entries; None when none was ever written."""

    def including(self, resource_type: str, code: str) -> tuple[int, ...]:
        """The ids whose entries together are the parameter's values (itself and the parameters it subsumes)."""


Clause = tuple[str, list[Any]]

_TABLE = {"token": "idx_token", "string": "idx_string", "reference": "idx_ref", "date": "idx_date",
          "number": "idx_number", "quantity": "idx_quantity", "uri": "idx_uri", "composite": "idx_composite"}
_NEVER: Clause = ("0", [])
_MANY = 200  # more values than this travel as one JSON array
# code systems are stored as numbers (schema.py); a constant subquery turns the URI into its number, and an
# unknown URI into NULL, which matches nothing
_SID = "(SELECT sid FROM system WHERE uri = ?)"
_NOT_SID = "coalesce((SELECT sid FROM system WHERE uri = ?), 0)"
# a search page's columns: what reads.search makes a StoredResource of
PAGE_COLUMNS = "r.rid, r.type, r.id, r.vid, r.updated, r.body"
# a Bundle entry's: its reference (type/id, for the fullUrl) and body. Each column is a value SQLite reads
# and Python holds a row: a patient's record of 99 rows took 85 to 95 us with the six, 75 to 78 without
# version and time, and 41 to 47 with the body alone. The reference is cast to a BLOB: bytes, with no UTF-8
# decoding into a str that the Bundle would encode again
ENTRY_COLUMNS = "CAST(r.type || '/' || r.id AS BLOB), r.body"


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
            parts.append(f"system = {_SID}")
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


def _composite_match(value: CompositeValue) -> Clause:
    parts, args = ["c1 = ?"], [value.first.code]
    if not value.first.any_system:
        parts.append("s1 IS NULL" if value.first.system is None else f"s1 = {_SID}")
        args.extend([] if value.first.system is None else [value.first.system])
    second = value.second
    if isinstance(second, TokenValue):
        parts.append("c2 = ?")
        args.append(second.code)
        if not second.any_system and second.system is not None:
            parts.append(f"s2 = {_SID}")
            args.append(second.system)
    elif isinstance(second, StringValue):
        parts.append("c2 >= ? AND c2 < ?")
        args.extend([second.normalized, second.normalized + "\U0010ffff"])
    elif isinstance(second, ReferenceValue):
        parts.append("c2 = ?")
        args.append(second.id)
    elif isinstance(second, RangeValue):
        sql, more = _range_match(second, "lo", "hi")
        parts.append(sql)
        args.extend(more)
        if second.system:
            parts.append(f"s2 = {_SID}")
            args.append(second.system)
        if second.code:
            parts.append("c2 = ?")
            args.append(second.code)
    return " AND ".join(parts), args


def _value_match(flt: Filter, value: Any) -> Clause:
    if isinstance(value, CompositeValue):
        return _composite_match(value)
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
        if value.type is None and value.id and (value.id.startswith("#") or ":" in value.id):
            return f"({sql} OR url = ?)", [*args, value.id]  # a canonical or local (#id) reference
        return sql, args
    if flt.type == "date":
        return _range_match(value, "low", "high")
    if flt.type in ("number", "quantity"):
        sql, args = _range_match(value, "value", "value")
        if flt.type == "quantity" and isinstance(value, RangeValue):
            if value.system:
                sql += f" AND system = {_SID}"
                args.append(value.system)
            else:  # unit-converted copies answer only the converted form of a query
                sql += f" AND system IS NOT {_NOT_SID}"
                args.append(CANONICAL_SYSTEM)
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


def _value_matches(flt: Filter) -> list[Clause]:
    """One clause per value; many system|code tokens (an expanded value set) as one IN list per system."""
    plain = [v for v in flt.values if isinstance(v, TokenValue) and v.code is not None and not v.any_system
             and v.system is not None]
    if flt.type != "token" or flt.modifier not in (None, "not") or len(plain) < 4 or len(plain) != len(flt.values):
        return [_value_match(flt, value) for value in flt.values]
    by_system: dict[str, list[str]] = {}
    for value in plain:
        assert value.system is not None and value.code is not None
        by_system.setdefault(value.system, []).append(value.code)
    return [(f"system = {_SID} AND code IN ({','.join('?' * len(codes))})", [system, *codes])
            for system, codes in by_system.items()]


def _resource_filter(flt: Filter, alias: str) -> Clause:
    if flt.code == "_id":
        ids = [v.code for v in flt.values if isinstance(v, TokenValue)]
        sql = f"{alias}.id IN ({','.join('?' * len(ids))})"
        return (f"NOT ({sql})" if flt.modifier == "not" else sql), list(ids)
    parts, args = [], []
    for value in flt.values:
        assert isinstance(value, RangeValue)
        sql, more = _range_match(value, f"{alias}.updated", f"{alias}.updated")
        parts.append(f"({sql})")
        args.extend(more)
    return "(" + " OR ".join(parts) + ")", args


def _chain(flt: Filter, resource_type: str, param_id: ParamId, alias: str, depth: int) -> Clause:
    # resources whose reference points at a target that matches the inner filter
    pid = param_id(resource_type, flt.code)
    if pid is None:
        return _NEVER
    i, t = f"i{depth}", f"t{depth}"
    ors, args = [], []
    for chained in flt.chain:
        inner, more = compile_filter(chained.inner, chained.target_type, param_id, t, depth + 1)
        ors.append(f"({t}.type = ? AND {inner})")
        args.extend([chained.target_type, *more])
    sql = (f"{alias}.rid IN (SELECT {i}.rid FROM idx_ref {i} WHERE {i}.pid = ? AND ({i}.target_type, {i}.target_id) "
           f"IN (SELECT {t}.type, {t}.id FROM resource {t} WHERE {t}.deleted = 0 AND ({' OR '.join(ors)})))")
    return sql, [pid, *args]


def _has(flt: Filter, resource_type: str, param_id: ParamId, alias: str, depth: int) -> Clause:
    # resources that some other resource points at, through a given reference, when that one matches
    assert flt.has is not None
    pid = param_id(flt.has.source_type, flt.has.reference)
    if pid is None:
        return _NEVER
    i, src = f"h{depth}", f"s{depth}"
    inner, more = compile_filter(flt.has.inner, flt.has.source_type, param_id, src, depth + 1)
    sql = (f"{alias}.id IN (SELECT {i}.target_id FROM idx_ref {i} JOIN resource {src} ON {src}.rid = {i}.rid "
           f"WHERE {i}.pid = ? AND {i}.target_type = ? AND {src}.deleted = 0 AND {inner})")
    return sql, [pid, resource_type, *more]


def compile_filter(flt: Filter, resource_type: str, param_id: ParamId, alias: str = "r", depth: int = 0,
                   correlated: bool = False) -> Clause:
    """One filter as a condition on the resource row `alias`.

    The driving filter selects row ids (`rid IN (...)`); the others (correlated) test each candidate row through
    the (rid, n) key of the index tables, which costs a few rows per candidate instead of a whole value range.
    """
    if flt.code in ("_id", "_lastUpdated"):
        return _resource_filter(flt, alias)
    if flt.type == "compartment" and flt.missing is not None:  # in some patient's compartment, or in none
        sub = f"SELECT 1 FROM compartment WHERE rid = {alias}.rid"
        return (f"NOT EXISTS ({sub})" if flt.missing else f"EXISTS ({sub})"), []
    if flt.type == "compartment":
        patients = [v.id for v in flt.values if isinstance(v, ReferenceValue)]
        marks = ",".join("?" * len(patients))
        if len(patients) > _MANY:  # one JSON array instead of a parameter each (SQLite caps parameters)
            marks, patients = "SELECT value FROM json_each(?)", [orjson.dumps(patients).decode()]
        if correlated:
            return f"EXISTS (SELECT 1 FROM compartment WHERE rid = {alias}.rid AND patient IN ({marks}))", patients
        return f"{alias}.rid IN (SELECT rid FROM compartment WHERE patient IN ({marks}))", patients
    if flt.type == "none-of":  # the negation of an any-of (consent exceptions): no group holds
        sql, args = compile_filter(replace(flt, type="any-of"), resource_type, param_id, alias, depth, correlated)
        return f"NOT {sql}", args
    if flt.type == "resource-type":  # the row's type is flt.code, and then one of the groups holds (if any)
        if resource_type != flt.code:
            return _NEVER
        if not flt.any_of:
            return "1", []
        return compile_filter(replace(flt, type="any-of"), resource_type, param_id, alias, depth, correlated)
    if flt.type == "any-of":
        ors: list[str] = []
        args: list[Any] = []
        for group in flt.any_of:
            parts = [compile_filter(inner, resource_type, param_id, alias, depth, correlated=True) for inner in group]
            ors.append("(" + (" AND ".join(sql for sql, _ in parts) or "1") + ")")
            args.extend(arg for _, more in parts for arg in more)
        return ("(" + " OR ".join(ors) + ")", args) if ors else _NEVER
    if flt.chain:
        return _chain(flt, resource_type, param_id, alias, depth)
    if flt.has is not None:
        return _has(flt, resource_type, param_id, alias, depth)
    table = _TABLE.get(flt.type)
    key = f"{flt.code}:{flt.modifier}" if flt.modifier in ("identifier", "of-type") else flt.code
    pids = param_id.including(resource_type, key)
    if flt.modifier in ("identifier", "of-type"):
        table = "idx_token"
    if table is None:
        return _NEVER
    # `+pid` keeps SQLite on the (rid, n) key of a candidate row: a few rows, not every row of the value. A
    # token test that names its codes is one seek of (pid, code, rid) instead: no row of the candidate's
    # other tokens is read.
    own = f"{'' if _seeks_codes(flt) else '+'}pid {_in(pids)}" if pids else ""
    if flt.missing is not None:
        if not pids:
            return ("1", []) if flt.missing else _NEVER
        if correlated:
            sub = f"SELECT 1 FROM {table} WHERE rid = {alias}.rid AND {own}"
            return (f"NOT EXISTS ({sub})" if flt.missing else f"EXISTS ({sub})"), list(pids)
        sub = f"SELECT rid FROM {table} WHERE pid {_in(pids)}"
        return (f"{alias}.rid NOT IN ({sub})" if flt.missing else f"{alias}.rid IN ({sub})"), list(pids)
    if not pids:
        return ("1", []) if flt.modifier == "not" else _NEVER
    if not flt.values:  # a value set (or hierarchy) that resolved to no code
        return ("1", []) if flt.modifier == "not" else _NEVER
    ors, args = [], list(pids)
    for sql, more in _value_matches(flt):
        ors.append(f"({sql})")
        args.extend(more)
    if correlated:
        sub = f"SELECT 1 FROM {table} WHERE rid = {alias}.rid AND {own} AND ({' OR '.join(ors)})"
        return (f"NOT EXISTS ({sub})" if flt.modifier == "not" else f"EXISTS ({sub})"), args
    sub = f"SELECT rid FROM {table} WHERE pid {_in(pids)} AND ({' OR '.join(ors)})"
    return (f"{alias}.rid NOT IN ({sub})" if flt.modifier == "not" else f"{alias}.rid IN ({sub})"), args


def _seeks_codes(flt: Filter) -> bool:
    """Whether every value of a token filter names a code, so that (pid, code, rid) finds a candidate's entry."""
    return (flt.type == "token" and flt.modifier in (None, "not") and flt.missing is None
            and all(isinstance(v, TokenValue) and v.code is not None for v in flt.values))


def _in(pids: tuple[int, ...]) -> str:
    return "= ?" if len(pids) == 1 else f"IN ({','.join('?' * len(pids))})"


def _selectivity(flt: Filter) -> int:
    # a rough order of how few rows a filter selects: the first one drives the query
    if flt.code == "_id" or flt.missing is not None or flt.modifier == "not":
        return 0 if flt.code == "_id" and flt.modifier != "not" else 9
    if flt.type == "compartment":
        return 1
    if flt.chain or flt.has is not None or flt.type in ("any-of", "none-of", "resource-type"):
        return 6
    ranks = {"reference": 1, "token": 2, "composite": 2, "uri": 3, "string": 4, "quantity": 5, "number": 5,
             "date": 7}
    return ranks.get(flt.type, 8)


_SORT_COLUMN = {"string": ("idx_string", "norm", "norm"), "token": ("idx_token", "code", "code"),
                "date": ("idx_date", "low", "high"), "number": ("idx_number", "value", "value"),
                "quantity": ("idx_quantity", "value", "value"), "reference": ("idx_ref", "target_id", "target_id"),
                "uri": ("idx_uri", "value", "value")}


def _sort_key(key: Sort, resource_type: str, param_id: ParamId) -> Clause:
    direction = " DESC" if key.descending else ""
    if key.code == "_id":
        return f"r.id{direction}", []
    if key.code == "_lastUpdated":
        return f"r.updated{direction}", []
    table, low, high = _SORT_COLUMN[key.type]
    pids = param_id.including(resource_type, key.code)
    if not pids:
        return "", []
    # a resource sorts by its smallest value ascending and by its largest descending (search.html#sort)
    args: list[Any] = list(pids)
    # `+pid`: the resource's own entries by the (rid, n) key; with `pid` usable SQLite may choose the
    # (pid, value) index and read every value of the parameter for each row sorted (37 ms for one
    # patient's 15 AuditEvents among 20,000; seconds at 10M)
    where = f"rid = r.rid AND +pid {_in(pids)}"
    if key.type == "quantity":  # sort by the values as sent, not by their unit-converted copies
        where += f" AND system IS NOT {_NOT_SID}"
        args.append(CANONICAL_SYSTEM)
    value = f"(SELECT {'max(' + high if key.descending else 'min(' + low}) FROM {table} WHERE {where})"
    return f"{value} IS NULL, {value}{direction}", args + args


def _system_filter(flt: Filter, types: tuple[str, ...], param_id: ParamId) -> Clause:
    # a parameter common to every type has an index id per type: one branch per type that has entries
    if flt.code in ("_id", "_lastUpdated") or flt.type == "compartment":
        return compile_filter(flt, types[0] if types else "Resource", param_id)
    ors, args = [], []
    for type_ in types:
        sql, more = compile_filter(flt, type_, param_id)
        if sql != _NEVER[0]:
            ors.append(f"(r.type = ? AND {sql})")
            args.extend([type_, *more])
    return ("(" + " OR ".join(ors) + ")", args) if ors else _NEVER


@lru_cache(maxsize=64)  # bounded: clients choose `_type` lists
def _left_out_of_compartment(types: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(frozenset(load_patient_compartment()).difference(types)))


def _types_clause(query: SearchQuery) -> Clause:
    """The test of a system search's `_type` list: the list itself, or the types it leaves out of a compartment.

    Only the CompartmentDefinition's types have compartment entries (index.py), so within a compartment the
    types a query leaves out say the same as those it asks for, and are far fewer for `$everything` (only
    Patient, against 65 asked for). SQLite builds a long `IN` list into a temporary table on every run.
    """
    if any(f.type == "compartment" for f in query.filters):
        left_out = _left_out_of_compartment(query.types)
        if len(left_out) < len(query.types):
            if not left_out:
                return "", []
            return f"r.type NOT IN ({','.join('?' * len(left_out))})", list(left_out)
    return f"r.type IN ({','.join('?' * len(query.types))})", list(query.types)


def compile_search(query: SearchQuery, param_id: ParamId, stored_types: tuple[str, ...] = (),
                   columns: str = PAGE_COLUMNS) -> tuple[str, list[Any], str, list[Any]]:
    """SQL for one page (count + 1 rows, to know whether a next page exists) and for the total.

    The total's SQL is empty unless the query asks for one (`_total`). stored_types are the types that have
    index entries: a system search without _type looks in those. `columns` are the page's, of resource row r.
    """
    ordered = [] if query.is_system else sorted(query.filters, key=_selectivity)  # most selective first
    counted = query.total in ("accurate", "estimate")
    streamed = None
    if not query.sort:
        streamed = (_streamed_system_page(query, param_id, stored_types, columns) if query.is_system
                    else _streamed_page(query, ordered, param_id, columns))
        if streamed is not None and not counted:
            return streamed[0], streamed[1], "", []
    where, args = _conditions(query, ordered, param_id, stored_types)
    count_sql, count_args = "", []
    if counted:
        count_sql, count_args = f"SELECT count(*) FROM resource r WHERE {' AND '.join(where)}", list(args)
    if streamed is not None:
        return streamed[0], streamed[1], count_sql, count_args
    if query.sort:
        # sorted pages are cut by offset (the cursor); unsorted ones by row id, which new rows never shift
        order, order_args = [], []
        for key in query.sort:
            sql, more = _sort_key(key, query.resource_type, param_id)
            if sql:
                order.append(sql)
                order_args.extend(more)
        order.append("r.rid")
        page_sql = (f"SELECT {columns} FROM resource r "
                    f"WHERE {' AND '.join(where)} ORDER BY {', '.join(order)} LIMIT ? OFFSET ?")
        return page_sql, [*args, *order_args, query.count + 1, query.cursor or 0], count_sql, count_args
    if query.cursor is not None:
        where.append("r.rid > ?")
        args.append(query.cursor)
    page_sql = (f"SELECT {columns} FROM resource r "
                f"WHERE {' AND '.join(where)} ORDER BY r.rid LIMIT ?")
    args.append(query.count + 1)
    return page_sql, args, count_sql, count_args


def compile_lastn(query: SearchQuery, param_id: ParamId, code: str, date: str, per_code: int) -> Clause | None:
    """SQL for Observation/$lastn: per code (system and code of each coding) the latest `per_code` matches by date.

    A window over the code index entries of the matching rows, each row's latest date read from its own
    entries (none: last); None when no resource of the type was ever indexed by the code parameter.
    """
    code_pid, date_pid = param_id(query.resource_type, code), param_id(query.resource_type, date)
    if code_pid is None:
        return None
    where, args = _conditions(query, sorted(query.filters, key=_selectivity), param_id, ())
    sql = (f"SELECT rid, type, id, vid, updated, body FROM (SELECT {PAGE_COLUMNS}, ROW_NUMBER() OVER ("
           "PARTITION BY lastn_code.system, lastn_code.code ORDER BY (SELECT max(lastn_date.high) FROM idx_date "
           "lastn_date WHERE lastn_date.rid = r.rid AND lastn_date.pid = ?) DESC, r.rid DESC) AS n, "
           "lastn_code.system AS s, lastn_code.code AS c FROM resource r JOIN idx_token lastn_code ON "
           f"lastn_code.rid = r.rid AND lastn_code.pid = ? WHERE {' AND '.join(where)}) WHERE n <= ? "
           "ORDER BY s, c, n")
    return sql, [date_pid or 0, code_pid, *args, per_code]


def compile_where(query: SearchQuery, param_id: ParamId, stored_types: tuple[str, ...] = ()) -> Clause:
    """The test of a resource row `r` that a query's matches pass (for aggregates over them)."""
    ordered = [] if query.is_system else sorted(query.filters, key=_selectivity)
    where, args = _conditions(query, ordered, param_id, stored_types)
    return " AND ".join(where), args


def _conditions(query: SearchQuery, ordered: list[Filter], param_id: ParamId,
                stored_types: tuple[str, ...]) -> tuple[list[str], list[Any]]:
    """The tests of a resource row `r` (for the total, and for pages not read from one index range)."""
    if query.is_system:
        where: list[str] = []
        args: list[Any] = []
        _system_tests(query, param_id, stored_types, None, where, args)
        return where, args
    drives = bool(ordered) and _selectivity(ordered[0]) < 9
    # with a driving index filter the rows come by row id; `+r.type` keeps SQLite from scanning the whole
    # type. `_id` and `_lastUpdated` are columns of the resource row: they need the (type, id) and (type,
    # updated) indexes, so `type` must stay usable for them (as for no driving filter: (type, rid))
    on_row = drives and ordered[0].code in ("_id", "_lastUpdated")
    where = ["+r.type = ?" if drives and not on_row else "r.type = ?", "r.deleted = 0"]
    args = [query.resource_type]
    for position, flt in enumerate(ordered):
        sql, more = compile_filter(flt, query.resource_type, param_id, correlated=position > 0)
        where.append(sql)
        args.extend(more)
    return where, args


def _streamed_page(query: SearchQuery, ordered: list[Filter], param_id: ParamId, columns: str) -> Clause | None:
    """An unsorted page read from one index range that holds the matches in row-id order, stopping after a page.

    `r.rid IN (SELECT rid FROM idx_token ...)` collects every match before the first page is cut: 75,000 row
    ids for `Observation?code=2339-0` at 1M resources, 15 ms. An index range with every column before the row
    id fixed (one code of one parameter, one typed reference, one patient's compartment) is in row-id order,
    so joining from it yields the matches in page order and stops after one page. The other filters test each
    candidate's row id there, before its resource row (the largest row, with the body) is read; only `_id`,
    `_lastUpdated` and `_has` need that row first.
    """
    driver = _driver(query.resource_type, ordered[0], param_id) if ordered else None
    if driver is None:
        return None
    table, where, args = driver
    where.extend(["r.type = ?", "r.deleted = 0"])
    args.append(query.resource_type)
    for flt in ordered[1:]:
        sql, more = compile_filter(flt, query.resource_type, param_id, "d" if _on_row_id(flt) else "r",
                                   correlated=True)
        where.append(sql)
        args.extend(more)
    return _from_driver(query, table, where, args, columns)


def _streamed_system_page(query: SearchQuery, param_id: ParamId, stored_types: tuple[str, ...],
                          columns: str) -> Clause | None:
    """A search across types within one patient's compartment (`$everything`), read from its index in order."""
    first = next((f for f in query.filters if f.type == "compartment"), None)
    driver = _driver("Resource", first, param_id) if first is not None else None
    if driver is None:
        return None
    table, where, args = driver
    _system_tests(query, param_id, stored_types, first, where, args)
    return _from_driver(query, table, where, args, columns)


def _system_tests(query: SearchQuery, param_id: ParamId, stored_types: tuple[str, ...], driving: Filter | None,
                  where: list[str], args: list[Any]) -> None:
    """Append a search across types' tests of the resource row `r` (all but the driving filter's)."""
    where.append("r.deleted = 0")
    if query.types:
        sql, more = _types_clause(query)
        if sql:
            where.append(sql)
            args.extend(more)
    for flt in query.filters:
        if flt is not driving:
            sql, more = _system_filter(flt, query.types or stored_types, param_id)
            where.append(sql)
            args.extend(more)


def _from_driver(query: SearchQuery, table: str, where: list[str], args: list[Any], columns: str) -> Clause:
    """The page's SQL: the driver's index entries from the cursor on, joined to their resource rows.

    One resource may hold the value several times (codings, references): its rows are then adjacent, and
    reads.search keeps one. GROUP BY would keep one here, but copies every column of every row (the body
    too) into the group's registers first: 15 us for a page of 50.
    """
    if query.cursor is not None:
        where.append("d.rid > ?")
        args.append(query.cursor)
    return (f"SELECT {columns} FROM {table} d JOIN resource r ON "
            f"r.rid = d.rid WHERE {' AND '.join(where)} ORDER BY d.rid LIMIT ?", [*args, query.count + 1])


def _driver(resource_type: str, first: Filter, param_id: ParamId) -> tuple[str, list[str], list[Any]] | None:
    """The table and conditions (on alias d) of an index range in row-id order that selects `first`, if any.

    The indexes are (pid, code, rid), (pid, target_id, target_type, rid) and (patient, rid): equality on
    every column before rid leaves the entries in row-id order.
    """
    value = first.values[0] if len(first.values) == 1 else None
    if (first.code in ("_id", "_lastUpdated") or first.modifier is not None or first.missing is not None
            or first.chain or first.has is not None or value is None):
        return None
    if first.type == "compartment":
        assert isinstance(value, ReferenceValue)
        return "compartment", ["d.patient = ?"], [value.id]
    if first.type == "reference":
        if (not isinstance(value, ReferenceValue) or value.type is None or value.id is None
                or value.url is not None):
            return None
        pids = param_id.including(resource_type, first.code)
        if len(pids) != 1:  # several ranges of the index would have to be merged: the general form sorts them
            return None
        return "idx_ref", ["d.pid = ?", "d.target_id = ?", "d.target_type = ?"], [pids[0], value.id, value.type]
    if first.type != "token" or not isinstance(value, TokenValue) or value.code is None:
        return None
    pids = param_id.including(resource_type, first.code)
    if len(pids) != 1:
        return None
    where = ["d.pid = ?", "d.code = ?"]
    args: list[Any] = [pids[0], value.code]
    if not value.any_system:
        where.append("d.system IS NULL" if value.system is None else f"d.system = {_SID}")
        args.extend([] if value.system is None else [value.system])
    return "idx_token", where, args


def _on_row_id(flt: Filter) -> bool:
    """Whether a filter tests index rows by row id alone, without the resource row."""
    if flt.code in ("_id", "_lastUpdated") or flt.has is not None:
        return False
    return all(_on_row_id(inner) for group in flt.any_of for inner in group)


def key_value(key: GroupKey, resource_type: str, param_id: ParamId) -> Clause:
    """A scalar subquery: the value `key` groups a resource row `r` by (NULL when it has none)."""
    # `+x.pid`: the row's own entries are found by the primary key (rid, n); left as an index term, SQLite
    # preferred the (pid, code) index and read every entry of the parameter for each row (11.8 s against 0.08 s
    # for the tier of 10,000 patients)
    if key.linked is not None:
        ident, value = param_id(key.linked.resource_type, "identifier"), param_id(key.linked.resource_type,
                                                                                  key.param)
        if ident is None or value is None:
            return "NULL", []
        # the linked resource by its identifier (index seek on pid, code), then its value's token
        return ("(SELECT t.code FROM idx_token i JOIN resource o ON o.rid = i.rid AND o.deleted = 0 "
                "JOIN idx_token t ON t.rid = i.rid AND +t.pid = ? WHERE i.pid = ? AND i.code = ? || r.id "
                "AND i.system = (SELECT sid FROM system WHERE uri = ?) AND o.type = ? ORDER BY t.n LIMIT 1)",
                [value, ident, key.linked.prefix, key.linked.system, key.linked.resource_type])
    # the first of the key's parameters that has a value for the row
    found = [_param_value(key, pid) for pid in (param_id(resource_type, code) for code in (key.param, *key.also))
             if pid is not None]
    if not found:
        return "NULL", []
    if len(found) == 1:
        return found[0]
    return f"coalesce({', '.join(sql for sql, _ in found)})", [arg for _, more in found for arg in more]


def date_end(alias: str) -> str:
    """The end of a row's date range in SQL; a range open at the end (an ongoing Period) by its start."""
    return f"CASE WHEN {alias}.high >= {MAX_MS} THEN {alias}.low ELSE {alias}.high END"


def _param_value(key: GroupKey, pid: int) -> Clause:
    """A scalar subquery: the value of one parameter that `key` groups a resource row `r` by."""
    if key.kind == "string":
        return "(SELECT s.exact FROM idx_string s WHERE s.rid = r.rid AND +s.pid = ? ORDER BY s.n LIMIT 1)", [pid]
    if key.kind == "date":
        value = "d.low" if key.bound == "low" else date_end("d")
        cases = " ".join(f"WHEN {value} > ? THEN '{n}'" for n in range(len(key.bands)))
        return (f"(SELECT CASE {cases} ELSE '{len(key.bands)}' END FROM idx_date d WHERE d.rid = r.rid "
                f"AND +d.pid = ? ORDER BY d.n LIMIT 1)", [*key.bands, pid])
    if key.kind == "reference":
        return ("(SELECT x.target_id FROM idx_ref x WHERE x.rid = r.rid AND +x.pid = ? AND x.target_type = ? "
                "ORDER BY x.n LIMIT 1)", [pid, key.target])
    where, args = "", [pid]
    if key.system is not None:
        where += f" AND t.system = {_SID}"
        args.append(key.system)
    if key.codes:
        where += f" AND t.code IN ({', '.join('?' * len(key.codes))})"
        args.extend(key.codes)
    return f"(SELECT t.code FROM idx_token t WHERE t.rid = r.rid AND +t.pid = ?{where} ORDER BY t.n LIMIT 1)", args


def compile_aggregate(query: SearchQuery, keys: tuple[GroupKey, ...], param_id: ParamId) -> Clause:
    """SQL counting a query's matches by the keys' values: one GROUP BY over the matching resource rows."""
    ordered = sorted(query.filters, key=_selectivity)
    where, args = _conditions(query, ordered, param_id, ())
    columns, column_args = [], []
    for n, key in enumerate(keys):
        sql, more = key_value(key, query.resource_type, param_id)
        columns.append(f"{sql} AS k{n}")
        column_args.extend(more)
    names = ", ".join(f"k{n}" for n in range(len(keys))) or "NULL"
    return (f"SELECT {names}, count(*) FROM (SELECT {', '.join(columns) or 'NULL'} FROM resource r "
            f"WHERE {' AND '.join(where)}) GROUP BY {names}", [*column_args, *args])
