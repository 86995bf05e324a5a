"""FactParams name real R4B search parameters of the right kind, and Facts come out of real index rows."""

from __future__ import annotations

from typing import Any

import pytest

from consent.engine import ConsentPolicy, holds, verdict
from consent.engine.facts import FactParams, all_fact_params, fact_params, facts_from_rows
from resources.models import resource_types
from resources.search.index import Indexer, load_patient_compartment
from resources.search.registry import SearchRegistry, default_registry
from tests.consent.builders import LAB, ask, consent, prov

KINDS = {"date": "date", "code": "token", "category": "token", "authors": "reference"}


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return default_registry(resource_types())


@pytest.fixture(scope="module")
def indexer(registry: SearchRegistry) -> Indexer:
    return Indexer(registry, load_patient_compartment())


def test_every_named_parameter_exists_with_its_kind(registry: SearchRegistry) -> None:
    table = all_fact_params()
    assert {"Observation", "Condition", "Procedure", "Encounter", "MedicationRequest", "DiagnosticReport",
            "Immunization", "AllergyIntolerance", "CarePlan", "Task", "Communication"} <= set(table)
    for resource_type, params in table.items():
        for fact, kind in KINDS.items():
            for code in getattr(params, fact):
                found = registry.get(resource_type, code)
                assert found is not None, f"{resource_type}.{code} ({fact}) is not an R4B search parameter"
                assert found.type == kind, f"{resource_type}.{code} is a {found.type}, not a {kind}"
    assert registry.get("Observation", "_security").type == "token"
    assert registry.get("Observation", "_profile").type == "uri"


def test_the_issue_named_date_parameters() -> None:
    assert fact_params("Observation").date == ("date",)
    assert fact_params("Condition").date == ("onset-date", "recorded-date")
    assert fact_params("MedicationRequest").date == ("authoredon",)
    assert fact_params("Task").date == ("authored-on",)
    assert fact_params("Patient") == FactParams()


OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
             "profile": ["http://example.org/StructureDefinition/glucose"]},
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "laboratory"}, {"code": "no-system"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}], "text": "Glucose"},
    "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/e1"},
    "performer": [{"reference": "Practitioner/gp"}], "effectiveDateTime": "2026-05-01",
}


def test_facts_of_an_observation(indexer: Indexer) -> None:
    facts = facts_from_rows("Observation", OBSERVATION, indexer.extract("Observation", OBSERVATION))
    assert facts.type == "Observation" and facts.id == "o1"
    assert facts.classes == {("http://hl7.org/fhir/resource-types", "Observation"), LAB,
                             ("urn:ietf:rfc:3986", "http://example.org/StructureDefinition/glucose")}
    assert facts.codes == {("http://loinc.org", "2339-0")}
    assert facts.labels == {("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R")}
    assert facts.date == ("2026-05-01T00:00:00.000Z", "2026-05-01T23:59:59.999Z")
    assert {"Patient/p1", "Encounter/e1", "Practitioner/gp"} <= facts.references
    assert facts.authors == {"Practitioner/gp"}


def test_the_first_date_parameter_with_a_value_wins(indexer: Indexer) -> None:
    both = {"resourceType": "Condition", "id": "k1", "subject": {"reference": "Patient/p1"},
            "onsetPeriod": {"start": "2020-01-01"}, "recordedDate": "2026-01-01"}
    recorded = {**both, "onsetPeriod": None}
    del recorded["onsetPeriod"]
    undated = {"resourceType": "Condition", "id": "k2", "subject": {"reference": "Patient/p1"},
               "onsetString": "in childhood"}
    date = facts_from_rows("Condition", both, indexer.extract("Condition", both)).date
    assert date is not None and date[0] == "2020-01-01T00:00:00.000Z" and date[1].startswith("9999-12-31")
    assert facts_from_rows("Condition", recorded, indexer.extract("Condition", recorded)).date == (
        "2026-01-01T00:00:00.000Z", "2026-01-01T23:59:59.999Z")
    assert facts_from_rows("Condition", undated, indexer.extract("Condition", undated)).date is None


def test_facts_feed_the_engine(indexer: Indexer) -> None:
    labs_hidden = [consent(prov("permit", children=(prov("deny", cls=(LAB,)),)))]
    vital = {**OBSERVATION, "meta": {}, "category": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}]}
    found = verdict(labs_hidden, ask(), ConsentPolicy(sensitive=frozenset()))
    lab = facts_from_rows("Observation", OBSERVATION, indexer.extract("Observation", OBSERVATION))
    assert not holds(found.expr, lab)
    assert holds(found.expr, facts_from_rows("Observation", vital, indexer.extract("Observation", vital)))
