"""De-identification as a pure function over a resource and the shipped profile, case by case."""

from __future__ import annotations

from typing import Any

import pytest

from consent.deidentify import deidentify
from consent.deidentify_profile import shipped_profile

YEAR = 2026
LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED",
         "display": "redacted"}
REDACTED = {"security": [LABEL]}
BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"

CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("names removed, identifiers removed, telecom removed",
     {"resourceType": "Patient", "id": "p", "gender": "female", "name": [{"family": "Alpha", "given": ["Alice"]}],
      "identifier": [{"system": "urn:mrn", "value": "A-1"}], "telecom": [{"system": "phone", "value": "555"}]},
     {"resourceType": "Patient", "id": "p", "gender": "female", "meta": REDACTED}),
    ("birth date to the year, its birth-time extension with it",
     {"resourceType": "Patient", "birthDate": "1980-05-12",
      "_birthDate": {"extension": [{"url": BIRTH_TIME, "valueDateTime": "1980-05-12T10:00:00Z"}]}},
     {"resourceType": "Patient", "birthDate": "1980", "meta": REDACTED}),
    ("a birth year of someone 90 or older is removed (Safe Harbor groups them)",
     {"resourceType": "Patient", "birthDate": "1930-01-02"},
     {"resourceType": "Patient", "meta": REDACTED}),
    ("a birth date already a year is left, and nothing is labelled",
     {"resourceType": "Patient", "birthDate": "1980"},
     {"resourceType": "Patient", "birthDate": "1980"}),
    ("deceasedDateTime to the year (the age rule is for birth dates only)",
     {"resourceType": "Patient", "deceasedDateTime": "1920-03-04T05:06:07Z"},
     {"resourceType": "Patient", "deceasedDateTime": "1920", "meta": REDACTED}),
    ("address kept to state and country (province in China); line, city, district, postal code, text go",
     {"resourceType": "Patient", "address": [{"use": "home", "line": ["1 Wensan Rd"], "city": "Hangzhou",
                                              "district": "Xihu", "state": "Zhejiang", "postalCode": "310000",
                                              "country": "CN", "text": "1 Wensan Rd, Hangzhou",
                                              "period": {"start": "2020-01-01"}}]},
     {"resourceType": "Patient", "address": [{"use": "home", "state": "Zhejiang", "country": "CN"}],
      "meta": REDACTED}),
    ("an address with nothing left at region level disappears",
     {"resourceType": "Patient", "address": [{"line": ["1 Main St"], "city": "Springfield"}]},
     {"resourceType": "Patient", "meta": REDACTED}),
    ("narrative, photo and contact removed; links to other patients keep their ids",
     {"resourceType": "Patient", "text": {"status": "generated", "div": "<div>Alice Alpha</div>"},
      "photo": [{"contentType": "image/jpeg", "data": "AAAA"}],
      "contact": [{"name": {"family": "Alpha"}, "relationship": [{"text": "mother"}]}],
      "link": [{"other": {"reference": "Patient/q", "display": "Alice Alpha"}, "type": "seealso"}]},
     {"resourceType": "Patient", "link": [{"other": {"reference": "Patient/q"}, "type": "seealso"}],
      "meta": REDACTED}),
    ("mother's maiden name extension removed, other extensions kept, birth place generalised",
     {"resourceType": "Patient", "extension": [
         {"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName", "valueString": "Gamma"},
         {"url": "http://example.org/tier", "valueCode": "gold"},
         {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
          "valueAddress": {"city": "Ningbo", "state": "Zhejiang", "country": "CN"}}]},
     {"resourceType": "Patient", "extension": [
         {"url": "http://example.org/tier", "valueCode": "gold"},
         {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
          "valueAddress": {"state": "Zhejiang", "country": "CN"}}], "meta": REDACTED}),
    ("a clinical resource: note, identifier and the display naming the patient go; value, code, dates stay",
     {"resourceType": "Observation", "id": "o", "status": "final", "identifier": [{"value": "LAB-77"}],
      "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
      "subject": {"reference": "Patient/p", "display": "Alice Alpha"},
      "performer": [{"reference": "Organization/clinic", "display": "West Lake Clinic"}],
      "effectiveDateTime": "2026-01-02T03:04:05Z", "valueQuantity": {"value": 72, "unit": "/min"},
      "note": [{"text": "Alice says her husband Bob calls at 555-1234"}]},
     {"resourceType": "Observation", "id": "o", "status": "final",
      "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
      "subject": {"reference": "Patient/p"},
      "performer": [{"reference": "Organization/clinic", "display": "West Lake Clinic"}],
      "effectiveDateTime": "2026-01-02T03:04:05Z", "valueQuantity": {"value": 72, "unit": "/min"},
      "meta": REDACTED}),
    ("a reference by identifier only loses the identifier and its display",
     {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
      "subject": {"identifier": {"system": "urn:mrn", "value": "A-1"}, "display": "Alice"}},
     {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "meta": REDACTED}),
    ("a versioned absolute reference to an Organization keeps its display",
     {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
      "serviceProvider": {"reference": "http://x/fhir/Organization/c/_history/2", "display": "Clinic"}},
     {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
      "serviceProvider": {"reference": "http://x/fhir/Organization/c/_history/2", "display": "Clinic"}}),
    ("attachments keep their content type only: a scanned letter or photo anywhere",
     {"resourceType": "DocumentReference", "status": "current", "content": [{"attachment": {
         "contentType": "application/pdf", "url": "http://x/letter.pdf", "title": "Letter to Alice Alpha",
         "data": "JVBERi0=", "hash": "abc=", "size": 5}}]},
     {"resourceType": "DocumentReference", "status": "current", "content": [{"attachment": {
         "contentType": "application/pdf"}}], "meta": REDACTED}),
    ("a Binary loses its content",
     {"resourceType": "Binary", "contentType": "image/png", "data": "iVBORw0KGgo="},
     {"resourceType": "Binary", "contentType": "image/png", "meta": REDACTED}),
    ("comment strings go wherever they are (here Appointment.comment)",
     {"resourceType": "Appointment", "status": "booked", "participant": [{"status": "accepted"}],
      "comment": "Alice prefers calls after 6pm"},
     {"resourceType": "Appointment", "status": "booked", "participant": [{"status": "accepted"}],
      "meta": REDACTED}),
    ("contained resources are de-identified by their own type",
     {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "#p1"},
      "contained": [{"resourceType": "Patient", "id": "p1", "name": [{"text": "Alice"}], "gender": "female"}]},
     {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "#p1"},
      "contained": [{"resourceType": "Patient", "id": "p1", "gender": "female", "meta": REDACTED}],
      "meta": REDACTED}),
    ("the label is added to the security labels already there, meta otherwise kept",
     {"resourceType": "RelatedPerson", "patient": {"reference": "Patient/p"}, "name": [{"text": "Bob"}],
      "meta": {"versionId": "3", "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                               "code": "N"}]}},
     {"resourceType": "RelatedPerson", "patient": {"reference": "Patient/p"},
      "meta": {"versionId": "3", "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                               "code": "N"}, LABEL]}}),
    ("practitioners lose name, telecom and photo like anyone else",
     {"resourceType": "Practitioner", "name": [{"family": "Smith"}], "photo": [{"url": "http://x/s.jpg"}],
      "qualification": [{"code": {"text": "MD"}}]},
     {"resourceType": "Practitioner", "qualification": [{"code": {"text": "MD"}}], "meta": REDACTED}),
    ("exempt types (the clinic's directory, terminology) are left as they are",
     {"resourceType": "Organization", "name": "West Lake Clinic", "telecom": [{"system": "phone", "value": "1"}],
      "identifier": [{"value": "ORG-1"}]},
     {"resourceType": "Organization", "name": "West Lake Clinic", "telecom": [{"system": "phone", "value": "1"}],
      "identifier": [{"value": "ORG-1"}]}),
    ("resources inside a stored Bundle are walked too",
     {"resourceType": "Bundle", "type": "collection", "identifier": {"value": "B-1"},
      "entry": [{"resource": {"resourceType": "Patient", "name": [{"family": "Alpha"}]}}]},
     {"resourceType": "Bundle", "type": "collection",
      "entry": [{"resource": {"resourceType": "Patient", "meta": REDACTED}}], "meta": REDACTED}),
]


@pytest.mark.parametrize(("given", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_shipped_profile(given: dict[str, Any], expected: dict[str, Any]) -> None:
    assert deidentify(given, shipped_profile(), YEAR) == expected


def test_input_is_not_changed() -> None:
    given = {"resourceType": "Patient", "name": [{"family": "Alpha"}], "birthDate": "1980-05-12"}
    deidentify(given, shipped_profile(), YEAR)
    assert given == {"resourceType": "Patient", "name": [{"family": "Alpha"}], "birthDate": "1980-05-12"}
