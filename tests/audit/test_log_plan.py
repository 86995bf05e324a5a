"""Which part of an AuditEvent search the audit log's index answers, and what is matched in memory or refused.

Pure: consent.audit.logstore.plan on parsed searches, and consent.audit.chain.record_hash on changed fields.
https://hl7.org/fhir/R4B/auditevent.html#search
"""

from __future__ import annotations

from typing import Any

import pytest

from consent.audit.chain import GENESIS, record_hash
from consent.audit.logstore import plan
from consent.audit.records import parse_id
from resources.errors import Invalid
from resources.models import resource_types
from resources.search.parse import parse_search
from resources.search.registry import default_registry
from resources.store.audit_log.model import Condition

REGISTRY = default_registry(resource_types())
JTI = "urn:ietf:params:oauth:jti:t1"


def planned(query: str) -> tuple[Any, list[str]]:
    pairs = [(k, v) for k, _, v in (p.partition("=") for p in query.split("&"))]
    found, left = plan(parse_search("AuditEvent", pairs, REGISTRY, strict=True).query)
    return found, [f.code for f in left]


CASES = [
    ("patient=Patient/p1", (Condition("patient", (("vs", "p1", "Patient"),)),), []),
    ("outcome=4,8", (Condition("outcome", (("v", "4", None), ("v", "8", None))),), []),
    ("subtype=http://careloop.health/fhir/CodeSystem/audit-subtype|AuthZ-Consent&outcome=4",
     (Condition("subtype", (("vs", "AuthZ-Consent", "http://careloop.health/fhir/CodeSystem/audit-subtype"),)),
      Condition("outcome", (("v", "4", None),))), []),
    ("outcome=4&agent=Practitioner/d1&patient=Patient/p1",  # the most selective parameter drives
     (Condition("patient", (("vs", "p1", "Patient"),)), Condition("agent", (("vs", "d1", "Practitioner"),)),
      Condition("outcome", (("v", "4", None),))), []),
    (f"policy={JTI}", (Condition("policy", (("v", JTI, None),)),), []),
    ("agent-name=Smi", (Condition("agent-name", (("p", "smi", "smi\U0010ffff"),)),), []),
    ("agent-name:exact=Smith", (Condition("agent-name", (("vs", "smith", "Smith"),)),), []),
    ("agent-name:contains=mit", (), ["agent-name"]),
    ("entity:identifier=req-1", (Condition("entity:identifier", (("v", "req-1", None),)),), []),
    ("outcome:not=0", (), ["outcome"]),
    ("outcome:missing=true", (), ["outcome"]),
    ("subtype=http://careloop.health/fhir/CodeSystem/audit-subtype|", (), ["subtype"]),
]


@pytest.mark.parametrize(("query", "conditions", "left"), CASES, ids=[c[0] for c in CASES])
def test_what_the_index_answers(query: str, conditions: tuple[Condition, ...], left: list[str]) -> None:
    found, rest = planned(query)
    assert found.conditions == conditions and rest == left


def test_dates_ids_and_order() -> None:
    found, rest = planned("date=ge2026-01-01&date=lt2026-02-01&_id=12-0,12-3,x&_sort=-date")
    assert rest == [] and found.conditions == () and found.descending is True
    assert [[p for p, _, _ in group] for group in found.dates] == [["ge"], ["lt"]]
    assert found.ids == ((12, 0), (12, 3))  # an id that is no record's member finds nothing


@pytest.mark.parametrize("query", ["_sort=outcome", "agent:Practitioner.name=x", "_include=AuditEvent:agent"])
def test_refused_with_400(query: str) -> None:
    with pytest.raises(Invalid) as refused:
        planned(query)
    assert refused.value.status == 400


@pytest.mark.parametrize(("text", "expected"), [("12-0", (12, 0)), ("7-19", (7, 19)), ("12", None), ("a-1", None),
                                                ("1-b", None), ("-1", None), ("1--1", None)])
def test_ids(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_id(text) == expected


BASE = ("c1", 5, 1_700_000_000_000, 2, GENESIS, b'["r",1]')


@pytest.mark.parametrize("changed", [("c2", 5, BASE[2], 2, GENESIS, BASE[5]), ("c1", 6, BASE[2], 2, GENESIS, BASE[5]),
                                     ("c1", 5, BASE[2] + 1, 2, GENESIS, BASE[5]),
                                     ("c1", 5, BASE[2], 3, GENESIS, BASE[5]), ("c1", 5, BASE[2], 2, "1" * 64, BASE[5]),
                                     ("c1", 5, BASE[2], 2, GENESIS, b'["r",2]')])
def test_a_record_hash_covers_every_field(changed: tuple[Any, ...]) -> None:
    assert record_hash(*changed) != record_hash(*BASE)
    assert record_hash(*BASE) == record_hash(*BASE)
