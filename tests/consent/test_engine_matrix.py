"""The consent test matrix (a)-(k) of SECURITY.md §3.6 at engine level, one table row per case."""

from __future__ import annotations

from typing import Any

import pytest

from consent.engine import Actor, Ask, ConsentPolicy, Facts
from tests.consent.builders import (
    BTG,
    HRESCH,
    LAB,
    R,
    ask,
    both,
    clinician,
    consent,
    obs,
    prov,
    system,
)

ORG_X = "Organization/x"
ALL_NORMAL = ConsentPolicy(implicit="all-normal")
DENY = ConsentPolicy(implicit="deny")
GLASS_ONLY = ConsentPolicy(implicit="break-glass-only")
BASIC = ConsentPolicy()

OPT_OUT = consent(prov("deny"))
LABS_HIDDEN = consent(prov("permit", children=(prov("deny", cls=(LAB,)),)))
ONLY_ORG_X = consent(prov("deny", children=(prov("permit", actor=(ORG_X,)),)))
DATED_DENY = consent(prov("permit", children=(prov("deny", data_period={"start": "2020-01-01", "end": "2020-12-31"}),)))
EXPIRED = consent(prov("deny", period={"start": "2024-01-01", "end": "2025-12-31"}))
BTG_DENY = consent(prov("deny", children=(prov("deny", purpose=(BTG,)),)))
LABEL_PERMIT = consent(prov("permit", children=(prov("permit", label=(R,)),)))

ROWS: list[tuple[str, list[dict[str, Any]], Ask, Facts, ConsentPolicy, bool]] = [
    # (a) no consent x each implicit policy
    ("a basic-normal clinician treatment", [], ask(), obs(), BASIC, True),
    ("a basic-normal clinician research", [], ask(clinician(), HRESCH), obs(), BASIC, False),
    ("a basic-normal app", [], ask(system()), obs(), BASIC, False),
    ("a basic-normal clinic system treatment", [], ask(system(kind="clinic-system")), obs(), BASIC, True),
    ("a all-normal app", [], ask(system(), HRESCH), obs(), ALL_NORMAL, True),
    ("a break-glass-only clinician", [], ask(), obs(), GLASS_ONLY, False),
    ("a break-glass-only with break-glass", [], ask(clinician(), BTG, break_glass=True), obs(), GLASS_ONLY, True),
    ("a deny clinician", [], ask(), obs(), DENY, False),
    # (b) root permit + nested deny of the laboratory category
    ("b lab hidden", [LABS_HIDDEN], ask(), obs(LAB), BASIC, False),
    ("b vital visible", [LABS_HIDDEN], ask(), obs(), BASIC, True),
    # (c) root deny + nested permit for Organization X
    ("c org X sees", [ONLY_ORG_X], ask(clinician("Practitioner/gp", ORG_X)), obs(), BASIC, True),
    ("c others do not", [ONLY_ORG_X], ask(), obs(), BASIC, False),
    # (d) purpose mismatch: the consent does not apply, the implicit policy decides
    ("d mismatch falls to default", [consent(prov("deny", purpose=(HRESCH,)))], ask(), obs(), BASIC, True),
    ("d mismatch default denies", [consent(prov("permit", purpose=(HRESCH,)))], ask(), obs(), DENY, False),
    # (e) two active consents, permit and deny: deny
    ("e permit and deny", [consent(prov("permit")), consent(prov("deny"), id="c2")], ask(), obs(), BASIC, False),
    # (f) expired consent: the implicit policy decides
    ("f expired", [EXPIRED], ask(), obs(), BASIC, True),
    # (g) dataPeriod deny and an undated resource: hidden (fail closed); dated outside: visible
    ("g undated hidden", [DATED_DENY], ask(), obs(date=None), BASIC, False),
    ("g dated outside visible", [DATED_DENY], ask(), obs(), BASIC, True),
    # (h) restricted label: hidden unless a permit names it
    ("h R hidden", [], ask(), obs(labels=(R,)), BASIC, False),
    ("h R hidden under all-normal", [], ask(), obs(labels=(R,)), ALL_NORMAL, False),
    ("h R permitted by label permit", [LABEL_PERMIT], ask(), obs(labels=(R,)), BASIC, True),
    # (i) break-glass: with entitlement it overrides a deny, without it does not; an explicit BTG deny holds
    ("i opt-out with break-glass", [OPT_OUT], ask(clinician(), BTG, break_glass=True), obs(), BASIC, True),
    ("i opt-out BTG without entitlement", [OPT_OUT], ask(clinician(), BTG), obs(), BASIC, False),
    ("i explicit BTG deny", [BTG_DENY], ask(clinician(), BTG, break_glass=True), obs(), BASIC, False),
    ("i break-glass sees R", [], ask(clinician(), BTG, break_glass=True), obs(labels=(R,)), BASIC, True),
    # (j) a permit that is revoked (inactive) no longer permits
    ("j active permit", [consent(prov("permit"))], ask(system()), obs(), BASIC, True),
    ("j revoked permit", [consent(prov("permit"), status="inactive")], ask(system()), obs(), BASIC, False),
    # (k) the patient's own access with an opt-out consent
    ("k self-access", [OPT_OUT], ask(Actor(frozenset({"Patient/p1"}), kind="self")), obs(), DENY, True),
]


@pytest.mark.parametrize(("consents", "question", "facts", "policy", "expected"), [r[1:] for r in ROWS],
                         ids=[r[0] for r in ROWS])
def test_matrix(consents: list[dict[str, Any]], question: Ask, facts: Facts, policy: ConsentPolicy,
                expected: bool) -> None:
    assert both(consents, question, facts, policy) is expected
