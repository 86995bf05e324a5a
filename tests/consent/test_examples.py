"""The shipped example Consents (consent/data/examples): valid R4B, evaluable, and deciding what they promise."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources as pkg
from typing import Any

import orjson
import pytest

from consent.engine import Actor, Ask, ConsentPolicy, Facts, decide, problems
from resources.models import model_issues
from resources.validation import precheck
from tests.consent.builders import HMARKT, HRESCH, LAB, LOINC, TREAT, TYPES, ask, both, clinician, obs

NAMES = ("consent-pcf-opt-in", "consent-opt-out", "consent-hide-sensitive-except-gp", "consent-marketing-opt-in",
         "consent-glucometer-collection")
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CLINIC = "Organization/clinic"
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def example(name: str) -> dict[str, Any]:
    found: dict[str, Any] = orjson.loads(pkg.files("consent").joinpath(f"data/examples/{name}.json").read_bytes())
    return found


def at(question: Ask, now: datetime = NOW) -> Ask:
    """The ask about the examples' patient at a given time."""
    return replace(question, patient="example", now=now)


@pytest.mark.parametrize("name", NAMES)
def test_example_is_valid_and_evaluable(name: str) -> None:
    consent = example(name)
    assert consent["id"] == name.removeprefix("consent-")
    assert model_issues("Consent", consent) == []
    assert precheck(consent, expected_type="Consent")[1:] == ([], [])
    assert problems(consent) == []


def test_pcf_opt_in() -> None:
    consent = [example("consent-pcf-opt-in")]
    staff = clinician("Practitioner/dr1", CLINIC)
    clinic_system = Actor(frozenset({CLINIC}), kind="clinic-system")
    assert both(consent, at(ask(staff)), obs())
    # operations is not treatment: the implicit policy would deny it, the consent permits it
    assert both(consent, at(ask(clinic_system, (TREAT[0], "HOPERAT"))), obs())
    assert not both([], at(ask(clinic_system, (TREAT[0], "HOPERAT"))), obs())
    # research is not covered: the consent does not apply and basic-normal denies
    assert not both(consent, at(ask(staff, HRESCH)), obs())
    # before it was given, the consent is not a candidate
    assert not both(consent, at(ask(clinic_system, (TREAT[0], "HOPERAT")), datetime(2026, 1, 1, tzinfo=UTC)), obs())


def test_opt_out() -> None:
    consent = [example("consent-opt-out")]
    assert not both(consent, at(ask(clinician())), obs())
    assert both(consent, at(ask(clinician(), (TREAT[0], "BTG"), break_glass=True)), obs())
    assert both(consent, at(ask(Actor(frozenset({"Patient/example"}), kind="self"))), obs())


PSY = (ACT, "PSY")
HIV_TEST = (LOINC, "75622-1")
PHQ9 = (LOINC, "44249-1")
SURVEY = ("http://terminology.hl7.org/CodeSystem/observation-category", "survey")


@pytest.mark.parametrize(("facts", "others_see"), [
    (obs(), True),
    (obs(labels=(PSY,)), False),
    (obs(labels=((ACT, "HIV"),)), False),
    (obs(LAB, HIV_TEST), False),
    (obs(SURVEY, PHQ9), False),
    (obs(SURVEY), True),
    (Facts("Condition", "k1", frozenset({(TYPES, "Condition")}), frozenset({HIV_TEST})), True),
], ids=["vital", "PSY label", "HIV label", "HIV test", "PHQ-9", "other survey", "Condition with the code"])
def test_hide_mental_health_and_hiv_except_gp(facts: Facts, others_see: bool) -> None:
    consent = [example("consent-hide-sensitive-except-gp")]
    assert both(consent, at(ask(clinician("Practitioner/other"))), facts) is others_see
    assert both(consent, at(ask(clinician("Practitioner/gp"))), facts)


def test_hidden_hiv_test_is_explained() -> None:
    found = decide([example("consent-hide-sensitive-except-gp")], at(ask(clinician("Practitioner/other"))),
                   ConsentPolicy(), obs(LAB, HIV_TEST))
    assert not found.permit
    assert [(b.consent, b.path, b.type) for b in found.basis] == [
        ("Consent/hide-sensitive-except-gp", "provision.provision[1]", "deny")]


def test_marketing_opt_in() -> None:
    consent = [example("consent-marketing-opt-in")]
    marketer = Actor(frozenset({CLINIC}), kind="clinic-system")
    assert both(consent, at(ask(marketer, HMARKT)), obs())
    assert not both([], at(ask(marketer, HMARKT)), obs(), ConsentPolicy(implicit="all-normal"))
    assert not both(consent, at(ask(marketer, HMARKT), datetime(2027, 4, 1, tzinfo=UTC)), obs())
    # treatment follow-up needs no marketing consent and is not governed by this one
    assert both(consent, at(ask(clinician())), obs())


def test_glucometer_vendor_collection() -> None:
    consent = [example("consent-glucometer-collection")]
    vendor = Actor(frozenset({"Organization/glucovendor"}), kind="other", third_party=True)
    other = Actor(frozenset({"Organization/othervendor"}), kind="other", third_party=True)
    condition = Facts("Condition", None, frozenset({(TYPES, "Condition")}))
    assert both(consent, at(ask(vendor, action="collect")), obs(id=None))
    assert not both([], at(ask(vendor, action="collect")), obs(id=None))
    assert not both(consent, at(ask(vendor, action="collect")), condition)
    assert not both(consent, at(ask(other, action="collect")), obs(id=None))
    # collecting is not reading: the vendor may not read the patient's record
    assert not both(consent, at(ask(vendor)), obs())
