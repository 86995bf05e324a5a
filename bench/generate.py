"""A deterministic clinic population as transaction bundles: patients with device and lab Observations.

Synthea-shaped (POST entries, urn:uuid references), narrative-free, fixed seed, so every run and every machine
loads the same data. Each patient is one bundle of 1 Patient and `per_patient - 1` Observations.
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
# (LOINC code, display, UCUM unit, low, high)
CODES = [("2339-0", "Glucose", "mmol/L", 3.5, 14.0), ("8867-4", "Heart rate", "/min", 45, 130),
         ("8480-6", "Systolic blood pressure", "mm[Hg]", 95, 185), ("8462-4", "Diastolic blood pressure",
                                                                    "mm[Hg]", 55, 115),
         ("29463-7", "Body weight", "kg", 45, 130), ("8310-5", "Body temperature", "Cel", 35.5, 39.5),
         ("59408-5", "Oxygen saturation", "%", 86, 100), ("72514-3", "Pain severity", "{score}", 0, 10),
         ("4548-4", "Hemoglobin A1c", "%", 4.5, 11.0), ("39156-5", "BMI", "kg/m2", 17, 42)]
START = 1_420_070_400  # 2015-01-01, observations spread over ten years


def _uuid(rng: random.Random) -> str:
    return f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}"


def patient_bundle(rng: random.Random, index: int, per_patient: int) -> dict[str, Any]:
    """One patient's transaction bundle."""
    pid = _uuid(rng)
    entries: list[dict[str, Any]] = [{"fullUrl": pid, "request": {"method": "POST", "url": "Patient"}, "resource": {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:careloop:bench:mrn", "value": f"MRN{index:07d}"}],
        "name": [{"family": rng.choice(FAMILIES), "given": [rng.choice(GIVEN)]}],
        "gender": rng.choice(["female", "male"]),
        "birthDate": f"{rng.randint(1930, 2015)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"}}]
    for _ in range(per_patient - 1):
        code, display, unit, low, high = rng.choice(CODES)
        when = START + rng.randint(0, 10 * 365 * 86400)
        seconds = when % 86400
        day = _day(when // 86400)
        entries.append({"fullUrl": _uuid(rng), "request": {"method": "POST", "url": "Observation"}, "resource": {
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "subject": {"reference": pid},
            "effectiveDateTime": f"{day}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z",
            "valueQuantity": {"value": round(rng.uniform(low, high), 1), "unit": unit,
                              "system": "http://unitsofmeasure.org", "code": unit}}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _day(days: int) -> str:
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=days)).isoformat()


def population(resources: int, per_patient: int = 100, seed: int = 20261124) -> Iterator[dict[str, Any]]:
    """Bundles adding up to `resources` resources (10k = 100 patients x 100)."""
    rng = random.Random(seed)
    for index in range(max(1, resources // per_patient)):
        yield patient_bundle(rng, index, per_patient)
