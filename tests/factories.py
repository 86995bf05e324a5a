"""Small resource builders for tests."""

from __future__ import annotations

from typing import Any


def patient(family: str = "Smith", given: str = "Ann", mrn: str | None = None, **extra: Any) -> dict[str, Any]:
    """A Patient with a name and, optionally, an MRN identifier."""
    resource: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": family, "given": [given]}]}
    if mrn is not None:
        resource["identifier"] = [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": mrn}]
    resource.update(extra)
    return resource


def observation(subject: str, code: str = "2339-0", value: float = 6.3, unit: str = "mmol/L",
                when: str = "2024-03-01T08:00:00Z", **extra: Any) -> dict[str, Any]:
    """A final laboratory Observation with a LOINC code and a UCUM quantity."""
    resource: dict[str, Any] = {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject}, "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }
    resource.update(extra)
    return resource
