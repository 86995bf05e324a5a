"""Satisfaction surveys (issue 30, item 5): an answered survey completes its Task and becomes the scores that
$churn-risk and $follow-up-metrics read, once however often it is sent.

https://hl7.org/fhir/R4B/questionnaireresponse.html
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from subscriptions.surveys import ANSWER, SURVEY, SURVEY_TASK, SurveyWorker, answers, asks_survey, score
from tests.conftest import FHIR_JSON, body, create
from tests.factories import patient

pytestmark = pytest.mark.anyio
SIGNAL = "http://careloop.health/fhir/CodeSystem/churn-signal"
MEASURE = "http://careloop.health/fhir/CodeSystem/follow-up-measure"


def surveys(app: FastAPI) -> SurveyWorker:
    found: SurveyWorker = app.state.surveys
    return found


def survey_task(patient_id: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", "priority": "routine",
            "for": {"reference": f"Patient/{patient_id}"}, "authoredOn": "2026-12-01T10:00:00Z",
            "input": [{"type": {"text": "questionnaire"}, "valueCanonical": SURVEY}], **extra}


def response(patient_id: str, satisfaction: int | None, nps: int | None, task: str | None = None,
             status: str = "completed") -> dict[str, Any]:
    items = []
    if satisfaction is not None:
        items.append({"linkId": "satisfaction", "answer": [{"valueInteger": satisfaction}]})
    if nps is not None:
        items.append({"linkId": "nps", "answer": [{"valueInteger": nps}]})
    items.append({"linkId": "comment", "answer": [{"valueString": "kind staff"}]})
    found: dict[str, Any] = {"resourceType": "QuestionnaireResponse", "questionnaire": SURVEY, "status": status,
                             "subject": {"reference": f"Patient/{patient_id}"}, "authored": "2026-12-02T09:00:00Z",
                             "item": items}
    if task is not None:
        found["extension"] = [{"url": SURVEY_TASK, "valueReference": {"reference": f"Task/{task}"}}]
    return found


async def scores(client: httpx.AsyncClient, patient_id: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name, token in (("satisfaction", f"{SIGNAL}|satisfaction"), ("nps", f"{MEASURE}|nps")):
        page = (await client.get("/fhir/Observation", params={"patient": patient_id, "code": token})).json()
        out[name] = [e["resource"] for e in page.get("entry", [])]
    return out


async def read(client: httpx.AsyncClient, reference: str) -> dict[str, Any]:
    found: dict[str, Any] = (await client.get(f"/fhir/{reference}")).json()
    return found


@pytest.mark.parametrize(("value", "low", "high", "expected"), [
    (4, 1, 5, 4), (1, 1, 5, 1), (5, 1, 5, 5), (0, 1, 5, None), (6, 1, 5, None), (0, 0, 10, 0), (10, 0, 10, 10),
    (11, 0, 10, None), (4.0, 1, 5, 4), (4.5, 1, 5, None), (True, 0, 10, None), ("4", 1, 5, None), (None, 1, 5, None)])
def test_score_is_an_integer_in_range(value: Any, low: int, high: int, expected: int | None) -> None:
    assert score(value, low, high) == expected


@pytest.mark.parametrize(("task", "expected"), [
    ({"input": [{"valueCanonical": SURVEY + "|1.0.0"}]}, True),
    ({"focus": {"reference": "Questionnaire/satisfaction"}}, True),
    ({"code": {"coding": [{"system": "http://careloop.health/fhir/CodeSystem/follow-up-task",
                           "code": "satisfaction-survey"}]}}, True),
    ({"input": [{"valueCanonical": "http://other.example/Questionnaire/x"}]}, False),
    ({"code": {"coding": [{"code": "satisfaction-survey"}]}}, False),
    ({}, False)])
def test_which_tasks_ask_for_the_survey(task: dict[str, Any], expected: bool) -> None:
    assert asks_survey(task) is expected


def test_answers_are_found_in_nested_items() -> None:
    nested = {"item": [{"linkId": "group", "item": [{"linkId": "satisfaction", "answer": [{"valueInteger": 2}]}]},
                       {"linkId": "nps", "answer": [{"valueInteger": 9, "item": [
                           {"linkId": "comment", "answer": [{"valueString": "ok"}]}]}]}]}
    assert answers(nested) == {"satisfaction": 2, "nps": 9, "comment": "ok"}


async def test_survey_completes_its_task_and_becomes_scores_once(app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    task = await create(client, survey_task(someone["id"]))
    other = await create(client, survey_task(someone["id"]))
    answered = await create(client, response(someone["id"], 4, 9, task=task["id"]))
    await surveys(app).settled()
    done = await read(client, f"Task/{task['id']}")
    assert done["status"] == "completed"
    assert [o["valueReference"] for o in done["output"]] == [
        {"reference": f"QuestionnaireResponse/{answered['id']}"}]
    assert (await read(client, f"Task/{other['id']}"))["status"] == "requested"  # only the named Task
    found = await scores(client, someone["id"])
    [satisfaction], [nps] = found["satisfaction"], found["nps"]
    assert satisfaction["valueInteger"] == 4 and nps["valueInteger"] == 9
    for obs in (satisfaction, nps):
        assert obs["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{answered['id']}"}]
        assert obs["effectiveDateTime"] == "2026-12-02T09:00:00Z"
        assert obs["identifier"][0]["system"] == ANSWER

    # sent again unchanged, and handled again as after a restart: nothing new
    again = await client.put(f"/fhir/QuestionnaireResponse/{answered['id']}", content=body(answered),
                             headers=FHIR_JSON)
    assert again.status_code == 200
    await surveys(app).settled()
    surveys(app).cursor = 0
    await surveys(app).settled()
    found = await scores(client, someone["id"])
    assert [o["meta"]["versionId"] for o in found["satisfaction"] + found["nps"]] == ["1", "1"]
    assert (await read(client, f"Task/{task['id']}"))["meta"]["versionId"] == done["meta"]["versionId"]


async def test_churn_risk_reads_the_survey_score(app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    await create(client, response(someone["id"], 2, 3))
    await surveys(app).settled()
    risk = (await client.get(f"/fhir/Patient/{someone['id']}/$churn-risk")).json()
    [result] = [p for p in risk["parameter"] if p["name"] == "result"]
    signal = next(s for s in result["part"] if s["name"] == "signal"
                  and s["part"][0]["valueCoding"]["code"] == "satisfaction")
    assert signal["part"][1]["valueDecimal"] == 2
    assert signal["part"][2]["valueCoding"]["code"] == "high"  # below 3 (DOMAIN.md section 2)


async def test_unlinked_survey_answers_the_patients_oldest_open_survey_task(app: FastAPI,
                                                                            client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    newer = await create(client, survey_task(someone["id"], authoredOn="2026-12-03T10:00:00Z"))
    older = await create(client, survey_task(someone["id"], authoredOn="2026-11-30T10:00:00Z"))
    plain = {k: v for k, v in survey_task(someone["id"]).items() if k != "input"}
    unrelated = await create(client, {**plain, "authoredOn": "2026-11-01"})
    await create(client, response(someone["id"], 5, 10))
    await surveys(app).settled()
    assert (await read(client, f"Task/{older['id']}"))["status"] == "completed"
    assert (await read(client, f"Task/{newer['id']}"))["status"] == "requested"
    assert (await read(client, f"Task/{unrelated['id']}"))["status"] == "requested"


async def test_amended_answer_updates_the_score_and_other_questionnaires_are_ignored(
        app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    first = await create(client, response(someone["id"], 3, 6))
    await create(client, {**response(someone["id"], 1, 0), "questionnaire": "http://other.example/Questionnaire/q"})
    await create(client, response(someone["id"], 1, 1, status="in-progress"))  # not finished: no score yet
    await surveys(app).settled()
    amended = {**first, "status": "amended", "item": response(someone["id"], 5, 6)["item"]}
    assert (await client.put(f"/fhir/QuestionnaireResponse/{first['id']}", content=body(amended),
                             headers=FHIR_JSON)).status_code == 200
    await surveys(app).settled()
    found = await scores(client, someone["id"])
    assert [(o["valueInteger"], o["meta"]["versionId"]) for o in found["satisfaction"]] == [(5, "2")]
    assert [(o["valueInteger"], o["meta"]["versionId"]) for o in found["nps"]] == [(6, "1")]


async def test_out_of_range_answers_make_no_score(app: FastAPI, client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    task = await create(client, survey_task(someone["id"]))
    await create(client, response(someone["id"], 7, 11, task=task["id"]))
    await surveys(app).settled()
    assert await scores(client, someone["id"]) == {"satisfaction": [], "nps": []}
    assert (await read(client, f"Task/{task['id']}"))["status"] == "completed"  # answered, though not scored
