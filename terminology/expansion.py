"""ValueSet expansion: compose include/exclude with concept lists, filters and imported value sets.

https://hl7.org/fhir/R4B/valueset.html#compositions
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from resources.errors import Invalid, NotFound, NotSupported
from terminology.codesystem import CodeSystemIndex, Concept

FILTER_OPS = ("=", "is-a", "descendent-of", "is-not-a", "regex", "in", "not-in", "generalizes", "exists")


class TooCostly(Invalid):
    """An expansion larger than the configured limit (too-costly, 400)."""

    code = "too-costly"


@dataclass(frozen=True)
class Coded:
    """One code of an expansion."""

    system: str
    code: str
    display: str | None = None
    version: str | None = None
    inactive: bool = False
    abstract: bool = False


class ContentSource(Protocol):
    """Where the expander finds code systems and value sets by canonical URL."""

    async def code_system(self, url: str, version: str | None = None) -> CodeSystemIndex | None:
        """A CodeSystem by url (and version), indexed."""

    async def value_set(self, url: str, version: str | None = None) -> dict[str, Any] | None:
        """A ValueSet resource by url (and version)."""


def split_canonical(canonical: str) -> tuple[str, str | None]:
    """url|version into its parts."""
    url, _, version = canonical.partition("|")
    return url, version or None


class Expander:
    """Expands ValueSets against a content source, refusing expansions over `limit` codes."""

    def __init__(self, source: ContentSource, limit: int = 10_000) -> None:
        self.source = source
        self.limit = limit

    async def expand(self, value_set: dict[str, Any], depth: int = 0) -> list[Coded]:
        """Every code of the value set, in compose order, without duplicates."""
        if depth > 10:
            raise Invalid("ValueSet imports are nested too deeply (or circular)", code="processing")
        compose = value_set.get("compose")
        if not compose:
            contains = (value_set.get("expansion") or {}).get("contains")
            if contains is not None:  # a stored expansion and no definition
                return list(_flatten(contains))
            raise Invalid(f"ValueSet {value_set.get('url', '')} has no compose to expand", code="processing")
        included: dict[tuple[str, str], Coded] = {}
        for part in compose.get("include") or []:
            for item in await self._part(part, depth):
                included.setdefault((item.system, item.code), item)
                if len(included) > self.limit:
                    raise TooCostly(f"The expansion of {value_set.get('url', 'the value set')} has more than "
                                    f"{self.limit} codes")
        for part in compose.get("exclude") or []:
            for item in await self._part(part, depth):
                included.pop((item.system, item.code), None)
        if compose.get("inactive") is False:
            return [c for c in included.values() if not c.inactive]
        return list(included.values())

    async def expand_url(self, canonical: str, depth: int = 0) -> list[Coded]:
        """Expand a value set named by its canonical url (url|version allowed)."""
        url, version = split_canonical(canonical)
        found = await self.source.value_set(url, version)
        if found is None:
            raise NotFound(f"ValueSet {canonical} is not known here", code="not-found")
        return await self.expand(found, depth)

    async def _part(self, part: dict[str, Any], depth: int) -> list[Coded]:
        imported: list[set[tuple[str, str]]] = []
        imported_items: dict[tuple[str, str], Coded] = {}
        for canonical in part.get("valueSet") or []:
            url, version = split_canonical(canonical)
            if await self.source.value_set(url, version) is None:
                raise NotSupported(f"The value set imports {canonical}, which is not available on this server",
                                   code="not-supported")
            items = await self.expand_url(canonical, depth + 1)
            imported.append({(c.system, c.code) for c in items})
            for item in items:
                imported_items.setdefault((item.system, item.code), item)
        system = part.get("system")
        if system is None:
            if not imported:
                return []
            keys = set.intersection(*imported)
            return [imported_items[k] for k in imported_items if k in keys]
        items = await self._system_part(system, part)
        for keys in imported:
            items = [c for c in items if (c.system, c.code) in keys]
        return items

    async def _system_part(self, system: str, part: dict[str, Any]) -> list[Coded]:
        version = part.get("version")
        index = await self.source.code_system(system, version)
        concepts = part.get("concept")
        if concepts:
            out = []
            for item in concepts:
                code = item.get("code")
                concept = index.find(code) if index else None
                display = item.get("display") or (concept.display if concept else None)
                out.append(Coded(system, code, display, version,
                                 concept.inactive if concept else False, concept.abstract if concept else False))
            return out
        if index is None:
            raise NotSupported(f"The code system {system} is not available on this server, so a value set that "
                               f"includes all or part of it by filter cannot be expanded", code="not-supported")
        if index.content not in ("complete", "fragment"):
            raise NotSupported(f"The code system {system} is stored without its concepts (content "
                               f"'{index.content}'), so it cannot be expanded", code="not-supported")
        if index.content == "fragment" and not part.get("filter"):
            raise NotSupported(f"Only a subset of the code system {system} is available on this server, so a value "
                               f"set including all of it cannot be expanded", code="not-supported")
        selected: Iterable[Concept] = index.concepts.values()
        for flt in part.get("filter") or []:
            selected = apply_filter(index, flt, selected)
        return [Coded(system, c.code, c.display, index.version, c.inactive, c.abstract) for c in selected]


def apply_filter(index: CodeSystemIndex, flt: dict[str, Any], concepts: Iterable[Concept]) -> list[Concept]:
    """The concepts that pass one compose filter."""
    prop, op, value = flt.get("property"), flt.get("op"), flt.get("value")
    if op not in FILTER_OPS or not isinstance(value, str):
        raise NotSupported(f"ValueSet filter op '{op}' is not supported", code="not-supported")
    pool = list(concepts)
    if op in ("is-a", "descendent-of", "is-not-a", "generalizes"):
        if prop not in ("concept", "code", None):
            raise NotSupported(f"Filter '{op}' applies to the concept hierarchy, not to property '{prop}'")
        if op == "generalizes":
            keep = index.ancestors(value) | {value}
        else:
            keep = index.descendants(value) | ({value} if op != "descendent-of" else set())
        if op == "is-not-a":
            return [c for c in pool if c.code not in keep]
        return [c for c in pool if c.code in keep]
    if op in ("in", "not-in"):
        codes = {v.strip() for v in value.split(",")}
        return [c for c in pool if (c.code in codes) == (op == "in")]
    if op == "regex":
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise Invalid(f"ValueSet regex filter '{value}' is not a valid expression: {exc}") from exc
        if prop in ("code", "concept"):
            return [c for c in pool if pattern.fullmatch(c.code)]
        if prop == "display":
            return [c for c in pool if c.display and pattern.fullmatch(c.display)]
        return [c for c in pool if any(pattern.fullmatch(v) for v in index.property_values(c, prop or ""))]
    if op == "exists":
        want = value == "true"
        return [c for c in pool if any(True for _ in index.property_values(c, prop or "")) == want]
    if prop in ("code", "concept"):
        return [c for c in pool if c.code == value]
    if prop == "display":
        return [c for c in pool if c.display == value]
    return [c for c in pool if value in set(index.property_values(c, prop or ""))]


def _flatten(contains: list[dict[str, Any]]) -> Iterable[Coded]:
    for item in contains:
        if item.get("code") and item.get("system"):
            yield Coded(item["system"], item["code"], item.get("display"), item.get("version"),
                        bool(item.get("inactive")), bool(item.get("abstract")))
        yield from _flatten(item.get("contains") or [])
