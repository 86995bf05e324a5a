"""Patient/$tier and Patient/$churn-risk: the clinic rules of DOMAIN.md sections 1-2, with their reasons.

https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from resources.ids import now_ms
from resources.search.dates import format_instant
from server.settings import Settings
from tests.conftest import FHIR_JSON, body, client_for, create
from tests.factories import patient

pytestmark = pytest.mark.anyio
DAY = 86_400_000
CARELOOP = "http://careloop.health/fhir/CodeSystem/"


def ago(days: float) -> str:
    return format_instant(now_ms() - int(days * DAY))


def invoice(pid: str, amount: float, days: float = 30, status: str = "issued") -> dict[str, Any]:
    return {"resourceType": "Invoice", "status": status, "subject": {"reference": f"Patient/{pid}"},
            "date": ago(days), "totalGross": {"value": amount, "currency": "EUR"}}


def visit(pid: str, days: float, status: str = "finished") -> dict[str, Any]:
    return {"resourceType": "Encounter", "status": status,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"}, "period": {"start": ago(days + 0.05), "end": ago(days)}}


def results(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per patient id: the result's parts by name (repeated names as lists)."""
    out: dict[str, dict[str, Any]] = {}
    for param in answer["parameter"]:
        if param["name"] != "result":
            continue
        parts: dict[str, Any] = {}
        for p in param["part"]:
            value = next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
            parts.setdefault(p["name"], []).append(value)
        out[parts["patient"][0]["reference"].split("/")[1]] = parts
    return out


def scalar(answer: dict[str, Any], name: str) -> Any:
    return next(next(v for k, v in p.items() if k.startswith("value")) for p in answer["parameter"]
                if p["name"] == name)


async def test_tiers_by_spend_frequency_and_programme(client: httpx.AsyncClient) -> None:
    ids = [(await create(client, patient(family=f"P{n}")))["id"] for n in range(8)]
    for pid, amount in zip(ids[:5], (5000, 800, 100, 50, 20), strict=True):
        await create(client, invoice(pid, amount))
    await create(client, invoice(ids[4], 90_000, days=400))  # outside the 12-month window
    await create(client, invoice(ids[3], 90_000, status="cancelled"))
    for n in range(25):  # two or more visits a month
        await create(client, visit(ids[5], 5 + n * 10))
    for n in range(4):  # about quarterly
        await create(client, visit(ids[6], 20 + n * 80))
    await create(client, visit(ids[6], 30, status="cancelled"))
    await create(client, {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                          "category": [{"coding": [{"system": f"{CARELOOP}service-type",
                                                    "code": "health-management"}]}],
                          "subject": {"reference": f"Patient/{ids[7]}"}})
    response = await client.get("/fhir/Patient/$tier")
    assert response.status_code == 200, response.text
    answer = response.json()
    tiers = {pid: parts["tier"][0]["code"] for pid, parts in results(answer).items() if pid in ids}
    assert [tiers[pid] for pid in ids] == ["A", "A", "B", "C", "C", "A", "B", "A"]
    assert scalar(answer, "spend-line-a") == 800 and scalar(answer, "spend-line-b") == 100
    found = results(answer)
    assert found[ids[4]]["spend"] == [20] and found[ids[3]]["spend"] == [50]
    assert found[ids[5]]["visits"] == [25] and "visits" in found[ids[5]]["reason"][0]
    assert found[ids[7]]["programme"] == [True]
    assert scalar(answer, "count-A") >= 4
    rules = next(p for p in answer["parameter"] if p["name"] == "rules")["part"]
    assert {"name": "window_days", "valueDecimal": 365} in rules

    one = (await client.get(f"/fhir/Patient/{ids[2]}/$tier")).json()
    assert list(results(one)) == [ids[2]]
    assert results(one)[ids[2]]["tier"][0] == {"system": f"{CARELOOP}tier", "code": "B"}
    assert (await client.get("/fhir/Patient/unknown/$tier")).status_code == 404


async def signals(client: httpx.AsyncClient, pid: str) -> tuple[str, dict[str, tuple[Any, str]]]:
    response = await client.get(f"/fhir/Patient/{pid}/$churn-risk")
    assert response.status_code == 200, response.text
    parts = results(response.json())[pid]
    found = {}
    for signal in parts["signal"]:
        named = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in signal}
        found[named["code"]["code"]] = (named.get("value"), named["level"]["code"])
    return parts["risk"][0]["code"], found


