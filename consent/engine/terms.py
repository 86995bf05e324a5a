"""The consent engine's vocabulary: who asks (Actor, Ask), the configurable policy, and what a decision says.

Semantics: SECURITY.md §3.6 (C1-C12). https://hl7.org/fhir/R4B/consent.html
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from consent.engine.expr import Coding, Expr

PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
PROFILE = "urn:ietf:rfc:3986"
CLIENT_ID = "http://careloop.health/fhir/sid/client-id"
BTG: Coding = (PURPOSE, "BTG")

ACTOR_KINDS = frozenset({"self", "clinician", "clinic-system", "other"})
ACTIONS = frozenset({"access", "collect", "use", "disclose", "correct"})
IMPLICIT_POLICIES = frozenset({"basic-normal", "all-normal", "break-glass-only", "deny"})
COMBINERS = frozenset({"deny-overrides", "most-recent"})
COLLECTION_POLICIES = frozenset({"treatment-exempt", "consent-required"})


@dataclass(frozen=True)
class Actor:
    """Who asks: the references and identifiers a provision's actor may name, and what kind of party it is."""

    references: frozenset[str] = frozenset()
    identifiers: frozenset[Coding] = frozenset()
    kind: str = "other"  # self | clinician | clinic-system | other
    third_party: bool = False  # acts for an Organization other than the clinic's: needs a permit naming it


@dataclass(frozen=True)
class Ask:
    """One question to the engine: may this actor, for these purposes, do this action on this patient's data now?"""

    patient: str
    actor: Actor
    purposes: frozenset[Coding]
    action: str  # consentaction code: access (every read-type interaction), collect, use, disclose, correct
    now: datetime  # aware UTC
    break_glass: bool = False  # purpose BTG granted to an entitled caller (C9)


@dataclass(frozen=True)
class ConsentPolicy:
    """The configurable part of the semantics; the defaults are issue 28's."""

    combining: str = "deny-overrides"
    implicit: str = "basic-normal"
    categories: frozenset[Coding] = frozenset()  # Consent.category codings considered; empty: every category
    sensitive: frozenset[Coding] = frozenset({(CONFIDENTIALITY, "R"), (CONFIDENTIALITY, "V")})
    treatment: frozenset[Coding] = frozenset({(PURPOSE, "TREAT"), (PURPOSE, "ETREAT")})
    opt_in_purposes: frozenset[Coding] = frozenset({(PURPOSE, "HMARKT")})
    collection: str = "treatment-exempt"

    def __post_init__(self) -> None:
        for name, value, allowed in (("combining", self.combining, COMBINERS),
                                     ("implicit", self.implicit, IMPLICIT_POLICIES),
                                     ("collection", self.collection, COLLECTION_POLICIES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(sorted(allowed))}, not '{value}'")

    @classmethod
    def of(cls, overrides: dict[str, Any]) -> ConsentPolicy:
        """Defaults with a clinic's overrides (codings as "system|code"); ValueError naming what is wrong."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown consent policy setting(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        given: dict[str, Any] = {}
        for name, value in overrides.items():
            if name in ("combining", "implicit", "collection"):
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be a string")
                given[name] = value
            else:
                given[name] = frozenset(_coding(name, text) for text in _texts(name, value))
        return cls(**given)

    def as_settings(self) -> dict[str, Any]:
        """The policy as the settings that give it (codings as "system|code", sorted)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value if isinstance(value, str) else sorted(f"{s}|{c}" for s, c in value)
        return out


def _texts(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of \"system|code\" strings")
    return value


def _coding(name: str, text: str) -> Coding:
    system, sep, code = text.rpartition("|")
    if not sep or not system or not code:
        raise ValueError(f"{name}: '{text}' is not a \"system|code\" coding")
    return system, code


@dataclass(frozen=True)
class Basis:
    """One provision that takes part in a decision: where it is, what it decides and what matched."""

    consent: str  # versioned reference: "Consent/1/_history/2"
    path: str  # "provision", "provision.provision[0]", ...
    type: str  # permit | deny
    why: str


@dataclass(frozen=True)
class Verdict:
    """The decision for one ask over every resource of the patient: True where a resource may be seen or used."""

    expr: Expr
    basis: tuple[Basis, ...]  # every provision that can take part in the decision for this ask
    consents: tuple[str, ...]  # versioned references of the candidate consents
    policy: str | None  # the implicit policy when it takes part (no consent applies to some or all resources)
    valid_until: datetime | None  # the next instant a period boundary changes the verdict


@dataclass(frozen=True)
class Facts:
    """What the engine needs of one resource."""

    type: str
    id: str | None = None
    classes: frozenset[Coding] = frozenset()  # resource type, category codings, profiles
    codes: frozenset[Coding] = frozenset()
    labels: frozenset[Coding] = frozenset()  # meta.security
    date: tuple[str, str] | None = None  # the clinical date as [low, high] instants; None: unknown
    references: frozenset[str] = frozenset()  # every "Type/id" it references
    authors: frozenset[str] = frozenset()  # author, recorder, performer, requester, asserter ...


@dataclass(frozen=True)
class Decision:
    """An explained decision for one ask (and one resource, when given)."""

    permit: bool
    basis: tuple[Basis, ...]  # the provisions that decided (or could, when the decision depends on the resource)
    policy: str | None  # the implicit policy when it decided
    why: str
    depends: bool = False  # no resource given and the answer depends on it (permit is then False: fail closed)


@dataclass(frozen=True)
class Problem:
    """Why a Consent's decision cannot be derived: the element (FHIRPath) and what is wrong with it."""

    expression: str
    message: str
