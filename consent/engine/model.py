"""A stored Consent read once into a provision tree the engine evaluates, with every reason it cannot be.

The root provision's type is the base decision (IHE PCF), else `policyRule` decides it (OPTIN/OPTINR permit,
OPTOUT/OPTOUTE deny); nested provisions must say their type. https://hl7.org/fhir/R4B/consent.html
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from consent.engine.expr import Coding, instant_range
from consent.engine.terms import ACTION, ACTIONS, Problem
from resources.search.dates import MAX_MS, MIN_MS

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
POLICY_RULES = {"OPTIN": "permit", "OPTINR": "permit", "OPTOUT": "deny", "OPTOUTE": "deny"}
MEANINGS = frozenset({"instance", "related", "authoredby"})
TYPES = frozenset({"permit", "deny"})


@dataclass(frozen=True)
class Provision:
    """One provision (rule) of a Consent; an element that is absent is None and matches anything."""

    path: str
    type: str  # permit | deny (the root's is the consent's base decision)
    period: tuple[int, int] | None
    actor_refs: frozenset[str]
    actor_ids: frozenset[Coding]
    has_actor: bool
    actions: frozenset[str] | None
    purposes: frozenset[Coding] | None
    classes: tuple[Coding, ...] | None
    codes: tuple[Coding, ...] | None
    labels: tuple[Coding, ...] | None
    data_period: tuple[str | None, str | None] | None
    data: tuple[tuple[str, str], ...] | None  # (meaning, "Type/id")
    children: tuple[Provision, ...]


@dataclass(frozen=True)
class ParsedConsent:
    """A Consent as the engine sees it."""

    reference: str  # "Consent/1/_history/2"
    root: Provision
    order: tuple[int, int]  # (dateTime, meta.lastUpdated) as epoch ms: most-recent combining
    problems: tuple[Problem, ...]


def reference_of(consent: dict[str, Any]) -> str:
    """The versioned reference of a stored Consent."""
    version = (consent.get("meta") or {}).get("versionId")
    base = f"Consent/{consent.get('id')}"
    return f"{base}/_history/{version}" if version else base


def ref_key(value: Any) -> str | None:
    """"Type/id" of a Reference (absolute, relative or versioned), None when it names no resource."""
    ref = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(ref, str):
        return None
    parts = ref.split("/")
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    return f"{parts[-2]}/{parts[-1]}" if len(parts) >= 2 and parts[-1] and parts[-2] else None


def _instant(text: Any, low: bool) -> int | None:
    found = instant_range(text) if isinstance(text, str) else None
    return None if found is None else found[0 if low else 1]


class _Reader:
    """Reads one Consent, collecting problems as it goes."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, expression: str, message: str) -> None:
        self.problems.append(Problem(expression, message))

    def codings(self, values: Any, where: str, name: str) -> tuple[Coding, ...] | None:
        if values is None:
            return None
        out: list[Coding] = []
        for i, coding in enumerate(values if isinstance(values, list) else [values]):
            system = coding.get("system") if isinstance(coding, dict) else None
            code = coding.get("code") if isinstance(coding, dict) else None
            if not isinstance(system, str) or not isinstance(code, str) or not system or not code:
                self.problem(f"{where}.{name}[{i}]", f"A {name} coding needs both system and code, or it can "
                                                     f"never match a resource or a request")
                continue
            out.append((system, code))
        return tuple(sorted(set(out)))

    def concepts(self, values: Any, where: str, name: str) -> tuple[Coding, ...] | None:
        if values is None:
            return None
        out: set[Coding] = set()
        for i, concept in enumerate(values if isinstance(values, list) else [values]):
            codings = concept.get("coding") if isinstance(concept, dict) else None
            if not codings:
                self.problem(f"{where}.{name}[{i}]", f"A {name} needs at least one coding (text alone cannot match)")
                continue
            out.update(self.codings(codings, f"{where}.{name}[{i}]", "coding") or ())
        return tuple(sorted(out))

    def period(self, value: Any, where: str) -> tuple[int, int] | None:
        if value is None:
            return None
        start, end = value.get("start"), value.get("end")
        low, high = _instant(start, True), _instant(end, False)
        if (start is not None and low is None) or (end is not None and high is None):
            self.problem(where, "A period needs valid FHIR dateTime values")
            return (MAX_MS, MIN_MS)  # never contains anything: the consent is refused or treated as a deny
        if low is not None and high is not None and low > high:
            self.problem(where, "A period's start is after its end")
        return MIN_MS if low is None else low, MAX_MS if high is None else high

    def actors(self, values: Any, where: str) -> tuple[frozenset[str], frozenset[Coding]]:
        refs: set[str] = set()
        ids: set[Coding] = set()
        for i, actor in enumerate(values or []):
            ref = actor.get("reference") if isinstance(actor, dict) else None
            key = ref_key(ref)
            ident = ref.get("identifier") if isinstance(ref, dict) else None
            if key is not None:
                refs.add(key)
            if isinstance(ident, dict) and isinstance(ident.get("system"), str) and isinstance(ident.get("value"), str):
                ids.add((ident["system"], ident["value"]))
            elif key is None:
                self.problem(f"{where}.actor[{i}].reference", "An actor needs a reference to a resource or an "
                                                              "identifier with system and value")
        return frozenset(refs), frozenset(ids)

    def actions(self, values: Any, where: str, kind: str) -> frozenset[str] | None:
        if values is None:
            return None
        found = self.concepts(values, where, "action") or ()
        for system, code in found:
            if system == ACTION and code not in ACTIONS:
                self.problem(f"{where}.action", f"Action {code} is not a code of {ACTION}: use "
                                                 f"{', '.join(sorted(ACTIONS))}")
        known = frozenset(code for system, code in found if system == ACTION)
        # the binding is an example one, so other systems are valid FHIR; the engine cannot tell which asks
        # they mean and fails closed: with no code it knows, a deny matches every action and a permit none
        return None if not known and kind == "deny" else known

    def data(self, values: Any, where: str) -> tuple[tuple[str, str], ...] | None:
        if values is None:
            return None
        out: list[tuple[str, str]] = []
        for i, entry in enumerate(values):
            meaning = entry.get("meaning") if isinstance(entry, dict) else None
            key = ref_key(entry.get("reference")) if isinstance(entry, dict) else None
            if meaning not in MEANINGS:
                self.problem(f"{where}.data[{i}].meaning", f"data.meaning '{meaning}' is not supported: use "
                                                          f"{', '.join(sorted(MEANINGS))}")
            elif key is None:
                self.problem(f"{where}.data[{i}].reference", "data needs a reference to a resource (Type/id)")
            else:
                out.append((str(meaning), key))
        return tuple(out)

    def data_period(self, value: Any, where: str) -> tuple[str | None, str | None] | None:
        if value is None:
            return None
        self.period(value, f"{where}.dataPeriod")
        start, end = value.get("start"), value.get("end")
        return (start if isinstance(start, str) else None, end if isinstance(end, str) else None)

    def provision(self, raw: Any, where: str, path: str, base: str | None) -> Provision:
        raw = raw if isinstance(raw, dict) else {}
        declared = raw.get("type")
        if declared is not None and declared not in TYPES:
            self.problem(f"{where}.type", f"provision.type must be permit or deny, not '{declared}'")
        elif declared is None and base is None:
            self.problem(f"{where}.type", "A nested provision must say whether it permits or denies (type)")
        kind = declared if declared in TYPES else (base or "deny")
        refs, ids = self.actors(raw.get("actor"), where)
        children = tuple(self.provision(child, f"{where}.provision[{i}]", f"{path}.provision[{i}]", None)
                         for i, child in enumerate(raw.get("provision") or []))
        purposes = self.codings(raw.get("purpose"), where, "purpose")
        return Provision(
            path, str(kind), self.period(raw.get("period"), f"{where}.period"), refs, ids, bool(raw.get("actor")),
            self.actions(raw.get("action"), where, str(kind)), None if purposes is None else frozenset(purposes),
            self.codings(raw.get("class"), where, "class"), self.concepts(raw.get("code"), where, "code"),
            self.codings(raw.get("securityLabel"), where, "securityLabel"),
            self.data_period(raw.get("dataPeriod"), where), self.data(raw.get("data"), where), children)


