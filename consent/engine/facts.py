"""What the consent engine needs of one resource (Facts), read from the search-index rows of its write.

Which search parameters give a type's clinical date, primary code, category and authors is data
(consent/data/fact-params.json); the store-query compilation of a verdict uses the same FactParams, so the
query and the per-resource re-check test the same values. https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources as pkg
from typing import Any

import orjson

from consent.engine.terms import PROFILE, RESOURCE_TYPES, Coding, Facts
from resources.search.index import IndexRows

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LABELS = "_security"
PROFILES = "_profile"


@dataclass(frozen=True)
class FactParams:
    """The search parameters of one type that give each fact (date: the first with a value wins)."""

    date: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    category: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()


@cache
def all_fact_params() -> dict[str, FactParams]:
    """Every type's FactParams from the shipped data file."""
    raw = orjson.loads(pkg.files("consent").joinpath("data/fact-params.json").read_bytes())
    return {kind: FactParams(*(tuple(entry.get(name, ())) for name in ("date", "code", "category", "authors")))
            for kind, entry in raw.items() if not kind.startswith("_")}


def fact_params(resource_type: str) -> FactParams:
    """The FactParams of a type (none for a type the data file does not list)."""
    return all_fact_params().get(resource_type, FactParams())


def _instant(ms: int) -> str:
    # isoformat keeps four year digits for the open start of a period (year 1), which strftime does not
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _tokens(rows: IndexRows, codes: tuple[str, ...] | str) -> frozenset[Coding]:
    wanted = (codes,) if isinstance(codes, str) else codes
    # a coding without a system cannot match a provision (problems() refuses those): left out
    return frozenset((system, value) for code, system, value, _ in rows.tokens
                     if code in wanted and system and value)


def facts_from_rows(resource_type: str, resource: dict[str, Any], rows: IndexRows) -> Facts:
    """The Facts of a resource from its index rows (Indexer.extract)."""
    params = fact_params(resource_type)
    classes = {(RESOURCE_TYPES, resource_type), *_tokens(rows, params.category)}
    classes.update((PROFILE, uri) for code, uri in rows.uris if code == PROFILES)
    date = None
    for code in params.date:
        found = [(low, high) for name, low, high in rows.dates if name == code]
        if found:
            date = (_instant(min(low for low, _ in found)), _instant(max(high for _, high in found)))
            break
    references = frozenset(f"{kind}/{id_}" for _, kind, id_, _ in rows.references if kind and id_)
    authors = frozenset(f"{kind}/{id_}" for code, kind, id_, _ in rows.references
                        if code in params.authors and kind and id_)
    id_ = resource.get("id")
    return Facts(resource_type, id_ if isinstance(id_, str) else None, frozenset(classes),
                 _tokens(rows, params.code), _tokens(rows, LABELS), date, references, authors)
