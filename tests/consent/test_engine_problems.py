"""problems(): every shape of Consent whose decision cannot be derived is named by its element; good ones pass."""

from __future__ import annotations

from typing import Any

import pytest

from consent.engine import ConsentPolicy, problems
from tests.consent.builders import HRESCH, LAB, TREAT, ask, both, consent, obs, prov, system


def _with(provision: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    return {**consent(provision), **extra}


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("no base decision", consent({"purpose": [{"system": TREAT[0], "code": "TREAT"}]}), "Consent.provision.type"),
    ("no provision and no rule", consent(None), "Consent.provision.type"),
    ("rule of another system", consent(None, rule=None) | {"policyRule": {"coding": [{"system": "urn:x",
                                                                                      "code": "OPTIN"}]}},
     "Consent.provision.type"),
    ("rule not opt-in or opt-out", consent(None, rule="HIPAA-Auth"), "Consent.provision.type"),
    ("root type not permit or deny", consent({"type": "maybe"}), "Consent.provision.type"),
    ("nested without type", consent(prov("permit", children=(prov(None, cls=(LAB,)),))),
     "Consent.provision.provision[0].type"),
    ("deep nested without type", consent(prov("permit", children=(prov("deny"), prov("deny", children=(
        prov(None),))))), "Consent.provision.provision[1].provision[0].type"),
    ("data meaning dependents", consent(prov("deny", data=(("dependents", "Encounter/e1"),))),
     "Consent.provision.data[0].meaning"),
    ("data without reference", consent({"type": "deny", "data": [{"meaning": "related", "reference": {
        "display": "an encounter"}}]}), "Consent.provision.data[0].reference"),
    ("purpose without system", consent({"type": "deny", "purpose": [{"code": "TREAT"}]}),
     "Consent.provision.purpose[0]"),
    ("class without code", consent({"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types"}]}),
     "Consent.provision.class[0]"),
    ("securityLabel without system", consent({"type": "deny", "securityLabel": [{"code": "R"}]}),
     "Consent.provision.securityLabel[0]"),
    ("code as text only", consent({"type": "deny", "code": [{"text": "HIV"}]}), "Consent.provision.code[0]"),
    ("code coding without system", consent({"type": "deny", "code": [{"coding": [{"code": "75622-1"}]}]}),
     "Consent.provision.code[0].coding[0]"),
    ("action not a consentaction code", consent({"type": "deny", "action": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "read"}]}]}),
     "Consent.provision.action"),
    ("actor without reference", consent({"type": "deny", "actor": [{"role": {"text": "GP"}}]}),
     "Consent.provision.actor[0].reference"),
    ("dataPeriod start after end", consent(prov("deny", data_period={"start": "2021-01-01", "end": "2020-01-01"})),
     "Consent.provision.dataPeriod"),
    ("period start after end", consent(prov("permit", children=(prov("deny", period={
        "start": "2021-01-01", "end": "2020-12-31"}),))), "Consent.provision.provision[0].period"),
    ("period not a date", consent(prov("deny", period={"start": "soon"})), "Consent.provision.period"),
]


@pytest.mark.parametrize(("given", "expression"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused(given: dict[str, Any], expression: str) -> None:
    found = problems(given)
    assert expression in [p.expression for p in found], found
    assert all(p.message for p in found)


ACCEPTED: list[tuple[str, dict[str, Any], bool]] = [
    ("PCF root type permit", consent(prov("permit")), True),
    ("OPTIN rule, no provision", consent(None, rule="OPTIN"), True),
    ("OPTINR rule", consent(None, rule="OPTINR"), True),
    ("OPTOUT rule with a provision without type", consent({"period": {"start": "2020-01-01"}}, rule="OPTOUT"),
     False),
    ("OPTOUTE rule", consent(None, rule="OPTOUTE"), False),
    ("root type wins over the rule", consent(prov("permit"), rule="OPTOUT"), True),
    ("permit for an action of another system permits nothing", consent(prov("deny", children=(
        {"type": "permit", "action": [{"coding": [{"system": "urn:x", "code": "read"}]}]},))), False),
    ("deny for an action of another system denies every action", consent(prov("permit", children=(
        {"type": "deny", "action": [{"coding": [{"system": "urn:x", "code": "marketing"}]}]},))), False),
    ("known codes decide beside other systems", consent(prov("permit", children=(
        {"type": "deny", "action": [{"coding": [{"system": "urn:x", "code": "read"}]}, {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "collect"}]}]},))), True),
    ("period of one day", consent(prov("permit", period={"start": "2026-06-01", "end": "2026-06-01"})), True),
]


@pytest.mark.parametrize(("given", "permits"), [r[1:] for r in ACCEPTED], ids=[r[0] for r in ACCEPTED])
def test_accepted(given: dict[str, Any], permits: bool) -> None:
    assert problems(given) == []
    # without the consent the implicit policy would permit: the consent's own decision shows
    assert both([given], ask(system(), HRESCH), obs(), ConsentPolicy(implicit="all-normal")) is permits
