"""C3 candidate consents and C4 provision matching, element by element, as tables.

A deny provision under a permit root is used to observe a match: the resource is hidden exactly when the
nested provision matches.
"""

from __future__ import annotations

from typing import Any

import pytest

from consent.engine import Actor, Ask, ConsentPolicy, Facts, candidates
from tests.consent.builders import (
    ACT,
    HIV,
    HMARKT,
    LAB,
    NOW,
    ORG,
    PULSE,
    PURPOSE,
    TREAT,
    TYPES,
    VITAL,
    ask,
    both,
    clinician,
    consent,
    obs,
    prov,
    system,
)

PSY = (ACT, "PSY")
ETH = (ACT, "ETH")
PROFILE = "http://example.org/StructureDefinition/glucose"


def hidden_by(nested: dict[str, Any], question: Ask, facts: Facts) -> bool:
    """True when the nested deny provision matches this ask and resource."""
    return not both([consent(prov("permit", children=(nested,)))], question, facts, ConsentPolicy())


MAY = {"start": "2026-05-01", "end": "2026-05-31"}
ROWS: list[tuple[str, dict[str, Any], Ask, Facts, bool]] = [
    # actor: by reference or by identifier; any listed actor matches
    ("actor reference", prov("deny", actor=("Practitioner/gp",)), ask(), obs(), True),
    ("actor other reference", prov("deny", actor=("Practitioner/other",)), ask(), obs(), False),
    ("actor one of several", prov("deny", actor=("Practitioner/x", "Practitioner/gp")), ask(), obs(), True),
    ("actor identifier", prov("deny", ident=((ORG, "glucoapp"),)), ask(system(kind="clinic-system")), obs(), True),
    ("actor identifier other system", prov("deny", ident=(("urn:other", "glucoapp"),)),
     ask(system(kind="clinic-system")), obs(), False),
    ("actor absent matches all", prov("deny"), ask(), obs(), True),
    # action: a read-type ask (access) matches access or disclose; other actions match themselves
    ("action access", prov("deny", action=("access",)), ask(), obs(), True),
    ("action disclose matches a read", prov("deny", action=("disclose",)), ask(), obs(), True),
    ("action collect does not match a read", prov("deny", action=("collect",)), ask(), obs(), False),
    ("action collect matches collect", prov("deny", action=("collect",)),
     ask(clinician(), action="collect"), obs(), True),
    ("action access does not match collect", prov("deny", action=("access",)),
     ask(clinician(), action="collect"), obs(), False),
    # purpose: system and code, no subsumption
    ("purpose same", prov("deny", purpose=(TREAT,)), ask(), obs(), True),
    ("purpose other", prov("deny", purpose=(HMARKT,)), ask(), obs(), False),
    ("purpose other system", prov("deny", purpose=(("urn:purpose", "TREAT"),)), ask(), obs(), False),
    ("purpose ETREAT is not TREAT", prov("deny", purpose=((PURPOSE, "ETREAT"),)), ask(), obs(), False),
    # class: resource type, category or profile
    ("class resource type", prov("deny", cls=((TYPES, "Observation"),)), ask(), obs(), True),
    ("class other type", prov("deny", cls=((TYPES, "Condition"),)), ask(), obs(), False),
    ("class category", prov("deny", cls=(LAB,)), ask(), obs(LAB), True),
    ("class other category", prov("deny", cls=(LAB,)), ask(), obs(VITAL), False),
    ("class profile", prov("deny", cls=(("urn:ietf:rfc:3986", PROFILE),)), ask(), obs(profiles=(PROFILE,)), True),
    # code: a coding of the primary code
    ("code", prov("deny", code=(HIV,)), ask(), obs(code=HIV), True),
    ("code other", prov("deny", code=(HIV,)), ask(), obs(code=PULSE), False),
    # securityLabel
    ("label", prov("deny", label=(PSY,)), ask(), obs(labels=(PSY,)), True),
    ("label other", prov("deny", label=(PSY,)), ask(), obs(labels=(ETH,)), False),
    ("label none", prov("deny", label=(PSY,)), ask(), obs(), False),
    # dataPeriod: within; an undated or straddling resource fails closed (matches for deny)
    ("dataPeriod within", prov("deny", data_period=MAY), ask(), obs(), True),
    ("dataPeriod outside", prov("deny", data_period=MAY),
     ask(), obs(date=("2026-04-01T00:00:00.000Z", "2026-04-02T00:00:00.000Z")), False),
    ("dataPeriod undated deny", prov("deny", data_period=MAY), ask(), obs(date=None), True),
    ("dataPeriod straddling deny", prov("deny", data_period=MAY),
     ask(), obs(date=("2026-04-20T00:00:00.000Z", "2026-05-02T00:00:00.000Z")), True),
    ("dataPeriod open end", prov("deny", data_period={"start": "2026-01-01"}), ask(), obs(), True),
    # data: instance, related, authoredby
    ("data instance", prov("deny", data=(("instance", "Observation/o1"),)), ask(), obs(), True),
    ("data instance other", prov("deny", data=(("instance", "Observation/o2"),)), ask(), obs(), False),
    ("data related", prov("deny", data=(("related", "Encounter/e1"),)), ask(),
     obs(refs=("Patient/p1", "Encounter/e1")), True),
    ("data related other", prov("deny", data=(("related", "Encounter/e2"),)), ask(),
     obs(refs=("Patient/p1", "Encounter/e1")), False),
    ("data authoredby", prov("deny", data=(("authoredby", "Practitioner/psy"),)), ask(),
     obs(authors=("Practitioner/psy",)), True),
    ("data authoredby not a mere reference", prov("deny", data=(("authoredby", "Practitioner/psy"),)), ask(),
     obs(refs=("Practitioner/psy",)), False),
    ("data any entry", prov("deny", data=(("instance", "Observation/o9"), ("related", "Patient/p1"))), ask(),
     obs(), True),
    # period of the provision contains now
    ("period now", prov("deny", period={"start": "2026-01-01", "end": "2026-12-31"}), ask(), obs(), True),
    ("period past", prov("deny", period={"end": "2026-05-31"}), ask(), obs(), False),
    ("period future", prov("deny", period={"start": "2026-06-02"}), ask(), obs(), False),
    # every present element must match
    ("all elements", prov("deny", actor=("Practitioner/gp",), purpose=(TREAT,), cls=(LAB,), code=(HIV,)),
     ask(), obs(LAB, HIV), True),
    ("one element fails", prov("deny", actor=("Practitioner/gp",), purpose=(TREAT,), cls=(LAB,), code=(HIV,)),
     ask(), obs(VITAL, HIV), False),
]


