"""The engine's own searches, written as FHIR queries (`Type?a=b`) so rules that hold them stay data.

They run as the server itself (no request's guard), through the repository, so `:in` and sorting work as in a
client's search. https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import orjson

from resources.repository import Repository
from resources.search.parse import parse_search


async def find(repository: Repository, text: str) -> list[dict[str, Any]]:
    """The first page of resources a query finds (strict: an unknown parameter is an error, not ignored)."""
    kind, _, query = text.partition("?")
    parsed = parse_search(kind, parse_qsl(query, keep_blank_values=True), repository.registry, strict=True)
    page = await repository.search(parsed.query)
    return [orjson.loads(r.body or b"{}") for r in page.resources]


async def every_match(repository: Repository, text: str, page_size: int = 200) -> AsyncIterator[dict[str, Any]]:
    """Every resource a query finds, page by page (the store's cursor), so a large result is never held at once."""
    kind, _, query = text.partition("?")
    params = [*parse_qsl(query, keep_blank_values=True), ("_count", str(page_size))]
    cursor: str | None = None
    while True:
        parsed = parse_search(kind, params + ([("_cursor", cursor)] if cursor else []), repository.registry,
                              strict=True)
        page = await repository.search(parsed.query)
        for found in page.resources:
            yield orjson.loads(found.body or b"{}")
        if not page.next_cursor:
            return
        cursor = page.next_cursor