async def test_churn_signals_and_the_combined_warning(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient()))["id"]
    risk, found = await signals(client, pid)
    assert risk == "low" and found["days-since-last-visit"] == (None, "low")

    await create(client, visit(pid, 200))
    outreach = [await create(client, {"resourceType": "Communication", "status": "completed", "sent": ago(d),
                                      "recipient": [{"reference": f"Patient/{pid}"}],
                                      "subject": {"reference": f"Patient/{pid}"}}) for d in (60, 40, 20)]
    await create(client, {"resourceType": "Observation", "status": "final", "effectiveDateTime": ago(10),
                          "code": {"coding": [{"system": f"{CARELOOP}churn-signal", "code": "satisfaction"}]},
                          "subject": {"reference": f"Patient/{pid}"}, "valueInteger": 2})
    for days, status in ((90, "noshow"), (50, "noshow"), (120, "fulfilled")):
        await create(client, {"resourceType": "Appointment", "status": status, "start": ago(days),
                              "end": ago(days - 0.02), "participant": [{"actor": {"reference": f"Patient/{pid}"},
                                                                         "status": "accepted"}]})
    risk, found = await signals(client, pid)
    # the plans' warning: over 6 months without service, no reply to 2 touches, satisfaction below 3
    assert risk == "high"
    assert found["days-since-last-visit"][1] == "high" and 199 < found["days-since-last-visit"][0] < 201
    assert found["unanswered-outreach"] == (3, "high")
    assert found["satisfaction"] == (2, "high")
    assert found["missed-appointments"] == (2, "elevated")
    assert found["open-complaints"] == (0, "low")

    # a reply to the newest outreach ends the unanswered run
    await create(client, {"resourceType": "Communication", "status": "completed", "sent": ago(19),
                          "sender": {"reference": f"Patient/{pid}"},
                          "inResponseTo": [{"reference": f"Communication/{outreach[2]['id']}"}]})
    complaint = await create(client, {"resourceType": "Communication", "status": "completed", "sent": ago(5),
                                      "category": [{"coding": [{"system": f"{CARELOOP}follow-up-task",
                                                                "code": "complaint"}]}],
                                      "subject": {"reference": f"Patient/{pid}"}})
    _, found = await signals(client, pid)
    assert found["unanswered-outreach"] == (0, "low")
    assert found["open-complaints"] == (1, "elevated")
    await create(client, {"resourceType": "Task", "status": "completed", "intent": "order",
                          "focus": {"reference": f"Communication/{complaint['id']}"}})
    _, found = await signals(client, pid)
    assert found["open-complaints"] == (0, "low")

    everyone = (await client.get("/fhir/Patient/$churn-risk")).json()
    assert scalar(everyone, "count-high") >= 1


async def test_rules_are_settings(settings: Settings) -> None:
    async with client_for(settings.model_copy(update={"cohort_rules": {"lost_days": 250}})) as client:
        pid = (await create(client, patient()))["id"]
        await client.post("/fhir/Encounter", content=body(visit(pid, 200)), headers=FHIR_JSON)
        risk, found = await signals(client, pid)
        assert risk == "elevated" and found["days-since-last-visit"][1] == "elevated"
        rules = (await client.get(f"/fhir/Patient/{pid}/$churn-risk")).json()["parameter"][-1]["part"]
        assert {"name": "lost_days", "valueDecimal": 250} in rules
    with pytest.raises(SystemExit, match="unknown cohort rule"):
        async with client_for(settings.model_copy(update={"cohort_rules": {"lost_dayz": 1}})):
            pass


