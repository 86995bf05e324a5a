"""c6: what consent narrowing costs a patient-scoped search and a read by id, measured side by side in one run.

Two patients hold the same record (the same Observations: vitals and labs, dated over five years); one has
three Consents with nested provisions (a lab deny with a GP exception, a dated deny, a research-only deny),
the other none. A clinician's request (user/ scopes, purpose TREAT) searches `Observation?subject=<p>` and
reads an Observation of each, alternating the two so both see the same machine. Runs in one process through
the data engine (Repository + SQLite store + the request's guard), so the figure is the engine's cost, not
HTTP's; the rest of the store holds background patients up to --resources.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median, record
from consent.access import Access, BoundGuard
from consent.scopes import parse_scopes
from resources.guard import GUARD
from resources.models import resource_types
from resources.search.parse import parse_search
from server.app import build_services, open_services
from server.settings import Settings

LAB = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}
VITAL = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}
SCOPE = {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
ROLE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}


def _observation(patient: str, n: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "category": [{"coding": [LAB if n % 3 == 0 else VITAL]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0" if n % 3 == 0 else "8867-4"}]},
            "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": f"{2021 + n % 5}-0{1 + n % 9}-15",
            "valueQuantity": {"value": 60 + n % 40, "unit": "/min", "system": "http://unitsofmeasure.org",
                              "code": "/min"}}


def _consents(patient: str, gp: str) -> list[dict[str, Any]]:
    base = {"resourceType": "Consent", "status": "active", "scope": {"coding": [SCOPE]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient}"}, "dateTime": "2026-01-01"}
    return [
        {**base, "provision": {"type": "permit", "provision": [{"type": "deny", "class": [LAB], "provision": [
            {"type": "permit", "actor": [{"role": ROLE, "reference": {"reference": gp}}]}]}]}},
        {**base, "provision": {"type": "permit", "provision": [
            {"type": "deny", "dataPeriod": {"end": "2021-06-30"}}]}},
        {**base, "provision": {"type": "permit", "provision": [{"type": "deny", "purpose": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}]}]}},
    ]


async def _run(resources: int, per_patient: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(auth="on", sqlite_path=str(Path(tmp) / "c6.db"), validation_workers=0,
                            subscriptions=False, terminology_seed=False, pathways_seed=False,
                            auth_db=str(Path(tmp) / "auth.db"))
        services = await open_services(build_services(settings))
        repository = services.repository
        try:
            consented = (await repository.create("Patient", {"resourceType": "Patient"})).resource.id
            plain = (await repository.create("Patient", {"resourceType": "Patient"})).resource.id
            gp = (await repository.create("Practitioner", {"resourceType": "Practitioner"})).resource.id
            for patient in (consented, plain):
                for n in range(per_patient):
                    await repository.create("Observation", _observation(patient, n))
            made = 2 * per_patient + 3
            background = 0
            while made < resources:  # other patients, ten readings each
                other = (await repository.create("Patient", {"resourceType": "Patient"})).resource.id
                for n in range(10):
                    await repository.create("Observation", _observation(other, n))
                made += 11
                background += 1
            for body in _consents(consented, f"Practitioner/{gp}"):
                await repository.create("Consent", body)
            scopes, _ = parse_scopes("user/*.rs", frozenset(resource_types()))
            access = Access(scopes, client_id="bench", fhir_user="Practitioner/other", purposes=("TREAT",))
            token = GUARD.set(BoundGuard(services.policy, access))
            try:
                figures = await _measure(repository, services, consented, plain, rounds)
            finally:
                GUARD.reset(token)
        finally:
            await repository.store.close()
    return {"resources": made, "per_patient": per_patient, "background_patients": background, **figures}


async def _measure(repository: Any, services: Any, consented: str, plain: str, rounds: int) -> dict[str, Any]:
    def query(patient: str) -> Any:
        return parse_search("Observation", [("subject", f"Patient/{patient}"), ("_count", "50"),
                                            ("_total", "accurate")],
                            repository.registry, repository.search_limits).query

    shown = (await repository.search(query(consented))).resources
    visible_read = shown[0].id
    plain_read = (await repository.search(query(plain))).resources[0].id
    timings: dict[str, list[float]] = {"search_consent": [], "search_none": [], "read_on": [], "read_off": []}
    enforcer = services.policy.consent
    for _ in range(rounds):
        for name, patient in (("search_consent", consented), ("search_none", plain)):
            started = time.perf_counter()
            await repository.search(query(patient))
            timings[name].append(time.perf_counter() - started)
        for name, on in (("read_on", True), ("read_off", False)):
            services.policy.consent = enforcer if on else None
            started = time.perf_counter()
            await repository.read("Observation", visible_read if on else plain_read)
            timings[name].append(time.perf_counter() - started)
        services.policy.consent = enforcer
    p50 = {k: median(v) * 1e6 for k, v in timings.items()}
    return {"search_consent_p50_us": round(p50["search_consent"]), "search_none_p50_us": round(p50["search_none"]),
            "search_ratio": round(p50["search_consent"] / p50["search_none"], 3),
            "read_on_p50_us": round(p50["read_on"]), "read_off_p50_us": round(p50["read_off"]),
            "read_throughput_ratio": round(p50["read_off"] / p50["read_on"], 3),
            "shown_of_consented": len(shown)}


def main() -> None:
    """Run c6 and print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument("--per-patient", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    figures = asyncio.run(_run(args.resources, args.per_patient, args.rounds))
    record(f"consent_{args.resources}", figures)
    print(json.dumps(figures, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
