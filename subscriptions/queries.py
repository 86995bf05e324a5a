"""The engine's own searches, written as FHIR queries (`Type?a=b`) so rules that hold them stay data.

They run as the server itself (no request's guard), through the repository, so `:in` and sorting work as in a
client's search. https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

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
