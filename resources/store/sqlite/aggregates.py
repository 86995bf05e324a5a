"""Aggregates over a search's matches, computed by SQLite from the index tables: spans and distinct targets.

The matches are the rows of `resource r` the compiled search selects (the caller's narrowing included); only
numbers leave the database. https://www.sqlite.org/lang_select.html
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from resources.search.query import SearchQuery
from resources.store.protocol import Spans, SpanStats
from resources.store.sqlite.compile import ParamId, compile_where


def _nearest_rank(q: float, n: int) -> int:
    """The 0-based position of the q-quantile (0 < q <= 1) of n ordered values, by nearest rank."""
    return max(1, min(n, math.ceil(q * n))) - 1


def spans(conn: sqlite3.Connection, query: SearchQuery, param_id: ParamId, spec: Spans) -> SpanStats:
    """Count, on time, measured and quantiles of the spans of the matches."""
    where, args = compile_where(query, param_id)
    kind = query.resource_type
    pids = [param_id(kind, code) or -1 for code in (spec.start, spec.end, spec.limit)]
    # `+pid`: each value comes from the resource's own entries (its (rid, n) key), not a scan of the parameter
    inner = (f"SELECT (SELECT min(low) FROM idx_date WHERE rid = r.rid AND +pid = ?) AS st, "
             f"coalesce((SELECT min(low) FROM idx_date WHERE rid = r.rid AND +pid = ?), r.updated) AS en, "
             f"(SELECT max(high) FROM idx_date WHERE rid = r.rid AND +pid = ?) AS lim "
             f"FROM resource r WHERE {where}")
    every: list[Any] = [*pids, *args]
    count, on_time, measured = conn.execute(
        f"SELECT count(*), coalesce(sum(en <= lim), 0), count(st) FROM ({inner})", every).fetchone()
    found: list[int | None] = []
    for q in spec.quantiles:
        if not measured:
            found.append(None)
            continue
        row = conn.execute(f"SELECT en - st FROM ({inner}) WHERE st IS NOT NULL ORDER BY 1 LIMIT 1 OFFSET ?",
                           [*every, _nearest_rank(q, measured)]).fetchone()
        found.append(int(row[0]))
    return SpanStats(int(count), int(on_time), int(measured), tuple(found))


def _targets(query: SearchQuery, param_id: ParamId, code: str) -> tuple[str, list[Any]]:
    where, args = compile_where(query, param_id)
    pid = param_id(query.resource_type, code) or -1
    return (f"SELECT DISTINCT t.target_type, t.target_id FROM resource r JOIN idx_ref t ON t.rid = r.rid "
            f"AND t.pid = ? WHERE {where} AND t.target_id IS NOT NULL", [pid, *args])


def distinct_targets(conn: sqlite3.Connection, query: SearchQuery, param_id: ParamId, code: str,
                     also: SearchQuery | None) -> int:
    """How many distinct resources the matches name through `code` (and the matches of `also` name too)."""
    sql, args = _targets(query, param_id, code)
    if also is not None:
        other, more = _targets(also, param_id, code)
        sql, args = f"{sql} INTERSECT {other}", [*args, *more]
    return int(conn.execute(f"SELECT count(*) FROM ({sql})", args).fetchone()[0])
