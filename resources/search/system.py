"""Parsing of a system-level search (GET [base]?...): _type and the parameters every listed type shares.

https://hl7.org/fhir/R4B/search.html#searchcontexts
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from resources.errors import Invalid, NotSupported
from resources.search.parse import ParsedSearch, SearchLimits, parse_search
from resources.search.query import SYSTEM
from resources.search.registry import SearchRegistry


def parse_system_search(params: Sequence[tuple[str, str]], registry: SearchRegistry,
                        limits: SearchLimits, *, strict: bool = False) -> ParsedSearch:
    """A search across types: _type narrows the types; filters must be parameters every listed type has."""
    types: list[str] = []
    rest = []
    for key, raw in params:
        if key == "_type":
            for name in (t.strip() for t in raw.split(",") if t.strip()):
                if not registry.for_type(name):
                    raise Invalid(f"_type names unknown resource type '{name}'", code="value", expression=("_type",))
                types.append(name)
        elif key.partition(":")[0] in ("_sort", "_include", "_revinclude"):
            raise NotSupported(f"{key} is not supported in a search across types", expression=(key,))
        else:
            rest.append((key, raw))
    if types:
        parsed = [parse_search(t, rest, registry, limits, strict=strict) for t in dict.fromkeys(types)]
        first = parsed[0]
        for other in parsed[1:]:
            if [f.code for f in other.query.filters] != [f.code for f in first.query.filters]:
                raise Invalid("Every type in _type must define the search parameters used", code="invalid",
                              expression=("_type",))
        query = replace(first.query, resource_type=SYSTEM, types=tuple(dict.fromkeys(types)))
        return ParsedSearch(query, first.ignored)
    common = SearchRegistry(by_type={"Resource": dict(registry.common)})
    parsed_all = parse_search("Resource", rest, common, limits, strict=strict)
    return ParsedSearch(replace(parsed_all.query, resource_type=SYSTEM), parsed_all.ignored)
