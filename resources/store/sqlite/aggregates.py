"""Aggregates over a search's matches, computed by SQLite from the index tables: spans, distinct targets and
tallies (sums, counts, earliest and latest per group).

The matches are the rows of `resource r` the compiled search selects (the caller's narrowing included); only
numbers leave the database. https://www.sqlite.org/lang_select.html
"""

from __future__ import annotations

import sqlite3
from typing import Any

from resources.search.query import SearchQuery
from resources.store.protocol import GroupKey, Measure, Spans, SpanStats, Tallies
from resources.store.sqlite.compile import ParamId, compile_where, date_end, key_value


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


def _measure_value(measure: Measure, resource_type: str, param_id: ParamId) -> tuple[str, list[Any]]:
    """A scalar subquery: the value a measure takes of a resource row `r` (NULL when it has none)."""
    # `+x.pid` as in key_value: the row's own entries by the primary key, not a scan of the parameter's
    pids = [pid for pid in (param_id(resource_type, code) for code in (measure.param, *measure.also))
            if pid is not None]
    if measure.op == "sum":
        found = ["(SELECT q.value FROM idx_quantity q WHERE q.rid = r.rid AND +q.pid = ? ORDER BY q.n LIMIT 1)"
                 for _ in pids]
    else:
        found = [f"(SELECT {date_end('d')} FROM idx_date d WHERE d.rid = r.rid AND +d.pid = ? ORDER BY d.n LIMIT 1)"
                 for _ in pids]
    if not found:
        return "NULL", []
    return (found[0] if len(found) == 1 else f"coalesce({', '.join(found)})"), pids


def tally(conn: sqlite3.Connection, query: SearchQuery, keys: tuple[GroupKey, ...], measures: tuple[Measure, ...],
          param_id: ParamId) -> Tallies:
    """Per combination of the keys' values, the count and the measures of the matches: one GROUP BY."""
    where, args = compile_where(query, param_id)
    columns, column_args = ["r.rid AS rid", "r.id AS id"], []
    for n, key in enumerate(keys):
        sql, more = key_value(key, query.resource_type, param_id)
        columns.append(f"{sql} AS k{n}")
        column_args.extend(more)
    for n, measure in enumerate(measures):
        if measure.op not in ("sum", "min", "max", "latest", "ids"):
            raise ValueError(f"unknown measure {measure.op!r}")
        if measure.op != "ids":
            sql, more = _measure_value(measure, query.resource_type, param_id)
            columns.append(f"{sql} AS m{n}")
            column_args.extend(more)
    names = [f"k{n}" for n in range(len(keys))]
    source = f"SELECT {', '.join(columns)} FROM resource r WHERE {where}"
    latest = [n for n, m in enumerate(measures) if m.op == "latest"]
    if latest:
        # the latest match of each group, picked by a window over the group (first stored on a tie)
        partition = f"PARTITION BY {', '.join(names)} " if names else ""
        picks = ", ".join(f"first_value(CASE WHEN m{n} IS NOT NULL THEN id END) OVER ({partition}ORDER BY m{n} DESC, "
                          f"rid) AS l{n}" for n in latest)
        source = f"SELECT *, {picks} FROM ({source})"
    outputs = []
    for n, measure in enumerate(measures):
        outputs.append({"sum": f"sum(m{n})", "min": f"min(m{n})", "max": f"max(m{n})", "latest": f"min(l{n})",
                        "ids": "group_concat(rid || ':' || id, ' ')"}[measure.op])
    group = f" GROUP BY {', '.join(names)}" if names else ""
    sql = f"SELECT {', '.join([*names, 'count(*)', *outputs])} FROM ({source}){group}"
    found: Tallies = []
    for row in conn.execute(sql, [*column_args, *args]):
        values = list(row[len(keys) + 1:])
        for n, measure in enumerate(measures):
            if measure.op == "ids":
                pairs = [pair.split(":", 1) for pair in (values[n] or "").split(" ") if pair]
                values[n] = sorted((int(rid), ident) for rid, ident in pairs)
            elif measure.op in ("min", "max") and values[n] is not None:
                values[n] = int(values[n])
            elif measure.op == "sum" and values[n] is not None:
                values[n] = float(values[n])
        found.append((tuple(row[:len(keys)]), int(row[len(keys)]), tuple(values)))
    if not keys and found and found[0][1] == 0:  # no match: no group, as with keys
        return []
    return found
