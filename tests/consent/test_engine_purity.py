"""The consent engine is pure: no I/O, no store, no clock (SECURITY.md §3.6; `Ask.now` is an input)."""

from __future__ import annotations

import ast
from pathlib import Path

from consent import engine

ENGINE = Path(engine.__file__).parent
ALLOWED = {"__future__", "collections", "collections.abc", "dataclasses", "datetime", "functools", "importlib",
           "itertools", "typing", "orjson", "resources.errors", "resources.search.dates", "resources.search.index"}


def test_engine_imports_nothing_that_does_io() -> None:
    for path in ENGINE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                assert name.startswith("consent.engine") or name in ALLOWED, f"{path.name} imports {name}"


def test_engine_reads_no_clock() -> None:
    for path in ENGINE.glob("*.py"):
        text = path.read_text()
        for call in ("now(", "utcnow(", "time.time(", "today("):
            assert call not in text, f"{path.name} calls {call}"

