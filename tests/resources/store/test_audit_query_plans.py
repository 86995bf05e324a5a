"""The compliance queries of SECURITY.md §4 reach AuditEvents through indexes on SQLite, never by scanning.

Checked on a generated trail with SQLite's own plans (EXPLAIN QUERY PLAN) of the SQL the audit log compiles
(resources/store/audit_log/sqlite.py): every step on a table is a search by a key with its leading columns fixed
(the scans left are of the query's own intermediate results, d and e). https://www.sqlite.org/eqp.html
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

import pytest

from bench.audit_query import Raw
from bench.audit_trail import generate

pytestmark = pytest.mark.anyio

QUERIES = {
    "who saw a patient, newest first": "patient=Patient/p3&date=ge2024-01-01&date=lt2024-07-01&_sort=-date",
    "who saw a patient": "patient=Patient/p3&date=ge2024-01-01&date=lt2024-07-01",
    "what a user did": "agent=Practitioner/dr1&date=ge2024-01-01",
    "decisions based on a Consent": "entity=Consent/c-p3",
    "denials and failures": "outcome=4,8",
    "consent denials": "subtype=AuthZ-Consent&outcome=4",
    "deletions": "action=D",
    "one token": "policy=urn:ietf:params:oauth:jti:0123",
    "break-glass": "purpose=BTG",
    "a patient's break-glass, newest first": "patient=p3&purpose=BTG&_sort=-date",
}
# a step that reads a whole parameter's entries (its name and nothing more), or a whole table
_WIDE = re.compile(r"^SCAN (?!d$|e$)|KEY \(param=\?\)$")


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trail") / "audit.db"
    asyncio.run(generate(str(path), 3000, 30))
    return path


@pytest.mark.parametrize("query", QUERIES.values(), ids=list(QUERIES))
def test_compliance_query_uses_indexes(trail: Path, query: str) -> None:
    raw = Raw(str(trail))
    sql, args = raw.sql([(k, v) for k, _, v in (pair.partition("=") for pair in query.split("&"))])
    conn = sqlite3.connect(trail)
    plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]
    wide = [step for step in plan if _WIDE.search(step)]
    assert wide == [], (query, plan)
    assert raw.run(sql, args) >= 0
