"""Issue 31's findings on $tier, each as a clinic found it: ChargeItems, calendar months, programme subsumption.

https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from operations.cohort import calendar_months
from tests.conftest import create
from tests.factories import patient
from tests.server.test_cohort import CARELOOP, ago, invoice, results, visit

pytestmark = pytest.mark.anyio


def charge(pid: str, amount: float, days: float = 20, status: str = "billable",
           dated: str = "occurrenceDateTime") -> dict[str, Any]:
    return {"resourceType": "ChargeItem", "status": status, "subject": {"reference": f"Patient/{pid}"},
            "code": {"text": "consultation"}, dated: ago(days), "priceOverride": {"value": amount, "currency": "EUR"}}


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(("start", "end", "months"), [
    ("2025-12-07T10:00:00", "2026-12-07T10:00:00", 12),  # 365 days
    ("2023-03-02T10:00:00", "2024-03-01T10:00:00", 12),  # 365 days over a leap day: 11 months and 28 days
    ("2026-01-31T00:00:00", "2026-02-28T00:00:00", 1),  # the end of a shorter month
    ("2026-01-01T00:00:00", "2026-01-14T00:00:00", 0),  # under half a month
    ("2026-01-01T00:00:00", "2026-01-17T00:00:00", 1),  # over half
    ("2026-01-15T00:00:00", "2026-07-15T00:00:00", 6),
])
def test_calendar_months(start: str, end: str, months: int) -> None:
    assert calendar_months(_ms(start), _ms(end)) == months


async def test_charge_items_count_as_spend(client: httpx.AsyncClient) -> None:
    ids = [(await create(client, patient(family=f"S{n}")))["id"] for n in range(5)]
    for pid, amount in zip(ids[:4], (100, 50, 20, 10), strict=True):
        await create(client, invoice(pid, amount))
    charged = ids[4]
    await create(client, charge(charged, 700))
    await create(client, charge(charged, 500, status="billed", dated="enteredDate"))
    await create(client, charge(charged, 9_000, status="planned"))  # not a charge yet
    await create(client, charge(charged, 9_000, days=500))  # outside the window
    billed = await create(client, charge(ids[0], 100))  # billed by ids[0]'s invoice: counted once
    await create(client, {**invoice(ids[0], 100), "lineItem": [
        {"chargeItemReference": {"reference": f"ChargeItem/{billed['id']}"}}]})
    found = results((await client.get("/fhir/Patient/$tier")).json())
    assert found[charged]["spend"] == [1200]
    assert found[charged]["tier"][0]["code"] == "A"
    assert found[ids[0]]["spend"] == [200]
    one = results((await client.get(f"/fhir/Patient/{charged}/$tier")).json())[charged]
    assert one["spend"] == [1200]


async def test_two_visits_a_month_counts_calendar_months(client: httpx.AsyncClient) -> None:
    every, short = (await create(client, patient(family="Monthly")))["id"], (await create(client, patient()))["id"]
    for n in range(24):  # 24 visits in the 12 months of the window: A
        await create(client, visit(every, 3 + n * 15))
    for n in range(23):  # one fewer: B (at least 4 in the window)
        await create(client, visit(short, 3 + n * 15))
    found = results((await client.get("/fhir/Patient/$tier")).json())
    assert found[every]["tier"][0]["code"] == "A" and found[every]["visits"] == [24]
    assert "12 calendar months" in found[every]["reason"][0]
    assert found[short]["tier"][0]["code"] == "B"


def plan(pid: str, code: str, status: str = "active") -> dict[str, Any]:
    return {"resourceType": "CarePlan", "status": status, "intent": "plan",
            "category": [{"coding": [{"system": f"{CARELOOP}service-type", "code": code}]}],
            "subject": {"reference": f"Patient/{pid}"}}


async def test_a_child_of_health_management_is_a_programme(client: httpx.AsyncClient) -> None:
    ids = [(await create(client, patient(family=f"Plan{n}")))["id"] for n in range(4)]
    await create(client, plan(ids[0], "chronic-programme"))
    await create(client, plan(ids[1], "rehab"))
    await create(client, plan(ids[2], "checkup"))  # not a programme
    await create(client, plan(ids[3], "chronic-programme", status="completed"))  # over
    found = results((await client.get("/fhir/Patient/$tier")).json())
    assert [found[pid]["programme"] for pid in ids] == [[True], [True], [False], [False]]
    assert [found[pid]["tier"][0]["code"] for pid in ids] == ["A", "A", "C", "C"]
