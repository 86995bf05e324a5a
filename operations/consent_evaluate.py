"""Consent/$evaluate: the consent engine's decision for a patient, an actor, purposes, an action and a resource.

It answers permit, deny or conditional (no resource given and the answer depends on it), with every
provision that took part, the implicit policy when it did, and a readable reason. Compliance officers and
support staff use it (roles auditor, support), and whoever has unrestricted access; everyone else gets 403.
https://hl7.org/fhir/R4B/consent.html
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from consent.access import Access
from consent.engine import PURPOSE, Actor, Ask, Coding, Decision, decide, verdict
from consent.engine.expr import instant_range
from consent.engine.facts import facts_from_rows
from consent.engine.match import epoch_ms, from_ms
from consent.engine.model import ref_key
from consent.engine.terms import ACTIONS, ACTOR_KINDS, CLIENT_ID, Facts
from operations.cohort import scan
from operations.context import OperationCall
from operations.parameter_definitions import param as _param
from operations.parameters import OperationInput, parameters, part
from resources.errors import Forbidden, Invalid, NotFound
from resources.guard import GUARD, current_guard
from resources.models import resource_types
from resources.search.dates import format_instant

ROLES = frozenset({"auditor", "support"})
KNOWN = ("patient", "actor", "purpose", "action", "resource", "time", "actor-kind", "third-party", "break-glass")
CLINICIAN_TYPES = ("Practitioner", "PractitionerRole")


def _require_role() -> None:
    """403 unless the caller is an auditor, support staff, or unrestricted (authorization off, or the server)."""
    guard = current_guard()
    if guard is None:
        return
    access = getattr(guard, "access", None)
    if isinstance(access, Access) and (access.unrestricted or not ROLES.isdisjoint(access.roles)):
        return
    raise Forbidden("Consent/$evaluate is for compliance officers and support staff (role auditor or support)",
                    code="forbidden")


def _refuse_unknown(given: OperationInput) -> None:
    unknown = sorted({p["name"] for p in given.parts} - set(KNOWN))
    if unknown:
        raise Invalid(f"Unknown parameter(s) {', '.join(unknown)}; $evaluate takes {', '.join(KNOWN)}",
                      code="not-supported", expression=tuple(unknown))


def _patient(given: OperationInput) -> str:
    found = [p for p in given.parts if p["name"] == "patient"]
    if len(found) != 1:
        raise Invalid("Parameter 'patient' is required once (a reference to the Patient)", code="required",
                      expression=("patient",))
    value = found[0].get("valueReference")
    text = found[0].get("valueString") if given.query else None
    key = ref_key(value) if isinstance(value, dict) else (ref_key({"reference": text}) or (
        f"Patient/{text}" if isinstance(text, str) and text and "/" not in text else None))
    if key is None or not key.startswith("Patient/"):
        raise Invalid("Parameter 'patient' must reference a Patient (Patient/id)", code="value",
                      expression=("patient",))
    return key.removeprefix("Patient/")


def _actor_part(part_: dict[str, Any], query: bool) -> tuple[set[str], set[Coding]]:
    refs: set[str] = set()
    ids: set[Coding] = set()
    text = part_.get("valueString") if query else None
    reference = part_.get("valueReference")
    identifier = part_.get("valueIdentifier") or (reference.get("identifier") if isinstance(reference, dict)
                                                  else None)
    if isinstance(text, str):  # GET: Type/id, or system|value
        system, sep, value = text.rpartition("|")
        if sep:
            identifier = {"system": system, "value": value}
        else:
            reference = {"reference": text}
    key = ref_key(reference) if isinstance(reference, dict) else None
    if key is not None:
        refs.add(key)
    if isinstance(identifier, dict) and isinstance(identifier.get("system"), str) and isinstance(
            identifier.get("value"), str) and identifier["system"] and identifier["value"]:
        ids.add((identifier["system"], identifier["value"]))
    if not refs and not ids:
        raise Invalid("Parameter 'actor' must be a Reference (Type/id) or an Identifier with system and value",
                      code="value", expression=("actor",))
    return refs, ids


def _actor(given: OperationInput, patient: str) -> Actor:
    refs: set[str] = set()
    ids: set[Coding] = set()
    for found in (p for p in given.parts if p["name"] == "actor"):
        more_refs, more_ids = _actor_part(found, given.query)
        refs |= more_refs
        ids |= more_ids
    if not refs and not ids:
        raise Invalid("Parameter 'actor' is required: who asks (a Reference or an Identifier; a client as "
                      f"{CLIENT_ID}|client-id)", code="required", expression=("actor",))
    kind = given.text("actor-kind")
    if kind is None:
        kind = ("self" if f"Patient/{patient}" in refs else
                "clinician" if any(r.split("/")[0] in CLINICIAN_TYPES for r in refs) else "other")
    elif kind not in ACTOR_KINDS:
        raise Invalid(f"Parameter 'actor-kind' must be one of {', '.join(sorted(ACTOR_KINDS))}, not '{kind}'",
                      code="value", expression=("actor-kind",))
    return Actor(frozenset(refs), frozenset(ids), kind, bool(given.boolean("third-party")))


def _purposes(given: OperationInput) -> frozenset[Coding]:
    out: set[Coding] = set()
    for found in (p for p in given.parts if p["name"] == "purpose"):
        coding = found.get("valueCoding")
        if given.query and isinstance(found.get("valueString"), str):
            system, sep, code = found["valueString"].rpartition("|")
            coding = {"system": system if sep else PURPOSE, "code": code}
        if not isinstance(coding, dict) or not isinstance(coding.get("system"), str) or not isinstance(
                coding.get("code"), str) or not coding["system"] or not coding["code"]:
            raise Invalid("Parameter 'purpose' must be a Coding with system and code (v3-ActReason)",
                          code="value", expression=("purpose",))
        out.add((coding["system"], coding["code"]))
    return frozenset(out)


def _time(given: OperationInput) -> datetime:
    text = given.text("time")
    if text is None:
        return datetime.now(UTC)
    found = instant_range(text)
    if found is None:
        raise Invalid(f"Parameter 'time' must be a FHIR dateTime, not '{text}'", code="value", expression=("time",))
    return from_ms(found[0])


def _action(given: OperationInput) -> str:
    action = given.text("action") or "access"
    if action not in ACTIONS:
        raise Invalid(f"Parameter 'action' must be one of {', '.join(sorted(ACTIONS))} "
                      f"(http://terminology.hl7.org/CodeSystem/consentaction), not '{action}'", code="value",
                      expression=("action",))
    return action


async def _facts(call: OperationCall) -> Facts | None:
    """The resource asked about: given inline, or a reference to a stored one (read with the server's rights)."""
    found = [p for p in call.input.parts if p["name"] == "resource"]
    if not found:
        return None
    if len(found) > 1:
        raise Invalid("Parameter 'resource' may be given once", code="value", expression=("resource",))
    repository = call.context.repository
    resource = found[0].get("resource")
    reference = found[0].get("valueReference")
    if call.input.query and isinstance(found[0].get("valueString"), str):
        reference = {"reference": found[0]["valueString"]}
    if isinstance(resource, dict):
        kind = await repository.validate(resource, None)
    else:
        key = ref_key(reference) if isinstance(reference, dict) else None
        kind, _, id_ = (key or "").partition("/")
        if not key or kind not in resource_types():
            raise Invalid("Parameter 'resource' must be a resource or a reference to a stored one (Type/id)",
                          code="value", expression=("resource",))
        stored = await repository.store.read(kind, id_)
        if stored is None or stored.body is None:
            raise NotFound(f"Parameter 'resource': {key} is not stored", code="not-found", expression=("resource",))
        resource = orjson.loads(stored.body)
    return facts_from_rows(kind, resource, repository.indexer.extract(kind, resource))


def _basis_parts(decision: Decision) -> list[dict[str, Any]]:
    return [{"name": "basis", "part": [
        {"name": "consent", "valueReference": {"reference": b.consent}},
        {"name": "path", "valueString": b.path},
        {"name": "type", "valueCode": b.type},
        {"name": "why", "valueString": b.why}]} for b in decision.basis]


async def run(call: OperationCall) -> dict[str, Any]:
    """Parameters: decision, policy, consent (each candidate), basis (each provision), valid-until, why."""
    _require_role()
    given = call.input
    _refuse_unknown(given)
    patient = _patient(given)
    question = Ask(patient, _actor(given, patient), _purposes(given), _action(given), _time(given),
                   bool(given.boolean("break-glass")))
    # the patient's Consents and the resource are read as the server's own work: the caller is entitled to
    # the explanation, which names consents and provisions but carries no clinical data
    token = GUARD.set(None)
    try:
        consents = [c async for c in scan(call.context.repository, "Consent", [("patient", f"Patient/{patient}")])]
        facts = await _facts(call)
    finally:
        GUARD.reset(token)
    policy = call.context.consent_policy
    decision = decide(consents, question, policy, facts)
    found = verdict(consents, question, policy)
    code = "conditional" if decision.depends else "permit" if decision.permit else "deny"
    return parameters(part("decision", "Code", code), part("policy", "Code", decision.policy),
                      *[part("consent", "Reference", {"reference": ref}) for ref in found.consents],
                      *_basis_parts(decision),
                      part("valid-until", "Instant", format_instant(epoch_ms(found.valid_until))
                           if found.valid_until else None),
                      part("why", "String", decision.why))


def definition(canonical: str, version: str) -> dict[str, Any]:
    """The OperationDefinition of Consent/$evaluate (served at canonical + "Consent-evaluate")."""
    return {
        "resourceType": "OperationDefinition", "id": "Consent-evaluate", "url": f"{canonical}Consent-evaluate",
        "version": version, "name": "ConsentEvaluate", "title": "Evaluate consent", "status": "active",
        "kind": "operation", "publisher": "CareLoop", "affectsState": False, "code": "evaluate",
        "resource": ["Consent"], "system": False, "type": True, "instance": False,
        "description": "The consent engine's decision for a patient, an actor, purposes of use, an action and "
                       "optionally a resource: permit, deny, or conditional when no resource is given and the "
                       "answer depends on it, with the consents, provisions and implicit policy that decided and "
                       "why (docs/consent.md). Only for roles auditor and support.",
        "parameter": [
            _param("patient", "in", 1, "1", "Reference", "The Patient whose Consents decide"),
            _param("actor", "in", 1, "*", "Reference", "Who asks: a Reference (Practitioner/1, Organization/2) "
                   "or its identifier; a client as identifier http://careloop.health/fhir/sid/client-id|id "
                   "(valueIdentifier is accepted too)"),
            _param("purpose", "in", 0, "*", "Coding", "Purposes of use (v3-ActReason: TREAT, HMARKT, BTG...)"),
            _param("action", "in", 0, "1", "code", "access (default: every read-type interaction), collect, "
                   "use, disclose or correct (http://terminology.hl7.org/CodeSystem/consentaction)"),
            _param("resource", "in", 0, "1", "Resource", "The resource asked about, or a Reference to a "
                   "stored one; absent: the decision that does not depend on the resource"),
            _param("time", "in", 0, "1", "dateTime", "When the decision is made (default: now)"),
            _param("actor-kind", "in", 0, "1", "code", "self, clinician, clinic-system or other (default: self "
                   "for the patient, clinician for a Practitioner or PractitionerRole, else other)"),
            _param("third-party", "in", 0, "1", "boolean", "The actor acts for another Organization than the "
                   "clinic's (default false)"),
            _param("break-glass", "in", 0, "1", "boolean", "Break-glass granted to an entitled caller "
                   "(default false)"),
            _param("decision", "out", 1, "1", "code", "permit, deny, or conditional (no resource given and the "
                   "answer depends on it)"),
            _param("policy", "out", 0, "1", "code", "The implicit policy when it took part (basic-normal, "
                   "all-normal, break-glass-only, deny; treatment-exempt or consent-required for collect)"),
            _param("consent", "out", 0, "*", "Reference", "Each candidate Consent (versioned)"),
            _param("basis", "out", 0, "*", None, "A provision that decided (or could, for conditional)", (
                _param("consent", "out", 1, "1", "Reference", "The Consent (versioned)"),
                _param("path", "out", 1, "1", "string", "The provision within it (provision.provision[0])"),
                _param("type", "out", 1, "1", "code", "permit or deny"),
                _param("why", "out", 1, "1", "string", "What the provision matches on"))),
            _param("valid-until", "out", 0, "1", "instant", "When a consent period next begins or ends"),
            _param("why", "out", 1, "1", "string", "The decision in a sentence")]}
