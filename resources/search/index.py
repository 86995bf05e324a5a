"""Search-index extraction at write time: each parameter's expression turned into typed entries.

https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources as pkg
from typing import Any

import orjson

from resources.search import extract
from resources.search.codesets import CANONICAL_SYSTEM
from resources.search.composite import CompositePlan, composite_rows, plan_composite
from resources.search.normalize import normalize_string
from resources.search.paths import PENDING_LINKS, Accessor, compile_expression
from resources.search.registry import RESOURCE_TABLE_PARAMS, SearchRegistry


@dataclass
class IndexRows:
    """Every index entry of one resource, grouped by table."""

    tokens: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    strings: list[tuple[str, str, str]] = field(default_factory=list)
    references: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    dates: list[tuple[str, int, int]] = field(default_factory=list)
    numbers: list[tuple[str, float]] = field(default_factory=list)
    quantities: list[tuple[str, str | None, str | None, float]] = field(default_factory=list)
    uris: list[tuple[str, str]] = field(default_factory=list)
    composites: list[tuple[str, str | None, str | None, str | None, str | None, float | None, float | None]] = field(
        default_factory=list)
    compartments: list[str] = field(default_factory=list)


Emitter = Callable[[IndexRows, str, Any], None]
# (resource type, resource, parameter code, system, unit, value) -> [(canonical unit, canonical value)]
CanonicalQuantities = Callable[[str, dict[str, Any], str, str | None, str | None, float], list[tuple[str, float]]]


def _emit_token(rows: IndexRows, code: str, value: Any) -> None:
    for entry in extract.tokens(value):
        rows.tokens.append((code, *entry))
    for system, type_code, identifier in extract.identifier_types(value):
        rows.tokens.append((f"{code}:of-type", system, f"{type_code}|{identifier}", None))


def _emit_string(rows: IndexRows, code: str, value: Any) -> None:
    for text in extract.strings(value):
        rows.strings.append((code, normalize_string(text), text))


def _emit_reference(rows: IndexRows, code: str, value: Any) -> None:
    for entry in extract.references(value):
        rows.references.append((code, *entry))
    for ident in extract.reference_identifiers(value):
        rows.tokens.append((f"{code}:identifier", *ident))


def _emit_date(rows: IndexRows, code: str, value: Any) -> None:
    for low, high in extract.dates(value):
        rows.dates.append((code, low, high))


def _emit_number(rows: IndexRows, code: str, value: Any) -> None:
    for number in extract.numbers(value):
        rows.numbers.append((code, number))


def _emit_quantity(rows: IndexRows, code: str, value: Any) -> None:
    for system, unit, number in extract.quantities(value):
        rows.quantities.append((code, system, unit, number))


def _emit_uri(rows: IndexRows, code: str, value: Any) -> None:
    for uri in extract.uris(value):
        rows.uris.append((code, uri))


EMITTERS: dict[str, Emitter] = {
    "token": _emit_token, "string": _emit_string, "reference": _emit_reference, "date": _emit_date,
    "number": _emit_number, "quantity": _emit_quantity, "uri": _emit_uri,
}


@functools.cache
def _compartment_definition() -> dict[str, tuple[str, ...]]:
    merged: dict[str, tuple[str, ...]] = {}
    # R4B's definition first, then CareLoop's additions (docs/security.md, "The patient compartment")
    for name in ("CompartmentDefinition-patient.json", "CompartmentDefinition-careloop-patient.json"):
        definition = orjson.loads(pkg.files("resources").joinpath(f"data/{name}").read_bytes())
        for entry in definition["resource"]:
            if entry.get("param"):
                merged[entry["code"]] = tuple(dict.fromkeys((*merged.get(entry["code"], ()), *entry["param"])))
    return merged


def load_patient_compartment() -> dict[str, tuple[str, ...]]:
    """Resource type -> the search parameters that place it in a Patient compartment (R4B's, extended).

    https://hl7.org/fhir/R4B/compartmentdefinition-patient.html
    """
    return dict(_compartment_definition())


class Indexer:
    """Extracts index rows per resource type, compiling each parameter's accessor once."""

    def __init__(self, registry: SearchRegistry, compartment: dict[str, tuple[str, ...]],
                 canonical: CanonicalQuantities | None = None) -> None:
        self._registry = registry
        self._compartment = compartment
        self.canonical = canonical  # set by the composition root once terminology (UCUM) is available
        self._plans: dict[str, list[tuple[str, Accessor, Emitter]]] = {}
        self._composites: dict[str, list[tuple[str, CompositePlan]]] = {}

    def invalidate(self) -> None:
        """Forget compiled plans after the registry changed."""
        self._plans.clear()
        self._composites.clear()

    def _composite_plan(self, resource_type: str) -> list[tuple[str, CompositePlan]]:
        plans = self._composites.get(resource_type)
        if plans is None:
            plans = []
            for param in self._registry.for_type(resource_type).values():
                if param.type == "composite" and (plan := plan_composite(self._registry, param)) is not None:
                    plans.append((param.code, plan))
            self._composites[resource_type] = plans
        return plans

    def _plan(self, resource_type: str) -> list[tuple[str, Accessor, Emitter]]:
        plan = self._plans.get(resource_type)
        if plan is None:
            plan = []
            for param in self._registry.for_type(resource_type).values():
                emitter = EMITTERS.get(param.type)
                if emitter and param.expression and param.code not in RESOURCE_TABLE_PARAMS:
                    plan.append((param.code, compile_expression(param.expression), emitter))
            self._plans[resource_type] = plan
        return plan

    def extract(self, resource_type: str, resource: dict[str, Any],
                pending_links: Mapping[str, str] | None = None, only: frozenset[str] | None = None) -> IndexRows:
        """All index rows of one resource, plus its patient-compartment membership.

        pending_links are placeholder links a transaction will replace; remap() then rewrites the rows.
        only: the parameters wanted (with the compartment's), for a check that needs a few, not the index.
        """
        if pending_links:
            token = PENDING_LINKS.set(pending_links)
            try:
                return self.extract(resource_type, resource)
            finally:
                PENDING_LINKS.reset(token)
        if only is not None:
            only = only | frozenset(self._compartment.get(resource_type, ()))
        rows = IndexRows()
        for code, accessor, emitter in self._plan(resource_type):
            if only is None or code in only:
                for value in accessor(resource):
                    emitter(rows, code, value)
        for code, plan in self._composite_plan(resource_type):
            if only is None or code in only:
                rows.composites.extend((code, *row) for row in composite_rows(plan, resource))
        if self.canonical is not None and rows.quantities:
            rows.quantities.extend((code, CANONICAL_SYSTEM, unit, number)
                                   for code, system, given_unit, value in list(rows.quantities)
                                   for unit, number in self.canonical(resource_type, resource, code, system,
                                                                      given_unit, value))
        rows.composites = list(dict.fromkeys(rows.composites))
        rows.tokens = list(dict.fromkeys(rows.tokens))
        rows.references = list(dict.fromkeys(rows.references))
        rows.strings = list(dict.fromkeys(rows.strings))
        rows.compartments = self._patients(resource_type, resource, rows)
        return rows

    def parameters_reading(self, resource_type: str, element: str) -> frozenset[str]:
        """The type's search parameters whose expression names an element (for extract's `only`)."""
        return frozenset(p.code for p in self._registry.for_type(resource_type).values()
                         if p.expression and element in p.expression)

    def has_compartment(self, resource_type: str) -> bool:
        """True when resources of the type can be in a patient's compartment."""
        return bool(self._compartment.get(resource_type))

    def remap(self, resource_type: str, resource_id: str, rows: IndexRows, mapping: dict[str, str]) -> IndexRows:
        """Index rows as they would be after the transaction's placeholder and conditional links are replaced."""
        if not mapping:
            return rows

        def target(url: str | None) -> tuple[str, str] | None:
            found = mapping.get(url) if url else None
            if found is None or "/" not in found:
                return None
            kind, _, id_ = found.rpartition("/")
            return kind.rsplit("/", 1)[-1], id_

        references = []
        for code, kind, id_, url in rows.references:
            mapped = target(url)
            references.append((code, mapped[0], mapped[1], None) if mapped else (code, kind, id_, url))
        rows.references = list(dict.fromkeys(references))
        rows.uris = [(code, mapping.get(value, value)) for code, value in rows.uris]
        rows.tokens = [(code, system, mapping.get(value, value) if value else value, text)
                       for code, system, value, text in rows.tokens]
        rows.compartments = self._patients(resource_type, {"id": resource_id}, rows)
        return rows

    def _patients(self, resource_type: str, resource: dict[str, Any], rows: IndexRows) -> list[str]:
        params = set(self._compartment.get(resource_type, ()))
        ids = [resource["id"]] if resource_type == "Patient" and "id" in resource else []
        ids.extend(target_id for code, target_type, target_id, _ in rows.references
                   if code in params and target_type == "Patient" and target_id)
        return list(dict.fromkeys(ids))

