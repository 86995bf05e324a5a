"""A deterministic clinic population as transaction bundles, one bundle per patient.

Each patient is about 100 resources, shaped like a clinic's record (PERFORMANCE.md section 4): the Patient,
the Consent that permits device collection (some with a marketing opt-in), chronic Conditions, visits
(Encounter), bookings (Appointment, some missed), outreach (Communication), bills (Invoice, ChargeItem) and
device and lab Observations over ten years, some tied to a visit. POST entries with urn:uuid references, no
narratives, a fixed seed: every run on every machine loads the same data.
"""

from __future__ import annotations

import datetime
import random
import uuid
from collections.abc import Iterator
from typing import Any

FAMILIES = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
            "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
            "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez"]
GIVEN = ["Ann", "Bob", "Cid", "Dora", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Mo", "Nia"]
REGIONS = ["North", "South", "East", "West", "Centre"]
# (LOINC code, display, UCUM unit, low, high)
CODES = [("2339-0", "Glucose", "mmol/L", 3.5, 14.0), ("8867-4", "Heart rate", "/min", 45, 130),
         ("8480-6", "Systolic blood pressure", "mm[Hg]", 95, 185), ("8462-4", "Diastolic blood pressure",
                                                                    "mm[Hg]", 55, 115),
         ("29463-7", "Body weight", "kg", 45, 130), ("8310-5", "Body temperature", "Cel", 35.5, 39.5),
         ("59408-5", "Oxygen saturation", "%", 86, 100), ("72514-3", "Pain severity", "{score}", 0, 10),
         ("4548-4", "Hemoglobin A1c", "%", 4.5, 11.0), ("39156-5", "BMI", "kg/m2", 17, 42)]
CONDITIONS = [("44054006", "Diabetes mellitus type 2"), ("38341003", "Hypertensive disorder"),
              ("195967001", "Asthma")]
START = 1_420_070_400  # 2015-01-01, the record spans ten years
SNOMED, LOINC, UCUM = "http://snomed.info/sct", "http://loinc.org", "http://unitsofmeasure.org"
CARELOOP = "http://careloop.health/fhir/CodeSystem/"
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"


def _uuid(rng: random.Random) -> str:
    return f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}"


def _when(rng: random.Random) -> int:
    return START + rng.randint(0, 10 * 365 * 86400)


