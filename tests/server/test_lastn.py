"""Observation/$lastn on generated series: per code the latest `max` by effective time, from the index.

https://hl7.org/fhir/R4B/observation-operation-lastn.html
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.conftest import World, open_world
from tests.auth.test_security_cases import patient_token
from tests.conftest import create
from tests.factories import observation, patient

pytestmark = pytest.mark.anyio

LOINC = "http://loinc.org"
GLUCOSE, HEART_RATE, WEIGHT = "2339-0", "8867-4", "29463-7"
VITALS = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                      "code": "vital-signs"}]}


def _at(day: int) -> str:
    return f"2024-03-{day:02d}T08:00:00Z"


async def _series(client: httpx.AsyncClient) -> dict[str, Any]:
    ann = await create(client, patient(family="Ann"))
    bob = await create(client, patient(family="Bob"))
    subject = f"Patient/{ann['id']}"
    made: dict[str, list[tuple[int, str]]] = {GLUCOSE: [], HEART_RATE: []}
    days = list(range(1, 21))
    random.Random(32).shuffle(days)  # stored out of date order: the answer must follow the dates, not the ids
    for day in days[:12]:
        made[GLUCOSE].append((day, (await create(client, observation(subject, GLUCOSE, when=_at(day))))["id"]))
    for day in days[12:]:
        made[HEART_RATE].append((day, (await create(client, observation(
            subject, HEART_RATE, value=70, unit="/min", when=_at(day), category=[VITALS])))["id"]))
    await create(client, observation(f"Patient/{bob['id']}", GLUCOSE, when=_at(28)))  # someone else's, latest
    return {"ann": ann["id"], "bob": bob["id"],
            "latest": {code: [i for _, i in sorted(pairs, reverse=True)] for code, pairs in made.items()}}


def _codes(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["resource"]["code"]["coding"][0]["code"], e["resource"]["id"]) for e in bundle.get("entry") or []]


async def test_lastn_answers_the_latest_per_code(client: httpx.AsyncClient) -> None:
    series = await _series(client)
    latest = series["latest"]
    three = await client.get("/fhir/Observation/$lastn", params={"patient": series["ann"], "max": "3"})
    assert three.status_code == 200, three.text
    assert three.json()["type"] == "searchset" and three.json()["total"] == 6
    assert _codes(three.json()) == [(GLUCOSE, i) for i in latest[GLUCOSE][:3]] + [
        (HEART_RATE, i) for i in latest[HEART_RATE][:3]]
    one = await client.get("/fhir/Observation/$lastn", params={"patient": series["ann"]})
    assert _codes(one.json()) == [(GLUCOSE, latest[GLUCOSE][0]), (HEART_RATE, latest[HEART_RATE][0])]
    by_code = await client.get("/fhir/Observation/$lastn", params={"patient": series["ann"], "max": "50",
                                                                   "code": f"{LOINC}|{HEART_RATE}"})
    assert _codes(by_code.json()) == [(HEART_RATE, i) for i in latest[HEART_RATE]]
    vitals = await client.get("/fhir/Observation/$lastn", params={"patient": series["ann"], "category": "vital-signs"})
    assert _codes(vitals.json()) == [(HEART_RATE, latest[HEART_RATE][0])]
    everyone = await client.get("/fhir/Observation/$lastn", params={"code": f"{LOINC}|{GLUCOSE}"})
    assert len(everyone.json()["entry"]) == 1 and everyone.json()["entry"][0]["resource"]["subject"][
        "reference"] == f"Patient/{series['bob']}"
    posted = await client.post("/fhir/Observation/$lastn", json={"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueString": series["ann"]}, {"name": "max", "valueInteger": 2}]})
    assert _codes(posted.json()) == [(GLUCOSE, i) for i in latest[GLUCOSE][:2]] + [
        (HEART_RATE, i) for i in latest[HEART_RATE][:2]]


async def test_an_observation_of_two_codes_is_listed_once(client: httpx.AsyncClient) -> None:
    ann = await create(client, patient())
    both = observation(f"Patient/{ann['id']}", WEIGHT, value=70, unit="kg", when=_at(5))
    both["code"]["coding"].append({"system": "http://example.org/local", "code": "wt"})
    stored = await create(client, both)
    found = (await client.get("/fhir/Observation/$lastn", params={"patient": ann["id"]})).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [stored["id"]]


async def test_lastn_bad_input(client: httpx.AsyncClient) -> None:
    for params, where in (({"max": "0"}, "max"), ({"max": "many"}, "max"), ({"_sort": "date"}, "_sort"),
                          ({"max": "5000"}, "max")):
        answer = await client.get("/fhir/Observation/$lastn", params=params)
        assert answer.status_code == 400 and answer.json()["issue"][0]["expression"] == [where], params
    unknown = await client.get("/fhir/Observation/$lastn", params={"colour": "blue"})
    assert unknown.status_code == 400
    assert (await client.get("/fhir/Patient/$lastn")).status_code == 404
    empty = await client.get("/fhir/Observation/$lastn", params={"patient": "nobody"})
    assert empty.status_code == 200 and empty.json()["total"] == 0


async def test_lastn_is_narrowed_to_what_the_caller_may_see(tmp_path: Path, seeded_database: Path) -> None:
    async with open_world(tmp_path, seeded_database) as world:
        await _narrowed(world)


async def _narrowed(world: World) -> None:
    params = {"code": f"{LOINC}|{HEART_RATE}", "max": "5"}
    everyone = await world.client.get("/fhir/Observation/$lastn", params=params, headers=world.admin)
    assert {e["resource"]["id"] for e in everyone.json()["entry"]} == {
        world.ids["alice_vital"], world.ids["alice_lab"], world.ids["bob_vital"]}
    token = await patient_token(world, "alice")
    mine = await world.client.get("/fhir/Observation/$lastn", params=params, headers=world.bearer(token))
    assert mine.status_code == 200
    assert {e["resource"]["id"] for e in mine.json()["entry"]} == {world.ids["alice_vital"], world.ids["alice_lab"]}
    assert mine.json()["total"] == 2
