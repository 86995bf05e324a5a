"""The shipped terminology content: valid resources, loaded once, and every value set expandable or refused clearly.

https://hl7.org/fhir/R4B/terminology-module.html
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from resources.validation import validate_resource
from terminology.seed import SEED_SYSTEM, content_version, shipped_resources

pytestmark = pytest.mark.anyio


def test_every_shipped_resource_is_valid_r4b() -> None:
    kinds: Counter[str] = Counter()
    for resource in shipped_resources():
        assert validate_resource(resource) == resource["resourceType"], resource.get("id")
        kinds[resource["resourceType"]] += 1
    assert kinds["CodeSystem"] == 540 + 13 + 1 + 1  # R4B, CareLoop's own, LOINC subset, SNOMED CT subset
    assert kinds["ValueSet"] >= 721 + 12
    assert kinds["ConceptMap"] == 1
    assert kinds["ObservationDefinition"] >= 20


def test_licences_are_carried_with_the_subsets() -> None:
    by_url = {r.get("url"): r for r in shipped_resources() if r["resourceType"] == "CodeSystem"
              and r.get("content") == "fragment"}
    assert "Regenstrief" in by_url["http://loinc.org"]["copyright"]
    assert "SNOMED International" in by_url["http://snomed.info/sct"]["copyright"]
    assert len(by_url["http://snomed.info/sct"]["concept"]) == 1  # one root; the subset stays small
    assert len(by_url["http://loinc.org"]["concept"]) < 40


async def test_the_store_holds_the_content_tagged_with_its_version(client: httpx.AsyncClient) -> None:
    tag = f"{SEED_SYSTEM}|terminology-{content_version()}"
    counts = {}
    for kind in ("CodeSystem", "ValueSet", "ConceptMap", "ObservationDefinition"):
        found = (await client.get(f"/fhir/{kind}", params={"_tag": tag, "_summary": "count"})).json()
        counts[kind] = found["total"]
    assert counts["CodeSystem"] == 555 and counts["ValueSet"] >= 733 and counts["ConceptMap"] == 1
    gender = (await client.get("/fhir/CodeSystem", params={"url": "http://hl7.org/fhir/administrative-gender"})).json()
    assert [e["resource"]["id"] for e in gender["entry"]] == ["administrative-gender"]


async def test_every_value_set_expands_or_says_why_not(client: httpx.AsyncClient) -> None:
    outcomes: Counter[str] = Counter()
    urls = [r["url"] for r in shipped_resources() if r["resourceType"] == "ValueSet"]
    for url in urls:
        response = await client.get("/fhir/ValueSet/$expand", params={"url": url, "count": "5"})
        if response.status_code == 200:
            expansion = response.json()["expansion"]
            assert expansion["total"] >= len(expansion.get("contains", []))
            outcomes["expanded"] += 1
        else:
            assert response.status_code == 400, (url, response.text)
            issue = response.json()["issue"][0]
            assert issue["code"] in ("not-supported", "too-costly"), (url, issue)
            outcomes[issue["code"]] += 1
    # value sets drawing on systems outside the shipped content (full LOINC, SNOMED CT, RxNorm...) cannot be
    # expanded here; every other one can
    assert outcomes["expanded"] >= 655, outcomes  # 658 of 740 with R4B 4.3.0 and the shipped subsets
    assert sum(outcomes.values()) == len(urls)
