"""The hand-written baseline queries of the tier benchmark answer exactly what the server answers.

A ratio against a baseline that does less (or other) work than the server would flatter the server, so the
baseline SQL of `Observation?patient&code&date=ge` and of `$everything` is checked here against the server's
own answers on a loaded clinic population.
https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

import sqlite3

import httpx
import orjson
import pytest

from bench.generate import population
from bench.tier import RAW_OBSERVATIONS, _raw_everything
from resources.store.sqlite.bodies import decode
from server.settings import Settings
from tests.conftest import FHIR_JSON

pytestmark = pytest.mark.anyio


def _ids(bodies: list[tuple[bytes]]) -> list[str]:
    return [orjson.loads(decode(body) or b"{}")["id"] for (body,) in bodies]


async def test_the_baselines_answer_what_the_server_answers(client: httpx.AsyncClient, settings: Settings) -> None:
    for bundle in population(800):
        assert (await client.post("/fhir", content=orjson.dumps(bundle), headers=FHIR_JSON)).status_code == 200
    patients = [e["resource"]["id"] for e in
                (await client.get("/fhir/Patient", params={"_count": "8", "_elements": "id"})).json()["entry"]]
    conn = sqlite3.connect(settings.sqlite_path)
    pids = {(t, c): p for p, t, c in conn.execute("SELECT pid, type, code FROM sp")}
    types = [t for (t,) in conn.execute("SELECT DISTINCT r.type FROM compartment c JOIN resource r ON r.rid = "
                                        "c.rid WHERE r.type != 'Patient'")]
    found_any = 0
    for patient in patients:
        search = (await client.get("/fhir/Observation", params={"patient": patient, "code": "2339-0",
                                                                 "date": "ge2020-01-01"})).json()
        served = [e["resource"]["id"] for e in search.get("entry", [])]
        raw = conn.execute(RAW_OBSERVATIONS, (pids[("Observation", "patient")], patient,
                                              pids[("Observation", "code")], "2339-0",
                                              pids[("Observation", "date")], 1577836800000)).fetchall()
        assert _ids(raw) == served
        found_any += len(served)
        record = (await client.get(f"/fhir/Patient/{patient}/$everything")).json()
        everything = _raw_everything(types)(conn, patient)
        assert isinstance(everything, list)
        assert sorted(_ids(everything)) == sorted(e["resource"]["id"] for e in record["entry"])
    conn.close()
    assert found_any > 0  # the searches matched something: the comparison is not between two empty lists