async def test_the_population_answer_agrees_with_each_patients_own(client: httpx.AsyncClient) -> None:
    # the type level groups five population scans by patient; each patient's instance-level answer, from
    # searches narrowed to them, must be the same
    ids = [(await create(client, patient(family=f"C{n}")))["id"] for n in range(4)]
    first, second, third, _ = ids
    await create(client, visit(first, 200))
    await create(client, visit(second, 20))
    await create(client, visit(second, 120))
    touches = [await create(client, {"resourceType": "Communication", "status": "completed", "sent": ago(d),
                                     "recipient": [{"reference": f"Patient/{who}"}]})
               for who, d in ((first, 30), (first, 10), (second, 40), (third, 5))]
    await create(client, {"resourceType": "Communication", "status": "completed", "sent": ago(4),
                          "sender": {"reference": f"Patient/{third}"},
                          "inResponseTo": [{"reference": f"Communication/{touches[3]['id']}"}]})
    complaint = {"resourceType": "Communication", "status": "completed", "sent": ago(3),
                 "category": [{"coding": [{"system": f"{CARELOOP}follow-up-task", "code": "complaint"}]}]}
    closed = await create(client, {**complaint, "subject": {"reference": f"Patient/{second}"}})
    await create(client, {**complaint, "subject": {"reference": f"Patient/{second}"}})
    await create(client, {**complaint, "subject": {"reference": f"Patient/{first}"}})
    await create(client, {"resourceType": "Task", "status": "completed", "intent": "order",
                          "focus": {"reference": f"Communication/{closed['id']}"}})
    for who, score, days in ((first, 2, 10), (first, 5, 2), (third, 3, 1)):
        await create(client, {"resourceType": "Observation", "status": "final", "effectiveDateTime": ago(days),
                              "code": {"coding": [{"system": f"{CARELOOP}churn-signal", "code": "satisfaction"}]},
                              "subject": {"reference": f"Patient/{who}"}, "valueInteger": score})
    for who, days, status in ((second, 30, "noshow"), (second, 60, "noshow"), (second, 90, "noshow"),
                              (third, 10, "fulfilled"), (third, -5, "booked")):
        await create(client, {"resourceType": "Appointment", "status": status, "start": ago(days),
                              "end": ago(days - 0.02), "participant": [{"actor": {"reference": f"Patient/{who}"},
                                                                         "status": "accepted"}]})
    everyone = results((await client.get("/fhir/Patient/$churn-risk")).json())
    assert set(ids) <= set(everyone)
    for pid in ids:
        own = results((await client.get(f"/fhir/Patient/{pid}/$churn-risk")).json())[pid]
        assert everyone[pid]["risk"] == own["risk"], pid
        assert everyone[pid]["signal"] == own["signal"], pid
    risk, found = await signals(client, second)
    assert found["missed-appointments"] == (3, "high") and found["open-complaints"] == (1, "elevated")
    assert risk == "high"
    _, found = await signals(client, third)
    assert found["unanswered-outreach"] == (0, "low") and found["satisfaction"] == (3, "elevated")
    _, found = await signals(client, first)
    assert found["unanswered-outreach"] == (2, "elevated") and found["satisfaction"] == (5, "low")


async def test_one_patients_tier_uses_the_kept_spend_lines_and_says_when_they_were_computed(
        settings: Settings, tmp_path: Path) -> None:
    async with client_for(settings) as client:
        ids = [(await create(client, patient(family=f"K{n}")))["id"] for n in range(3)]
        for pid, amount in zip(ids, (1000, 100, 10), strict=True):
            await create(client, invoice(pid, amount))
        everyone = (await client.get("/fhir/Patient/$tier")).json()
        computed = scalar(everyone, "spend-lines-at")
        assert scalar(everyone, "spend-line-a") == 1000
        await create(client, invoice(ids[2], 50_000))  # moves the lines; the kept ones stay for a while
        one = (await client.get(f"/fhir/Patient/{ids[2]}/$tier")).json()
        assert scalar(one, "spend-lines-at") == computed and scalar(one, "spend-line-a") == 1000
        assert results(one)[ids[2]]["spend"] == [50_010]  # the patient's own spend is always read afresh
        again = (await client.get("/fhir/Patient/$tier")).json()  # the population's answer computes anew
        assert scalar(again, "spend-line-a") == 50_010 and scalar(again, "spend-lines-at") > computed
    uncached = {"cohort_cache_seconds": 0, "sqlite_path": str(tmp_path / "uncached.db")}
    async with client_for(settings.model_copy(update=uncached)) as client:
        pid = (await create(client, patient()))["id"]
        await create(client, invoice(pid, 70))
        assert scalar((await client.get("/fhir/Patient/$tier")).json(), "spend-line-a") == 70
        await create(client, invoice(pid, 30))
        assert scalar((await client.get(f"/fhir/Patient/{pid}/$tier")).json(), "spend-line-a") == 100
