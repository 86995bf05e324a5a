"""Aggregates over a search's matches, computed by SQLite from the index tables: spans and distinct targets.

The matches are the rows of `resource r` the compiled search selects (the caller's narrowing included); only
numbers leave the database. https://www.sqlite.org/lang_select.html
"""

from __future__ import annotations

import sqlite3
from typing import Any

from resources.search.query import SearchQuery
from resources.store.protocol import Spans, SpanStats
from resources.store.sqlite.compile import ParamId, compile_where


def _rank_sql(q: float) -> str:
    """The 1-based nearest rank of the q-quantile among `n` ordered values, in SQL: max(1, ceil(q * n))."""
    return f"max(1, CAST({q!r} * n AS INTEGER) + ({q!r} * n > CAST({q!r} * n AS INTEGER)))"


def spans(conn: sqlite3.Connection, query: SearchQuery, param_id: ParamId, spec: Spans) -> SpanStats:
    """Count, on time, measured and quantiles of the spans of the matches, in one pass over them."""
    where, args = compile_where(query, param_id)
    kind = query.resource_type
    pids = [param_id(kind, code) or -1 for code in (spec.start, spec.end, spec.limit)]
    # `+pid`: each value comes from the resource's own entries (its (rid, n) key), not a scan of the parameter
    inner = (f"SELECT (SELECT min(low) FROM idx_date WHERE rid = r.rid AND +pid = ?) AS st, "
             f"coalesce((SELECT min(low) FROM idx_date WHERE rid = r.rid AND +pid = ?), r.updated) AS en, "
             f"(SELECT max(high) FROM idx_date WHERE rid = r.rid AND +pid = ?) AS lim "
             f"FROM resource r WHERE {where}")
    # each span numbered in order among those with a start: the quantiles are picked by rank in the same pass
    ranked = (f"SELECT en - st AS d, coalesce(en <= lim, 0) AS ok, st IS NOT NULL AS has, "
              f"row_number() OVER (PARTITION BY st IS NOT NULL ORDER BY en - st) AS rn, "
              f"count(*) OVER (PARTITION BY st IS NOT NULL) AS n FROM ({inner})")
    picks = "".join(f", max(CASE WHEN has AND rn = {_rank_sql(q)} THEN d END)" for q in spec.quantiles)
    row = conn.execute(f"SELECT count(*), coalesce(sum(ok), 0), coalesce(sum(has), 0){picks} FROM ({ranked})",
                       [*pids, *args]).fetchone()
    quantiles = tuple(None if v is None else int(v) for v in row[3:])
    return SpanStats(int(row[0]), int(row[1]), int(row[2]), quantiles)


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