def _instant(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _entry(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": full_url, "request": {"method": "POST", "url": resource["resourceType"]},
            "resource": resource}


def _patient(rng: random.Random, index: int) -> dict[str, Any]:
    return {"resourceType": "Patient",
            "identifier": [{"system": "urn:careloop:bench:mrn", "value": f"MRN{index:07d}"}],
            "name": [{"family": rng.choice(FAMILIES), "given": [rng.choice(GIVEN)]}],
            "gender": rng.choice(["female", "male"]),
            "birthDate": f"{rng.randint(1930, 2015)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "address": [{"city": "Springfield", "district": rng.choice(REGIONS), "country": "NL"}]}


def _consent(rng: random.Random, pid: str) -> dict[str, Any]:
    actions = [_coding(f"{CARELOOP}consent-action", "device-collection"),
               _coding(f"{CARELOOP}consent-action", "follow-up-contact")]
    if rng.random() < 0.4:
        actions.append(_coding(f"{CARELOOP}consent-action", "marketing-contact"))
    return {"resourceType": "Consent", "status": "active",
            "scope": _coding(f"{TERMINOLOGY}consentscope", "patient-privacy"),
            "category": [_coding(LOINC, "59284-0", "Consent Document")],
            "patient": {"reference": pid}, "dateTime": _instant(START),
            "policyRule": _coding(f"{TERMINOLOGY}v3-ActCode", "OPTIN"),
            "provision": {"type": "permit", "period": {"start": _instant(START)[:10]}, "action": actions}}


def _condition(pid: str, code: str, display: str, onset: int) -> dict[str, Any]:
    return {"resourceType": "Condition",
            "clinicalStatus": _coding(f"{TERMINOLOGY}condition-clinical", "active"),
            "verificationStatus": _coding(f"{TERMINOLOGY}condition-ver-status", "confirmed"),
            "code": _coding(SNOMED, code, display), "subject": {"reference": pid},
            "onsetDateTime": _instant(onset)}


def _encounter(rng: random.Random, pid: str, at: int) -> dict[str, Any]:
    inpatient = rng.random() < 0.1
    service = "treatment" if inpatient else rng.choice(["checkup", "treatment", "health-management"])
    return {"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "IMP" if inpatient else "AMB"},
            "type": [_coding(f"{CARELOOP}service-type", service)], "subject": {"reference": pid},
            "period": {"start": _instant(at), "end": _instant(at + (3 * 86400 if inpatient else 1800))}}


def _appointment(rng: random.Random, pid: str, at: int) -> dict[str, Any]:
    status = rng.choices(["fulfilled", "noshow", "booked", "cancelled"], [70, 10, 15, 5])[0]
    return {"resourceType": "Appointment", "status": status,
            "serviceType": [_coding(f"{CARELOOP}service-type", "checkup")],
            "start": _instant(at), "end": _instant(at + 1800),
            "participant": [{"actor": {"reference": pid}, "status": "accepted"}]}


def _communication(rng: random.Random, pid: str, at: int) -> dict[str, Any]:
    kind = rng.choice(["notification", "reminder", "instruction"])
    return {"resourceType": "Communication", "status": "completed",
            "category": [_coding(f"{TERMINOLOGY}communication-category", kind)],
            "subject": {"reference": pid}, "recipient": [{"reference": pid}], "sent": _instant(at),
            "payload": [{"contentString": f"CareLoop {kind}: please check your care plan."}]}


def _invoice(rng: random.Random, pid: str, at: int) -> dict[str, Any]:
    amount = round(rng.uniform(20, 900), 2)
    return {"resourceType": "Invoice", "status": rng.choice(["issued", "balanced"]),
            "subject": {"reference": pid}, "date": _instant(at),
            "totalNet": {"value": amount, "currency": "EUR"},
            "totalGross": {"value": round(amount * 1.09, 2), "currency": "EUR"}}


def _charge_item(rng: random.Random, pid: str, encounter: str, at: int) -> dict[str, Any]:
    return {"resourceType": "ChargeItem", "status": rng.choice(["billable", "billed"]),
            "code": {"text": rng.choice(["consultation", "lab panel", "dressing"])}, "subject": {"reference": pid},
            "context": {"reference": encounter}, "occurrenceDateTime": _instant(at),
            "priceOverride": {"value": round(rng.uniform(10, 300), 2), "currency": "EUR"}}


def _observation(rng: random.Random, pid: str, encounter: str | None) -> dict[str, Any]:
    code, display, unit, low, high = rng.choice(CODES)
    resource: dict[str, Any] = {
        "resourceType": "Observation", "status": "final",
        "category": [_coding(f"{TERMINOLOGY}observation-category", "vital-signs")],
        "code": _coding(LOINC, code, display), "subject": {"reference": pid},
        "effectiveDateTime": _instant(_when(rng)),
        "valueQuantity": {"value": round(rng.uniform(low, high), 1), "unit": unit, "system": UCUM, "code": unit}}
    if encounter:
        resource["encounter"] = {"reference": encounter}
    return resource


def patient_bundle(rng: random.Random, index: int, per_patient: int) -> dict[str, Any]:
    """One patient's transaction bundle of `per_patient` resources."""
    pid = _uuid(rng)
    entries = [_entry(pid, _patient(rng, index))]
    if per_patient > 1:
        entries.append(_entry(_uuid(rng), _consent(rng, pid)))
    # the record's shape scales with its size: about a tenth visits, and as many bookings, messages and bills
    visits = max(0, min(per_patient - len(entries), per_patient // 12))
    encounters = []
    # ChargeItems draw from their own generator: the rest of the population stays what it was before them
    charges = random.Random(pid)
    for _ in range(visits):
        at = _when(rng)
        encounters.append(_uuid(rng))
        entries.append(_entry(encounters[-1], _encounter(rng, pid, at)))
        for make in (_appointment, _communication, _invoice):
            if len(entries) < per_patient and rng.random() < 0.6:
                entries.append(_entry(_uuid(rng), make(rng, pid, at - rng.randint(0, 20) * 86400)))
        if len(entries) < per_patient and charges.random() < 0.6:
            entries.append(_entry(_uuid(charges), _charge_item(charges, pid, encounters[-1], at)))
    for code, display in CONDITIONS:
        if len(entries) < per_patient and rng.random() < 0.3:
            entries.append(_entry(_uuid(rng), _condition(pid, code, display, _when(rng))))
    while len(entries) < per_patient:
        encounter = rng.choice(encounters) if encounters and rng.random() < 0.3 else None
        entries.append(_entry(_uuid(rng), _observation(rng, pid, encounter)))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def population(resources: int, per_patient: int = 100, seed: int = 20261124) -> Iterator[dict[str, Any]]:
    """Bundles adding up to `resources` resources (10k = 100 patients x 100)."""
    rng = random.Random(seed)
    for index in range(max(1, resources // per_patient)):
        yield patient_bundle(rng, index, per_patient)
