"""The two evaluation paths agree: holds(verdict(...).expr, facts) == decide(..., facts).permit.

Random small consents (nested up to depth 3), resources, asks and policies, from fixed seeds so a failure
repeats; each case also checks that decide() without a resource never claims more than the verdict.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from consent.engine import Actor, Ask, ConsentPolicy, Const, Facts, decide, holds, verdict
from tests.consent.builders import BTG, HIV, HMARKT, HRESCH, LAB, NOW, ORG, PULSE, TREAT, TYPES, VITAL, R, V, prov

ACTORS = ("Practitioner/gp", "Organization/x", "Organization/vendor")
CLASSES = (LAB, VITAL, (TYPES, "Observation"), (TYPES, "Condition"))
CODES = (HIV, PULSE)
LABELS = (R, V, ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "PSY"))
PURPOSES = (TREAT, HRESCH, HMARKT, BTG)
DATES = (("2026-01-01", "2026-03-31"), ("2026-04-01", None), (None, "2025-12-31"))
REFS = ("Encounter/e1", "Practitioner/gp", "Observation/o1", "Condition/k1")


def _some(rng: random.Random, pool: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(rng.sample(pool, rng.randint(1, 2)))


def _provision(rng: random.Random, depth: int, root: bool) -> dict[str, Any]:
    elements: dict[str, Any] = {}
    for name, chance in (("actor", 0.25), ("action", 0.15), ("purpose", 0.25), ("cls", 0.3), ("code", 0.2),
                         ("label", 0.2), ("data_period", 0.15), ("data", 0.15), ("period", 0.1)):
        if rng.random() >= chance:
            continue
        if name == "actor":
            elements["actor"] = _some(rng, ACTORS)
        elif name == "action":
            elements["action"] = _some(rng, ("access", "collect", "disclose"))
        elif name == "purpose":
            elements["purpose"] = _some(rng, PURPOSES)
        elif name == "cls":
            elements["cls"] = _some(rng, CLASSES)
        elif name == "code":
            elements["code"] = _some(rng, CODES)
        elif name == "label":
            elements["label"] = _some(rng, LABELS)
        elif name == "data_period":
            start, end = rng.choice(DATES)
            elements["data_period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
        elif name == "data":
            elements["data"] = tuple((rng.choice(("instance", "related", "authoredby")), rng.choice(REFS))
                                     for _ in range(rng.randint(1, 2)))
        else:
            elements["period"] = rng.choice(({"start": "2026-01-01"}, {"end": "2026-05-01"}))
    children = tuple(_provision(rng, depth + 1, False) for _ in range(rng.randint(0, 3 if depth < 3 else 0)))
    kind = rng.choice(("permit", "deny")) if not root or rng.random() < 0.9 else None
    return prov(kind, children=children, **elements)


def _consent(rng: random.Random, index: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Consent", "id": f"c{index}",
        "meta": {"versionId": "1", "lastUpdated": f"2026-0{rng.randint(1, 5)}-01T00:00:00Z"},
        "status": rng.choice(("active", "active", "active", "inactive")), "patient": {"reference": "Patient/p1"},
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "dateTime": f"202{rng.randint(4, 6)}-01-01", "provision": _provision(rng, 1, True)}
    if "type" not in out["provision"]:
        out["policyRule"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                         "code": rng.choice(("OPTIN", "OPTOUT"))}]}
    return out


def _facts(rng: random.Random) -> Facts:
    kind = rng.choice(("Observation", "Condition"))
    dated = rng.choice((None, ("2026-02-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z"),
                        ("2026-03-30T00:00:00.000Z", "2026-04-02T00:00:00.000Z"),
                        ("2025-06-01T00:00:00.000Z", "2025-06-01T23:59:59.999Z")))
    return Facts(kind, rng.choice(("o1", "k1", None)),
                 frozenset({(TYPES, kind), *rng.sample((LAB, VITAL), rng.randint(0, 1))}),
                 frozenset(rng.sample(CODES, rng.randint(0, 1))), frozenset(rng.sample(LABELS, rng.randint(0, 2))),
                 dated, frozenset(rng.sample(REFS, rng.randint(0, 2))), frozenset(rng.sample(REFS, rng.randint(0, 1))))


def _ask(rng: random.Random) -> Ask:
    kind = rng.choice(("clinician", "clinic-system", "other", "self"))
    actor = Actor(frozenset(rng.sample(ACTORS, rng.randint(0, 2))),
                  frozenset({(ORG, "glucoapp")}) if rng.random() < 0.3 else frozenset(), kind,
                  rng.random() < 0.2)
    return Ask("p1", actor, frozenset(rng.sample(PURPOSES, rng.randint(1, 2))),
               rng.choice(("access", "access", "collect", "disclose")), NOW + timedelta(days=rng.randint(-200, 0)),
               rng.random() < 0.2)


def _policy(rng: random.Random) -> ConsentPolicy:
    return ConsentPolicy(combining=rng.choice(("deny-overrides", "most-recent")),
                         implicit=rng.choice(("basic-normal", "all-normal", "break-glass-only", "deny")),
                         collection=rng.choice(("treatment-exempt", "consent-required")))


@pytest.mark.parametrize("seed", range(8))
def test_verdict_and_decide_agree(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(250):
        consents = [_consent(rng, i) for i in range(rng.randint(0, 3))]
        question, policy = _ask(rng), _policy(rng)
        found = verdict(consents, question, policy)
        for _ in range(4):
            facts = _facts(rng)
            direct = decide(consents, question, policy, facts)
            assert holds(found.expr, facts) == direct.permit, (consents, question, policy, facts, found.expr)
        unsure = decide(consents, question, policy, None)
        assert unsure.depends == (not isinstance(found.expr, Const))
        assert unsure.permit == (found.expr == Const(True))
