"""Patient/$match latency with many patients (issue 32: p50 <= 20 ms at 100k).

One uvicorn worker pinned to core 0 holds N generated patients (Chinese names in characters or pinyin, Latin
names, birth dates, phones, addresses); one client asks, one request at a time, $match for a near-duplicate
of a random stored patient (a typo, pinyin for characters, swapped day/month, another phone format) and, in
the same run and alternating with it, a plain `Patient?birthdate=` search: the search is the yardstick that
shows how fast the machine was at that moment.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import PYTHON, free_port, pinned, record, start, stop

FHIR = {"content-type": "application/fhir+json", "prefer": "return=minimal"}
SURNAMES = [("王", "Wang"), ("李", "Li"), ("张", "Zhang"), ("刘", "Liu"), ("陈", "Chen"), ("杨", "Yang"),
            ("黄", "Huang"), ("赵", "Zhao"), ("吴", "Wu"), ("周", "Zhou"), ("徐", "Xu"), ("孙", "Sun")]
GIVEN = [("伟", "Wei"), ("芳", "Fang"), ("娜", "Na"), ("敏", "Min"), ("静", "Jing"), ("丽", "Li"), ("强", "Qiang"),
         ("磊", "Lei"), ("军", "Jun"), ("洋", "Yang"), ("勇", "Yong"), ("艳", "Yan"), ("杰", "Jie"), ("涛", "Tao")]
LATIN = ["Smith", "Johnson", "Brown", "Taylor", "Miller", "Wilson", "Moore", "Anderson", "Thomas", "Jackson"]
FIRST = ["Mary", "John", "Anna", "James", "Linda", "Robert", "Susan", "David", "Karen", "Peter"]


def person(n: int, rng: random.Random) -> dict[str, Any]:
    """One generated patient; about a third with Latin names, the others in characters or pinyin."""
    kind = n % 3
    if kind == 0:
        family, given = rng.choice(LATIN), rng.choice(FIRST)
    else:
        (fam_han, fam_py), (giv_han, giv_py) = rng.choice(SURNAMES), rng.choice(GIVEN)
        family, given = (fam_han, giv_han) if kind == 1 else (fam_py, giv_py)
    born = f"{rng.randint(1930, 2015)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return {"resourceType": "Patient", "identifier": [{"system": "urn:bench:mrn", "value": str(n)}],
            "name": [{"family": family, "given": [given]}], "gender": rng.choice(["male", "female"]),
            "birthDate": born, "telecom": [{"system": "phone", "value": f"139{n:08d}"}],
            "address": [{"line": [f"{rng.randint(1, 999)} Road"], "city": "Hangzhou", "postalCode": "310000"}]}


def near_duplicate(stored: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The same person as another system would send them, without the identifier."""
    probe = {k: v for k, v in stored.items() if k != "identifier"}
    change = rng.randrange(3)
    if change == 0:
        born = probe["birthDate"]
        probe["birthDate"] = f"{born[:4]}-{born[8:10]}-{born[5:7]}" if int(born[8:10]) <= 12 else born
    elif change == 1:
        name = probe["name"][0]
        probe["name"] = [{"family": name["family"], "given": [name["given"][0][:-1] + "x"]}]
    else:
        value = probe["telecom"][0]["value"]
        probe["telecom"] = [{"system": "phone", "value": f"+86 {value[:3]} {value[3:7]} {value[7:]}"}]
    return probe


async def load(base: str, patients: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        for at in range(0, len(patients), 500):
            entries = [{"resource": p, "request": {"method": "POST", "url": "Patient"}} for p in patients[at:at + 500]]
            response = await client.post("/", content=orjson.dumps(
                {"resourceType": "Bundle", "type": "transaction", "entry": entries}), headers=FHIR)
            response.raise_for_status()


async def measure(base: str, patients: list[dict[str, Any]], asks: int, rng: random.Random) -> dict[str, Any]:
    match_ms, search_ms, found = [], [], 0
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for _ in range(asks):
            stored = rng.choice(patients)
            body = {"resourceType": "Parameters", "parameter": [
                {"name": "resource", "resource": near_duplicate(stored, rng)}, {"name": "count", "valueInteger": 5}]}
            began = time.perf_counter()
            answer = await client.post("/Patient/$match", content=orjson.dumps(body), headers=FHIR)
            match_ms.append((time.perf_counter() - began) * 1000)
            answer.raise_for_status()
            entries = answer.json().get("entry") or []
            found += any(e["resource"]["identifier"][0]["value"] == stored["identifier"][0]["value"] for e in entries)
            began = time.perf_counter()
            (await client.get("/Patient", params={"birthdate": stored["birthDate"]})).raise_for_status()
            search_ms.append((time.perf_counter() - began) * 1000)
    return {"asks": asks, "match_p50_ms": round(statistics.median(match_ms), 2),
            "match_p95_ms": round(statistics.quantiles(match_ms, n=20)[18], 2),
            "search_p50_ms": round(statistics.median(search_ms), 2),
            "search_p95_ms": round(statistics.quantiles(search_ms, n=20)[18], 2),
            "found_the_stored_patient": f"{found}/{asks}"}


def main() -> None:
    """Load, measure, print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--asks", type=int, default=400)
    parser.add_argument("--db", help="a store already loaded by an earlier run with the same --patients")
    args = parser.parse_args()
    rng = random.Random(32)
    patients = [person(n, rng) for n in range(args.patients)]
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or str(Path(tmp) / "match.db")
        port = free_port()
        base = f"http://127.0.0.1:{port}/fhir"
        server = start(pinned([PYTHON, "-m", "server", "serve", "--port", str(port), "--db", db], 0),
                       f"{base}/metadata", env={"CARELOOP_AUDIT": "off", "CARELOOP_LOG_LEVEL": "warning"})
        try:
            began = time.perf_counter()
            if not args.db or not Path(args.db).exists() or Path(args.db).stat().st_size < 1_000_000:
                asyncio.run(load(base, patients))
            loaded_s = time.perf_counter() - began
            asyncio.run(measure(base, patients, 20, random.Random(1)))  # warm-up: pypinyin, caches
            figures = {"patients": args.patients, "load_s": round(loaded_s, 1),
                       **asyncio.run(measure(base, patients, args.asks, rng))}
        finally:
            stop(server)
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())  # noqa: T201
    record("match", figures)


if __name__ == "__main__":
    main()