def base_decision(consent: dict[str, Any]) -> str | None:
    """The root decision: root provision.type (PCF), else the policyRule's (OPTIN/OPTINR permit, OPTOUT/E deny)."""
    root = consent.get("provision")
    if isinstance(root, dict) and root.get("type") in TYPES:
        return str(root["type"])
    rule = consent.get("policyRule")
    for coding in (rule.get("coding") or []) if isinstance(rule, dict) else []:
        if isinstance(coding, dict) and coding.get("system") == ACT_CODE and coding.get("code") in POLICY_RULES:
            return POLICY_RULES[coding["code"]]
    return None


def parse(consent: dict[str, Any]) -> ParsedConsent:
    """The provision tree of a Consent and the problems that keep its decision from being derived."""
    try:
        blob = orjson.dumps(consent, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON (a test's hand-made value): read it without the cache
        return _parse(consent)
    return _parse_blob(blob)


# Every decision for a patient reads the same few Consents; reading one costs far more than serialising it,
# so the trees are kept by content (bounded: 4096 Consents)
@lru_cache(maxsize=4096)
def _parse_blob(blob: bytes) -> ParsedConsent:
    return _parse(orjson.loads(blob))


def _parse(consent: dict[str, Any]) -> ParsedConsent:
    reader = _Reader()
    base = base_decision(consent)
    if base is None:
        reader.problem("Consent.provision.type", "The consent's base decision cannot be derived: give "
                       "provision.type (permit or deny) or a policyRule of OPTIN, OPTINR, OPTOUT or OPTOUTE "
                       f"({ACT_CODE})")
    root = reader.provision(consent.get("provision"), "Consent.provision", "provision", base or "deny")
    meta = consent.get("meta") or {}
    order = (_instant(consent.get("dateTime"), True) or MIN_MS, _instant(meta.get("lastUpdated"), True) or MIN_MS)
    return ParsedConsent(reference_of(consent), root, order, tuple(reader.problems))


def problems(consent: dict[str, Any]) -> list[Problem]:
    """Why this Consent's decision cannot be derived (empty when it can)."""
    return list(parse(consent).problems)
