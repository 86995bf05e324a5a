"""The escalation worker finds overdue Tasks through indexes, never by scanning (issue 30, performance).

SQLite's own plan (EXPLAIN QUERY PLAN) of the SQL the adapter compiles for the worker's search: every step is a
search by a key or an index, none a SCAN of the resource table. https://www.sqlite.org/eqp.html
"""

from __future__ import annotations

import sqlite3

import pytest
from fastapi import FastAPI

from resources.ids import now_ms
from resources.search.dates import format_instant
from resources.search.parse import parse_search
from resources.store.sqlite.compile import compile_search
from server.settings import Settings
from subscriptions.escalation import ESCALATION, overdue_search

pytestmark = pytest.mark.anyio


async def test_overdue_search_reads_indexes_only(app: FastAPI, settings: Settings) -> None:
    repository = app.state.services.repository
    now = now_ms()
    made = []
    for minutes, status, business in ((-2, "requested", None), (-1, "in-progress", None), (-9, "completed", None),
                                      (-5, "requested", "exhausted"), (3, "on-hold", "escalated")):
        task = {"resourceType": "Task", "status": status, "intent": "order",
                "restriction": {"period": {"end": format_instant(now + minutes * 60_000)}}}
        if business:
            task["businessStatus"] = {"coding": [{"system": ESCALATION, "code": business}]}
        made.append((await repository.create("Task", task)).resource)
    query = parse_search("Task", overdue_search(now, 100), repository.registry, strict=True).query
    clinical = repository.store.main  # the AuditEvents live in a store of their own
    sql, args, _, _ = compile_search(query, clinical.param_ids)
    assert "idx_date" in sql and "ORDER BY" in sql  # the deadline is tested and sorted on its index entries
    with sqlite3.connect(settings.sqlite_path) as conn:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]
        found = conn.execute(sql, args).fetchall()
    assert not [step for step in plan if step.startswith("SCAN")], plan
    assert any("USING COVERING INDEX idx_token_code_rid" in step for step in plan), plan  # the open statuses
    assert any(step.startswith("SEARCH idx_date") for step in plan), plan
    # overdue and open, oldest deadline first; the completed, the exhausted and the not yet due are left out
    assert [row[2] for row in found] == [t.id for t in made[:2]]