@pytest.mark.parametrize(("nested", "question", "facts", "expected"), [r[1:] for r in ROWS],
                         ids=[r[0] for r in ROWS])
def test_provision_match(nested: dict[str, Any], question: Ask, facts: Facts, expected: bool) -> None:
    assert hidden_by(nested, question, facts) is expected


def test_permit_date_fails_closed() -> None:
    # under an opt-in (deny root) a dated permit never reveals an undated or straddling resource
    dated = [consent(prov("deny", children=(prov("permit", data_period=MAY),)))]
    assert both(dated, ask(), obs())
    assert not both(dated, ask(), obs(date=None))
    assert not both(dated, ask(), obs(date=("2026-04-20T00:00:00.000Z", "2026-05-02T00:00:00.000Z")))


CANDIDATES: list[tuple[str, dict[str, Any], ConsentPolicy, bool]] = [
    ("active", consent(prov("deny")), ConsentPolicy(), True),
    ("other patient", consent(prov("deny"), patient="p2"), ConsentPolicy(), False),
    ("absolute patient reference", {**consent(prov("deny")), "patient": {"reference": "https://x/fhir/Patient/p1"}},
     ConsentPolicy(), True),
    ("draft", consent(prov("deny"), status="draft"), ConsentPolicy(), False),
    ("inactive", consent(prov("deny"), status="inactive"), ConsentPolicy(), False),
    ("other scope", {**consent(prov("deny")), "scope": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]}}, ConsentPolicy(),
     False),
    ("category configured", consent(prov("deny"), category=("urn:c", "a")),
     ConsentPolicy(categories=frozenset({("urn:c", "a")})), True),
    ("category not configured", consent(prov("deny"), category=("urn:c", "b")),
     ConsentPolicy(categories=frozenset({("urn:c", "a")})), False),
    ("period open", consent(prov("deny", period={"start": "2026-01-01"})), ConsentPolicy(), True),
    ("period ended", consent(prov("deny", period={"end": "2026-05-31T23:59:59Z"})), ConsentPolicy(), False),
    ("period ends today (date)", consent(prov("deny", period={"end": "2026-06-01"})), ConsentPolicy(), True),
    ("period not begun", consent(prov("deny", period={"start": "2026-06-01T12:00:01Z"})), ConsentPolicy(), False),
]


@pytest.mark.parametrize(("given", "policy", "expected"), [r[1:] for r in CANDIDATES],
                         ids=[r[0] for r in CANDIDATES])
def test_candidates(given: dict[str, Any], policy: ConsentPolicy, expected: bool) -> None:
    assert (candidates([given], "p1", NOW, policy) == [given]) is expected


def test_identifier_only_actor_is_not_a_reference_match() -> None:
    # a client known only by its client id is not matched by a provision naming an Organization it is not given
    actor = Actor(frozenset(), frozenset({(ORG, "glucoapp")}), "other")
    assert not hidden_by(prov("deny", actor=("Organization/vendor",)), ask(actor), obs())
