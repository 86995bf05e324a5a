"""C5 nesting, C6 combining, C7 implicit policies, C8 labels, C9 break-glass, and what a verdict reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from consent.engine import FALSE, TRUE, Actor, Ask, Cond, ConsentPolicy, Facts, decide, verdict
from consent.engine.expr import all_of, negate
from tests.consent.builders import (
    BTG,
    HIV,
    HMARKT,
    HRESCH,
    LAB,
    TREAT,
    TYPES,
    R,
    V,
    ask,
    both,
    clinician,
    consent,
    obs,
    prov,
    system,
)

GP = "Practitioner/gp"
OTHER = "Practitioner/other"
OBSERVATION = (TYPES, "Observation")

# depth 3: everything but Observations; of those the GP sees all but V-labelled ones
DEEP = consent(prov("permit", children=(
    prov("deny", cls=(OBSERVATION,), children=(
        prov("permit", actor=(GP,), children=(
            prov("deny", label=(V,)),)),)),)))

NESTING: list[tuple[str, Ask, Facts, bool]] = [
    ("GP sees an Observation", ask(clinician(GP)), obs(), True),
    ("another clinician does not", ask(clinician(OTHER)), obs(), False),
    ("GP does not see a V-labelled one", ask(clinician(GP)), obs(labels=(V,)), False),
    ("non-Observations are open to all", ask(clinician(OTHER)), Facts("Condition", "c1",
                                                                     frozenset({(TYPES, "Condition")})), True),
]


@pytest.mark.parametrize(("question", "facts", "expected"), [r[1:] for r in NESTING], ids=[r[0] for r in NESTING])
def test_nesting_depth_three(question: Ask, facts: Facts, expected: bool) -> None:
    assert both([DEEP], question, facts) is expected


def test_siblings_deny_overrides() -> None:
    siblings = consent(prov("deny", children=(prov("permit", actor=(GP,)), prov("deny", cls=(LAB,)))))
    assert both([siblings], ask(), obs())
    assert not both([siblings], ask(), obs(LAB))


def test_matching_children_replace_the_parent_type() -> None:
    # a nested permit that matches wins over its deny parent, one that does not leaves the parent's type
    nested = consent(prov("deny", children=(prov("permit", purpose=(TREAT,)),)))
    assert both([nested], ask(), obs())
    assert not both([nested], ask(clinician(), HRESCH), obs(), ConsentPolicy(implicit="all-normal"))


OLD_PERMIT = consent(prov("permit"), id="old", date_time="2025-01-01")
NEW_DENY = consent(prov("deny"), id="new", date_time="2026-01-01")
OLD_DENY = consent(prov("deny"), id="old", date_time="2025-01-01")
NEW_PERMIT = consent(prov("permit"), id="new", date_time="2026-01-01")
NEW_LABS = consent(prov("permit", cls=(LAB,)), id="new", date_time="2026-01-01")
MOST_RECENT = ConsentPolicy(combining="most-recent")
APP = system()  # neither clinician nor clinic system: basic-normal denies it without a consent

COMBINING: list[tuple[str, list[dict[str, Any]], ConsentPolicy, Facts, bool]] = [
    ("deny-overrides old permit new deny", [OLD_PERMIT, NEW_DENY], ConsentPolicy(), obs(), False),
    ("deny-overrides old deny new permit", [OLD_DENY, NEW_PERMIT], ConsentPolicy(), obs(), False),
    ("most-recent old permit new deny", [OLD_PERMIT, NEW_DENY], MOST_RECENT, obs(), False),
    ("most-recent old deny new permit", [OLD_DENY, NEW_PERMIT], MOST_RECENT, obs(), True),
    ("most-recent newest not applicable falls to older", [OLD_DENY, NEW_LABS], MOST_RECENT, obs(), False),
    ("most-recent newest applicable", [OLD_DENY, NEW_LABS], MOST_RECENT, obs(LAB), True),
    ("most-recent same dateTime: lastUpdated decides",
     [consent(prov("deny"), id="a", date_time="2026-01-01", last_updated="2026-01-02T00:00:00Z"),
      consent(prov("permit"), id="b", date_time="2026-01-01", last_updated="2026-01-03T00:00:00Z")],
     MOST_RECENT, obs(), True),
    ("most-recent full tie: deny overrides",
     [consent(prov("permit"), id="a", date_time="2026-01-01"), consent(prov("deny"), id="b", date_time="2026-01-01")],
     MOST_RECENT, obs(), False),
]


@pytest.mark.parametrize(("consents", "policy", "facts", "expected"), [r[1:] for r in COMBINING],
                         ids=[r[0] for r in COMBINING])
def test_combining(consents: list[dict[str, Any]], policy: ConsentPolicy, facts: Facts, expected: bool) -> None:
    assert both(consents, ask(APP), facts, policy) is expected


THIRD = clinician("Organization/insurer", third_party=True)
VENDOR = system("glucoapp", "Organization/vendor")
IMPLICIT: list[tuple[str, str, Ask, bool]] = [
    ("basic-normal", "basic-normal", ask(clinician()), True),
    ("basic-normal emergency treatment", "basic-normal", ask(clinician(), (TREAT[0], "ETREAT")), True),
    ("basic-normal research", "basic-normal", ask(clinician(), HRESCH), False),
    ("basic-normal other kind", "basic-normal", ask(APP), False),
    ("basic-normal marketing", "basic-normal", ask(clinician(), TREAT, HMARKT), False),
    ("basic-normal third party", "basic-normal", ask(THIRD), False),
    ("basic-normal break-glass", "basic-normal", ask(clinician(), BTG, break_glass=True), True),
    ("all-normal", "all-normal", ask(APP, HRESCH), True),
    ("all-normal marketing", "all-normal", ask(APP, HMARKT), False),
    ("all-normal third party", "all-normal", ask(THIRD), False),
    ("all-normal third party break-glass", "all-normal", ask(THIRD, BTG, break_glass=True), False),
    ("break-glass-only", "break-glass-only", ask(clinician()), False),
    ("break-glass-only with break-glass", "break-glass-only", ask(clinician(), BTG, break_glass=True), True),
    ("break-glass-only BTG not granted", "break-glass-only", ask(clinician(), BTG), False),
    ("deny", "deny", ask(clinician()), False),
    ("deny with break-glass", "deny", ask(clinician(), BTG, break_glass=True), True),
]


@pytest.mark.parametrize(("implicit", "question", "expected"), [r[1:] for r in IMPLICIT], ids=[r[0] for r in IMPLICIT])
def test_implicit_policies(implicit: str, question: Ask, expected: bool) -> None:
    policy = ConsentPolicy(implicit=implicit)
    assert both([], question, obs(), policy) is expected
    found = verdict([], question, policy)
    # a permit still hides what is labelled R or V (C8), unless it is break-glass
    unlabelled = TRUE if question.break_glass else all_of(*(negate(Cond("securityLabel", (c,))) for c in (R, V)))
    assert found.policy == implicit and found.expr == (unlabelled if expected else FALSE)


COLLECTION: list[tuple[str, str, list[dict[str, Any]], Ask, bool]] = [
    ("clinician treatment exempt", "treatment-exempt", [], ask(clinician(), action="collect"), True),
    ("clinic system exempt", "treatment-exempt", [], ask(system(kind="clinic-system"), action="collect"), True),
    ("device vendor needs consent", "treatment-exempt", [], ask(VENDOR, action="collect"), False),
    ("clinician needs consent when required", "consent-required", [], ask(clinician(), action="collect"), False),
    ("implicit all-normal does not cover collection", "treatment-exempt", [], ask(VENDOR, action="collect"), False),
    ("vendor with a collect permit", "treatment-exempt",
     [consent(prov("deny", children=(prov("permit", actor=("Organization/vendor",), action=("collect",)),)))],
     ask(VENDOR, action="collect"), True),
    ("vendor permit by client id", "treatment-exempt",
     [consent(prov("deny", children=(prov("permit", ident=((
         "http://careloop.health/fhir/sid/client-id", "glucoapp"),), action=("collect",)),)))],
     ask(VENDOR, action="collect"), True),
    ("access permit does not permit collection", "treatment-exempt",
     [consent(prov("deny", children=(prov("permit", actor=("Organization/vendor",), action=("access",)),)))],
     ask(VENDOR, action="collect"), False),
    ("opt-out denies even clinicians' collection", "treatment-exempt", [consent(prov("deny"))],
     ask(clinician(), action="collect"), False),
]


@pytest.mark.parametrize(("collection", "consents", "question", "expected"), [r[1:] for r in COLLECTION],
                         ids=[r[0] for r in COLLECTION])
def test_collection(collection: str, consents: list[dict[str, Any]], question: Ask, expected: bool) -> None:
    policy = ConsentPolicy(implicit="all-normal", collection=collection)
    assert both(consents, question, obs(), policy) is expected


def test_marketing_needs_a_permit_naming_it() -> None:
    general = consent(prov("permit"))
    marketing = consent(prov("deny", children=(prov("permit", purpose=(HMARKT,)),)), id="m")
    question = ask(APP, HMARKT)
    assert not both([general], question, obs())  # a general opt-in is not a marketing opt-in
    assert both([marketing], question, obs())
    assert not both([marketing], ask(APP, HRESCH), obs())


def test_third_party_needs_a_permit_naming_it() -> None:
    general = consent(prov("permit"))
    named = consent(prov("permit", children=(prov("permit", actor=("Organization/insurer",)),)), id="n")
    assert not both([general], ask(THIRD), obs())
    assert both([named], ask(THIRD), obs())
    # an unnamed permit counts for nothing, so it cannot override another consent's deny either way
    assert both([general, named], ask(THIRD), obs())


def test_break_glass_details() -> None:
    opt_out = consent(prov("deny"))
    glass = ask(clinician(), BTG, break_glass=True)
    assert both([opt_out], glass, obs())
    # BTG named in an ancestor's purpose makes the deny hold
    assert not both([consent(prov("deny", purpose=(BTG,)))], glass, obs())
    # break-glass helps neither opt-in purposes nor third parties
    assert not both([opt_out], ask(clinician(), BTG, HMARKT, break_glass=True), obs())
    assert not both([opt_out], ask(THIRD, BTG, break_glass=True), obs())
    why = decide([opt_out], glass, ConsentPolicy(), obs()).why
    assert "break-glass" in why and "Consent/c1/_history/1" in why


def test_sensitive_label_permit_must_match() -> None:
    # the label permit is only for the GP: another clinician does not see the R resource
    for_gp = consent(prov("permit", children=(prov("permit", actor=(GP,), label=(R,)),)))
    assert both([for_gp], ask(clinician(GP)), obs(labels=(R,)))
    assert not both([for_gp], ask(clinician(OTHER)), obs(labels=(R,)))
    assert both([for_gp], ask(clinician(OTHER)), obs())
    # a permit naming R does not cover V
    assert not both([for_gp], ask(clinician(GP)), obs(labels=(R, V)))
    found = decide([for_gp], ask(clinician(OTHER)), ConsentPolicy(), obs(labels=(R,)))
    assert "labelled R" in found.why
    # the set of sensitive labels is configurable
    assert both([], ask(), obs(labels=(R,)), ConsentPolicy(sensitive=frozenset()))


def test_verdict_reports_basis_consents_policy() -> None:
    labs = consent(prov("permit", children=(prov("deny", cls=(LAB,)), prov("deny", actor=(OTHER,)))),
                   version="3")
    found = verdict([labs, consent(prov("deny"), id="gone", status="inactive")], ask(clinician(GP)),
                    ConsentPolicy())
    assert found.consents == ("Consent/c1/_history/3",)
    # the provision for another actor cannot take part; the lab deny can
    assert [(b.path, b.type) for b in found.basis] == [("provision", "permit"), ("provision.provision[0]", "deny")]
    assert "class laboratory" in found.basis[1].why.replace(f"{LAB[0]}|", "")
    assert found.policy is None  # the root applies to every resource: the implicit policy never decides
    assert found.expr not in (TRUE, FALSE)
    limited = verdict([consent(prov("deny", cls=(LAB,)))], ask(clinician(GP)), ConsentPolicy())
    assert limited.policy == "basic-normal"


def test_decide_without_a_resource() -> None:
    labs = [consent(prov("permit", children=(prov("deny", cls=(LAB,)),)))]
    unlabelled = ConsentPolicy(sensitive=frozenset())
    open_ = decide([consent(prov("permit"))], ask(APP), unlabelled, None)
    assert open_.permit and not open_.depends
    assert decide([consent(prov("permit"))], ask(APP), ConsentPolicy(), None).depends  # R and V stay hidden
    shut = decide([consent(prov("deny"))], ask(APP), ConsentPolicy(), None)
    assert not shut.permit and not shut.depends
    depends = decide(labs, ask(APP), ConsentPolicy(), None)
    assert depends.depends and not depends.permit and "depends on the resource" in depends.why
    assert [b.path for b in depends.basis] == ["provision", "provision.provision[0]"]
    on_lab = decide(labs, ask(APP), ConsentPolicy(), obs(LAB))
    assert not on_lab.permit and [b.path for b in on_lab.basis] == ["provision.provision[0]"]
    assert on_lab.why.startswith("denied by Consent/c1/_history/1 provision.provision[0]")
    implicit = decide([], ask(APP), ConsentPolicy(), obs())
    assert implicit.policy == "basic-normal" and "no consent applies" in implicit.why


def test_self_access_is_exempt() -> None:
    me = ask(Actor(frozenset({"Patient/p1"}), kind="self"))
    found = verdict([consent(prov("deny"))], me, ConsentPolicy(implicit="deny"))
    assert found.expr == TRUE and found.basis == () and found.policy is None
    assert both([], me, obs(labels=(V,)), ConsentPolicy(implicit="deny"))


def test_valid_until_is_the_next_period_boundary() -> None:
    ending = consent(prov("deny", period={"end": "2026-06-30"}))
    starting = consent(prov("permit", children=(prov("deny", period={"start": "2026-06-10T08:00:00Z"}),)), id="c2")
    future = consent(prov("deny", period={"start": "2026-06-05"}), id="c3")
    question = ask()
    assert verdict([ending], question, ConsentPolicy()).valid_until == datetime(2026, 7, 1, tzinfo=UTC)
    assert verdict([ending, starting], question, ConsentPolicy()).valid_until == datetime(2026, 6, 10, 8,
                                                                                          tzinfo=UTC)
    assert verdict([ending, starting, future], question, ConsentPolicy()).valid_until == datetime(2026, 6, 5,
                                                                                                  tzinfo=UTC)
    assert verdict([consent(prov("deny"))], question, ConsentPolicy()).valid_until is None
    # at the boundary the verdict changes, as announced
    later = ask(now=datetime(2026, 7, 1, tzinfo=UTC))
    assert not both([ending], question, obs()) and both([ending], later, obs())


def test_policy_refuses_unknown_settings() -> None:
    for bad in ({"combining": "first"}, {"implicit": "open"}, {"collection": "never"}):
        with pytest.raises(ValueError, match="must be one of"):
            ConsentPolicy(**bad)


def test_unevaluable_consent_denies_everything() -> None:
    broken = consent(prov("permit", children=(prov(None, cls=(LAB,)),)))  # nested provision without type
    assert not both([broken], ask(), obs())
    found = verdict([broken], ask(), ConsentPolicy())
    assert found.basis[0].type == "deny" and "provision.provision[0].type" in found.basis[0].why
    assert HIV  # the code fixture is shared with other tables
