"""Which searches a de-identified view refuses (they would be oracles for what it hides), case by case."""

from __future__ import annotations

from functools import cache

import pytest

from consent.deidentify_profile import shipped_profile
from consent.deidentify_search import refuse_identifying
from resources.errors import Forbidden
from resources.models import resource_types
from resources.search.parse import parse_search
from resources.search.query import SearchQuery
from resources.search.registry import SearchRegistry, default_registry


@cache
def _registry() -> SearchRegistry:
    return default_registry(resource_types())


REFUSED: list[tuple[str, str, str]] = [
    ("Patient", "name=Alice", "name"),
    ("Patient", "family:exact=Alpha", "family"),
    ("Patient", "given=Al", "given"),
    ("Patient", "phonetic=Alis", "phonetic"),
    ("Patient", "identifier=urn:mrn|A-1", "identifier"),
    ("Patient", "identifier:missing=false", "identifier"),
    ("Patient", "telecom=555", "telecom"),
    ("Patient", "email=a@example.org", "email"),
    ("Patient", "phone=555", "phone"),
    ("Patient", "address=Main", "address"),
    ("Patient", "address-city=Hangzhou", "address-city"),
    ("Patient", "address-postalcode=310000", "address-postalcode"),
    ("Patient", "birthdate=1980-05-12", "birthdate"),
    ("Patient", "birthdate=1980-05", "birthdate"),
    ("Patient", "birthdate=ge1980-05-01", "birthdate"),
    ("Patient", "death-date=2020-01-02", "death-date"),
    ("Patient", "_sort=family", "family"),
    ("Patient", "_sort=-birthdate", "birthdate"),
    ("Practitioner", "name=Smith", "name"),
    ("Observation", "identifier=LAB-77", "identifier"),
    ("Observation", "subject:Patient.name=Alice", "name"),
    ("Observation", "patient.identifier=A-1", "identifier"),
    ("Patient", "_has:Observation:patient:identifier=LAB-77", "identifier"),
    ("Observation", "subject:Patient.birthdate=1980-05-12", "birthdate"),
]

ALLOWED: list[tuple[str, str]] = [
    ("Patient", "gender=female"),
    ("Patient", "birthdate=1980"),
    ("Patient", "birthdate=ge1980&birthdate=lt1990"),
    ("Patient", "birthdate:missing=true"),
    ("Patient", "address-state=Zhejiang"),
    ("Patient", "address-country=CN"),
    ("Patient", "_id=abc"),
    ("Observation", "code=http://loinc.org|8867-4&subject=Patient/abc"),
    ("Observation", "subject:Patient.gender=female"),
    ("Observation", "date=2026-01-02"),
    ("Patient", "_sort=_lastUpdated"),
]


def _query(resource_type: str, text: str) -> SearchQuery:
    params = [tuple(p.split("=", 1)) for p in text.split("&")]
    return parse_search(resource_type, params, _registry(), strict=True).query


@pytest.mark.parametrize(("resource_type", "text", "named"), REFUSED, ids=[f"{t}?{q}" for t, q, _ in REFUSED])
def test_refused(resource_type: str, text: str, named: str) -> None:
    with pytest.raises(Forbidden) as caught:
        refuse_identifying(_query(resource_type, text), shipped_profile())
    issue = caught.value.issues[0]
    assert issue.code == "forbidden" and issue.expression == (named,) and f"'{named}'" in issue.diagnostics


@pytest.mark.parametrize(("resource_type", "text"), ALLOWED, ids=[f"{t}?{q}" for t, q in ALLOWED])
def test_allowed(resource_type: str, text: str) -> None:
    refuse_identifying(_query(resource_type, text), shipped_profile())
