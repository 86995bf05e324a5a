"""Small builders for Consent JSON, asks and resource facts used by the consent engine tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from consent.engine import PURPOSE, Actor, Ask, ConsentPolicy, Facts, decide, holds, verdict

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
TYPES = "http://hl7.org/fhir/resource-types"
LOINC = "http://loinc.org"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
ORG = "http://careloop.health/fhir/sid/client-id"

ROLE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}
TREAT = (PURPOSE, "TREAT")
HMARKT = (PURPOSE, "HMARKT")
HRESCH = (PURPOSE, "HRESCH")
BTG = (PURPOSE, "BTG")
LAB = (CATEGORY, "laboratory")
VITAL = (CATEGORY, "vital-signs")
R = (CONF, "R")
V = (CONF, "V")
HIV = (LOINC, "75622-1")
PULSE = (LOINC, "8867-4")


def coding(pair: tuple[str, str]) -> dict[str, str]:
    return {"system": pair[0], "code": pair[1]}


def prov(type: str | None = None, *, actor: tuple[str, ...] = (), ident: tuple[tuple[str, str], ...] = (),
         action: tuple[str, ...] = (), purpose: tuple[tuple[str, str], ...] = (),
         cls: tuple[tuple[str, str], ...] = (), code: tuple[tuple[str, str], ...] = (),
         label: tuple[tuple[str, str], ...] = (), data_period: dict[str, str] | None = None,
         data: tuple[tuple[str, str], ...] = (), period: dict[str, str] | None = None,
         children: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """A provision; only the elements given are present."""
    out: dict[str, Any] = {}
    if type is not None:
        out["type"] = type
    if period is not None:
        out["period"] = period
    actors = [{"role": ROLE, "reference": {"reference": ref}} for ref in actor]
    actors += [{"role": ROLE, "reference": {"identifier": {"system": s, "value": v}}} for s, v in ident]
    if actors:
        out["actor"] = actors
    if action:
        out["action"] = [{"coding": [{"system": ACTION, "code": a}]} for a in action]
    if purpose:
        out["purpose"] = [coding(p) for p in purpose]
    if cls:
        out["class"] = [coding(c) for c in cls]
    if code:
        out["code"] = [{"coding": [coding(c)]} for c in code]
    if label:
        out["securityLabel"] = [coding(c) for c in label]
    if data_period is not None:
        out["dataPeriod"] = data_period
    if data:
        out["data"] = [{"meaning": m, "reference": {"reference": ref}} for m, ref in data]
    if children:
        out["provision"] = list(children)
    return out


def consent(provision: dict[str, Any] | None, *, id: str = "c1", patient: str = "p1", status: str = "active",
            rule: str | None = None, date_time: str | None = None, version: str = "1",
            last_updated: str = "2026-01-01T00:00:00Z", category: tuple[str, str] | None = None) -> dict[str, Any]:
    """A stored patient-privacy Consent."""
    out: dict[str, Any] = {
        "resourceType": "Consent", "id": id, "meta": {"versionId": version, "lastUpdated": last_updated},
        "status": status, "patient": {"reference": f"Patient/{patient}"},
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [coding(category or ("http://loinc.org", "59284-0"))]}]}
    if provision is not None:
        out["provision"] = provision
    if rule is not None:
        out["policyRule"] = {"coding": [{"system": ACT, "code": rule}]}
    if date_time is not None:
        out["dateTime"] = date_time
    return out


def clinician(*refs: str, third_party: bool = False) -> Actor:
    return Actor(frozenset(refs or ("Practitioner/gp",)), frozenset(), "clinician", third_party)


def system(client: str = "glucoapp", *refs: str, kind: str = "other", third_party: bool = False) -> Actor:
    return Actor(frozenset(refs), frozenset({(ORG, client)}), kind, third_party)


def ask(actor: Actor | None = None, *purposes: tuple[str, str], action: str = "access", now: datetime = NOW,
        break_glass: bool = False, patient: str = "p1") -> Ask:
    return Ask(patient, actor or clinician(), frozenset(purposes or (TREAT,)), action, now, break_glass)


def obs(category: tuple[str, str] = VITAL, code: tuple[str, str] = PULSE, labels: tuple[tuple[str, str], ...] = (),
        date: tuple[str, str] | None = ("2026-05-01T00:00:00.000Z", "2026-05-01T00:00:00.000Z"), id: str = "o1",
        refs: tuple[str, ...] = ("Patient/p1",), authors: tuple[str, ...] = (),
        profiles: tuple[str, ...] = ()) -> Facts:
    """Facts of an Observation."""
    classes = {(TYPES, "Observation"), category, *(("urn:ietf:rfc:3986", p) for p in profiles)}
    return Facts("Observation", id, frozenset(classes), frozenset({code}), frozenset(labels), date,
                 frozenset(refs), frozenset(authors))


def both(consents: list[dict[str, Any]], question: Ask, facts: Facts,
         policy: ConsentPolicy | None = None) -> bool:
    """The permit answer, after checking that the verdict's expression and the direct decision agree."""
    policy = policy or ConsentPolicy()
    by_expr = holds(verdict(consents, question, policy).expr, facts)
    direct = decide(consents, question, policy, facts)
    assert by_expr == direct.permit, (by_expr, direct)
    return by_expr
