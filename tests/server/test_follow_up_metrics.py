"""$follow-up-metrics (issue 30, item 6): the measures equal hand-computed values on a hand-built month, by team
and pathway, counting only what the caller may see. Run on MongoDB by tests/conformance too.

https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from subscriptions.escalation import ESCALATION
from subscriptions.seed import shipped
from tests.auth.conftest import open_world
from tests.conftest import FHIR_JSON, body, create
from tests.factories import patient

pytestmark = pytest.mark.anyio
SIGNAL = "http://careloop.health/fhir/CodeSystem/churn-signal"
MEASURE = "http://careloop.health/fhir/CodeSystem/follow-up-measure"
COMPLAINT = "http://careloop.health/fhir/CodeSystem/follow-up-task"
NOVEMBER = {"start": "2026-11-01", "end": "2026-11-30"}
PATIENT_APP = "launch/patient openid fhirUser patient/*.rs"


async def shipped_parameters(client: httpx.AsyncClient) -> None:
    """The shipped SearchParameters (deadline, score), as the seed writes them; stores without the seed lack them."""
    for resource in shipped():
        if resource["resourceType"] != "SearchParameter":
            continue
        if (await client.get(f"/fhir/SearchParameter/{resource['id']}")).status_code != 200:
            response = await client.put(f"/fhir/SearchParameter/{resource['id']}", content=body(resource),
                                        headers=FHIR_JSON)
            assert response.status_code == 201, response.text


def task(authored: str, status: str, team: str, plan: str, deadline: str | None = None, done: str | None = None,
         **extra: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"resourceType": "Task", "status": status, "intent": "order", "authoredOn": authored,
                             "owner": {"reference": team}, "basedOn": [{"reference": f"PlanDefinition/{plan}"}],
                             **extra}
    if deadline:
        found["restriction"] = {"period": {"start": authored, "end": deadline}}
    if done:
        found["lastModified"] = done
    return found


def score(patient_id: str, code: tuple[str, str], value: int, when: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{patient_id}"},
            "code": {"coding": [{"system": code[0], "code": code[1]}]}, "valueInteger": value,
            "effectiveDateTime": when}


def visit(patient_id: str, day: str) -> dict[str, Any]:
    return {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{patient_id}"},
            "period": {"start": f"{day}T09:00:00Z", "end": f"{day}T10:00:00Z"}}


async def month(client: httpx.AsyncClient) -> dict[str, str]:
    """November: seven Tasks of two wards and two pathways, scores, NPS answers, complaints and visits."""
    await shipped_parameters(client)
    people = [(await create(client, patient(family=f"P{n}")))["id"] for n in range(5)]
    ward_a = (await create(client, {"resourceType": "Organization", "name": "Ward A"}))["id"]
    ward_b = (await create(client, {"resourceType": "Organization", "name": "Ward B"}))["id"]
    a, b = f"Organization/{ward_a}", f"Organization/{ward_b}"
    day = "2026-11-0"
    for made in (
        task(f"{day}2T10:00:00Z", "completed", a, "visit-follow-up", f"{day}2T12:00:00Z", f"{day}2T10:30:00Z"),  # 30
        task(f"{day}3T10:00:00Z", "completed", a, "visit-follow-up", f"{day}3T10:30:00Z", f"{day}3T11:30:00Z"),  # late
        task(f"{day}4T08:00:00Z", "completed", a, "visit-follow-up", f"{day}5T08:00:00Z", f"{day}4T09:00:00Z"),  # 60
        task(f"{day}5T08:00:00Z", "completed", a, "visit-follow-up", f"{day}5T10:00:00Z", f"{day}5T10:00:00Z"),  # 120
        task(f"{day}6T08:00:00Z", "requested", a, "visit-follow-up", f"{day}6T09:00:00Z",
             businessStatus={"coding": [{"system": ESCALATION, "code": "escalated"}]}),
        task("2026-10-20T08:00:00Z", "completed", a, "visit-follow-up", "2026-10-20T09:00:00Z",
             "2026-10-20T08:10:00Z"),  # October: not counted
        task(f"{day}7T00:00:00Z", "completed", b, "surgery-follow-up", f"{day}7T01:00:00Z", f"{day}7T03:00:00Z"),
        task(f"{day}8T00:00:00Z", "completed", a, "visit-follow-up", None, f"{day}8T01:00:00Z"),  # no deadline
    ):
        await create(client, made)
    for value, when in ((5, "2026-11-03"), (4, "2026-11-04"), (3, "2026-11-05"), (2, "2026-11-06"),
                        (5, "2026-11-07"), (5, "2026-10-07")):
        await create(client, score(people[0], (SIGNAL, "satisfaction"), value, when))
    for value, when in ((10, "2026-11-03"), (9, "2026-11-04"), (9, "2026-11-05"), (7, "2026-11-06"),
                        (3, "2026-11-07"), (0, "2026-10-07")):
        await create(client, score(people[1], (MEASURE, "nps"), value, when))
    for sent in ("2026-11-10T10:00:00Z", "2026-11-20T10:00:00Z", "2026-10-10T10:00:00Z"):
        await create(client, {"resourceType": "Communication", "status": "completed", "sent": sent,
                              "subject": {"reference": f"Patient/{people[2]}"},
                              "category": [{"coding": [{"system": COMPLAINT, "code": "complaint"}]}]})
    for who, when in ((0, "2026-11-02"), (0, "2026-11-12"), (1, "2026-11-03"), (2, "2026-11-04"), (3, "2026-11-05"),
                      (0, "2026-10-15"), (1, "2026-10-15"), (4, "2026-10-15"), (3, "2026-09-15")):
        await create(client, visit(people[who], when))
    return {"a": a, "b": b}


def measures(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """code -> {part name: value} of each measure."""
    out = {}
    for found in answer["parameter"]:
        if found["name"] != "measure":
            continue
        parts = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in found["part"]}
        out[parts.pop("code")["code"]] = parts
    return out


def value(parts: dict[str, Any], name: str = "value") -> Any:
    found = parts.get(name)
    return found["value"] if isinstance(found, dict) else found


async def metrics(client: httpx.AsyncClient, **params: str) -> dict[str, dict[str, Any]]:
    response = await client.get("/fhir/$follow-up-metrics", params={**NOVEMBER, **params})
    assert response.status_code == 200, response.text
    return measures(response.json())


async def test_the_measures_of_a_hand_built_month(client: httpx.AsyncClient) -> None:
    await month(client)
    found = await metrics(client)
    on_time = found["follow-up-on-time"]
    # completed with a deadline in November: 30 min, 90 (late), 60, 120 (at the deadline: on time), 180 (late)
    assert (on_time["numerator"], on_time["denominator"], value(on_time), value(on_time, "target")) == (3, 5, 60.0,
                                                                                                        95.0)
    response = found["response-time"]
    assert (value(response, "median"), value(response, "p90"), response["denominator"]) == (90.0, 180.0, 5)
    satisfaction = found["satisfaction"]
    assert (satisfaction["numerator"], satisfaction["denominator"], value(satisfaction)) == (3, 5, 60.0)
    assert value(satisfaction, "target") == 90.0
    nps = found["net-promoter-score"]  # 10, 9, 9 promoters; 7 passive; 3 detractor
    assert (nps["promoters"], nps["detractors"], nps["denominator"], value(nps)) == (3, 1, 5, 40.0)
    complaints = found["complaint-rate"]  # 2 complaints, 4 patients served in November
    assert (complaints["numerator"], complaints["denominator"], value(complaints)) == (2, 4, 50.0)
    retention = found["retention"]  # served 2 Oct - 31 Oct: P0, P1, P4; of them P0 and P1 came back
    assert (retention["numerator"], retention["denominator"], value(retention)) == (2, 3, 66.7)
    escalations = found["escalations"]
    assert (value(escalations), escalations["numerator"], "denominator" in escalations) == (1.0, 1, False)


async def test_by_team_and_by_pathway(client: httpx.AsyncClient) -> None:
    teams = await month(client)
    ward_a = await metrics(client, team=teams["a"])
    assert (ward_a["follow-up-on-time"]["numerator"], ward_a["follow-up-on-time"]["denominator"]) == (3, 4)
    assert (value(ward_a["response-time"], "median"), value(ward_a["response-time"], "p90")) == (60.0, 120.0)
    assert ward_a["escalations"]["numerator"] == 1
    surgery = await metrics(client, pathway="surgery-follow-up")
    assert (surgery["follow-up-on-time"]["numerator"], surgery["follow-up-on-time"]["denominator"]) == (0, 1)
    assert value(surgery["follow-up-on-time"]) == 0.0
    assert surgery["escalations"]["numerator"] == 0
    nobody = await metrics(client, pathway="PlanDefinition/none")
    assert nobody["follow-up-on-time"]["denominator"] == 0 and "value" not in nobody["follow-up-on-time"]
    assert "median" not in nobody["response-time"]


@pytest.mark.parametrize(("params", "name"), [({"start": "November"}, "start"), ({"end": "2026-13-01"}, "end"),
                                              ({"start": "2026-12-01", "end": "2026-11-01"}, "start"),
                                              ({"team": "Patient/x"}, "team"), ({"pathway": "Task/x"}, "pathway"),
                                              ({"groupBy": "team"}, "groupBy")])
async def test_bad_parameters_are_400_naming_them(client: httpx.AsyncClient, params: dict[str, str],
                                                  name: str) -> None:
    response = await client.get("/fhir/$follow-up-metrics", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"][0] == name


async def test_post_with_parameters(client: httpx.AsyncClient) -> None:
    await month(client)
    posted = await client.post("/fhir/$follow-up-metrics", content=body({"resourceType": "Parameters", "parameter": [
        {"name": "start", "valueDate": "2026-11-01"}, {"name": "end", "valueDate": "2026-11-30"}]}),
        headers=FHIR_JSON)
    assert posted.status_code == 200, posted.text
    assert measures(posted.json())["follow-up-on-time"]["numerator"] == 3


async def test_a_patient_app_counts_only_its_patients_data(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database) as world:
        admin, alice, bob = world.admin, world.ids["alice"], world.ids["bob"]
        for who, value in ((alice, 5), (bob, 2), (bob, 1)):
            response = await world.client.post("/fhir/Observation", headers=admin, content=body(
                score(who, (SIGNAL, "satisfaction"), value, "2026-11-05")))
            assert response.status_code == 201, response.text
        everyone = measures((await world.client.get("/fhir/$follow-up-metrics", headers=admin,
                                                    params=NOVEMBER)).json())
        assert everyone["satisfaction"]["denominator"] == 3
        client_id, _ = world.app_client(PATIENT_APP)
        token = (await world.authorize(client_id, PATIENT_APP, "alice"))["access_token"]
        response = await world.client.get("/fhir/$follow-up-metrics", headers=world.bearer(token), params=NOVEMBER)
        assert response.status_code == 200, response.text
        own = measures(response.json())
        assert (own["satisfaction"]["numerator"], own["satisfaction"]["denominator"]) == (1, 1)
