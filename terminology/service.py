"""The terminology service: stored CodeSystems, ValueSets and ConceptMaps found by canonical URL, cached.

https://hl7.org/fhir/R4B/terminology-service.html
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from resources.errors import Invalid, NotFound
from resources.search.query import Filter, SearchQuery, UriValue
from resources.store.protocol import Store, Write, every
from terminology.codesystem import CodeSystemIndex, Concept
from terminology.device_rules import canonical_range
from terminology.expansion import Coded, Expander, split_canonical

TERMINOLOGY_TYPES = frozenset({"CodeSystem", "ValueSet", "ConceptMap"})
_CONTENT_RANK = {"complete": 0, "fragment": 1, "supplement": 3, "example": 2, "not-present": 4}


@dataclass(frozen=True)
class Validation:
    """The answer of $validate-code: result, message and the display the code has."""

    result: bool
    message: str | None = None
    display: str | None = None
    system: str | None = None
    code: str | None = None


class TerminologyService:
    """Look-up, validation, expansion, subsumption and translation over the stored terminology resources."""

    def __init__(self, store: Store, expansion_limit: int = 10_000) -> None:
        self.store = store
        self.expander = Expander(self, expansion_limit)
        self._code_systems: dict[tuple[str, str | None], CodeSystemIndex | None] = {}
        self._value_sets: dict[tuple[str, str | None], dict[str, Any] | None] = {}
        self._expansions: dict[tuple[str, str | None], list[Coded]] = {}
        store.add_commit_listener(self._on_commit)

    def _on_commit(self, writes: list[Write]) -> None:
        if any(w.type in TERMINOLOGY_TYPES for w in writes):  # a change can alter any dependent expansion
            self._code_systems.clear()
            self._value_sets.clear()
            self._expansions.clear()

    async def _by_url(self, resource_type: str, url: str, version: str | None) -> list[dict[str, Any]]:
        query = SearchQuery(resource_type, (Filter("url", "uri", None, (UriValue(url),)),), count=50)
        page = await self.store.search(query)
        found = [orjson.loads(r.body) for r in page.resources if r.body]
        if version is not None:
            found = [r for r in found if r.get("version") == version]
        return found

    # -- content source ---------------------------------------------------------------------------
    async def code_system(self, url: str, version: str | None = None) -> CodeSystemIndex | None:
        """The CodeSystem with this url (and version), preferring one that carries its concepts."""
        key = (url, version)
        if key not in self._code_systems:
            candidates = await self._by_url("CodeSystem", url, version)
            candidates.sort(key=lambda r: (_CONTENT_RANK.get(r.get("content", ""), 5), -len(r.get("concept") or [])))
            self._code_systems[key] = CodeSystemIndex.of(candidates[0]) if candidates else None
        return self._code_systems[key]

    async def value_set(self, url: str, version: str | None = None) -> dict[str, Any] | None:
        """The ValueSet with this url (and version)."""
        key = (url, version)
        if key not in self._value_sets:
            candidates = await self._by_url("ValueSet", url, version)
            self._value_sets[key] = candidates[0] if candidates else None
        return self._value_sets[key]

    async def concept_maps(self, url: str | None = None, source: str | None = None,
                           target: str | None = None) -> list[dict[str, Any]]:
        """ConceptMaps by url, or by source and target value set."""
        if url is not None:
            map_url, version = split_canonical(url)
            return await self._by_url("ConceptMap", map_url, version)
        found = [orjson.loads(r.body or b"{}") async for r in every(self.store, "ConceptMap")]
        return [m for m in found if (source is None or _uri(m, "source") == source)
                and (target is None or _uri(m, "target") == target)]

    # -- operations --------------------------------------------------------------------------------
    async def require_code_system(self, system: str, version: str | None = None) -> CodeSystemIndex:
        """The CodeSystem, or 404 naming the system."""
        found = await self.code_system(system, version)
        if found is None:
            raise NotFound(f"The code system {system}{'|' + version if version else ''} is not known here",
                           code="not-found", expression=("system",))
        return found

    async def lookup(self, system: str, code: str, version: str | None = None) -> tuple[CodeSystemIndex, Concept]:
        """$lookup: the concept, or 404 for an unknown system or code."""
        index = await self.require_code_system(system, version)
        concept = index.find(code)
        if concept is None:
            raise NotFound(f"Code '{code}' is not in the code system {system}", code="code-invalid",
                           expression=("code",))
        return index, concept

    async def expand(self, canonical: str) -> list[Coded]:
        """The expansion of a value set by canonical url, cached until terminology changes."""
        key = split_canonical(canonical)
        if key not in self._expansions:
            self._expansions[key] = await self.expander.expand_url(canonical)
        return self._expansions[key]

    async def validate_in_value_set(self, value_set: dict[str, Any] | str, system: str | None, code: str,
                                    display: str | None = None) -> Validation:
        """$validate-code against a value set (a canonical or a resource)."""
        items = await self.expand(value_set) if isinstance(value_set, str) else await self.expander.expand(value_set)
        name = value_set if isinstance(value_set, str) else value_set.get("url", "the value set")
        match = next((c for c in items if c.code == code and (system is None or c.system == system)), None)
        if match is None:
            where = f"{system}#{code}" if system else code
            return Validation(False, f"The code {where} is not in the value set {name}")
        return _check_display(match.display, display, match.system, code)

    async def validate_in_code_system(self, system: str, code: str, version: str | None = None,
                                      display: str | None = None) -> Validation:
        """$validate-code against a code system."""
        index = await self.require_code_system(system, version)
        concept = index.find(code)
        if concept is None:
            return Validation(False, f"Unknown code '{code}' in the code system {system}")
        return _check_display(concept.display, display, system, concept.code)

    async def subsumes(self, system: str, code_a: str, code_b: str, version: str | None = None) -> str:
        """$subsumes: the relation of code A to code B."""
        index = await self.require_code_system(system, version)
        for name, code in (("codeA", code_a), ("codeB", code_b)):
            if index.find(code) is None:
                raise NotFound(f"Code '{code}' is not in the code system {system}", code="code-invalid",
                               expression=(name,))
        return index.subsumes(code_a, code_b)

    # -- search (resources.search.codesets.TerminologyResolver) -----------------------------------
    def canonical_range(self, unit: str, low: float, high: float) -> tuple[str, float, float] | None:
        """A quantity search range in its canonical UCUM unit."""
        return canonical_range(unit, low, high)

    async def value_set_codes(self, canonical: str) -> frozenset[tuple[str, str]]:
        """(system, code) of every code in a value set, for :in and :not-in."""
        return frozenset((c.system, c.code) for c in await self.expand(canonical))

    async def related_codes(self, system: str, code: str, direction: str) -> frozenset[str]:
        """The code with its descendants (:below) or ancestors (:above) in its code system."""
        index = await self.code_system(system)
        if index is None:
            raise Invalid(f"The code system {system} is not known here, so ':{direction}' cannot be evaluated",
                          code="not-supported")
        if index.find(code) is None:
            raise Invalid(f"Code '{code}' is not in the code system {system}", code="code-invalid")
        related = index.descendants(code) if direction == "below" else index.ancestors(code)
        return frozenset(related | {code})


def _uri(concept_map: dict[str, Any], side: str) -> str | None:
    value = concept_map.get(f"{side}Uri") or concept_map.get(f"{side}Canonical")
    return value if isinstance(value, str) else None


def _check_display(known: str | None, given: str | None, system: str, code: str) -> Validation:
    if given is not None and known is not None and given.strip().lower() != known.strip().lower():
        return Validation(False, f"The display '{given}' is not the display of {system}#{code}: '{known}'", known,
                          system, code)
    return Validation(True, None, known, system, code)
