"""Provision matching (C4), candidate consents (C3) and the implicit policies (C7), shared by both evaluators.

The resource-independent elements (actor, action, purpose, period) are decided here from the ask; the
resource-dependent ones (class, code, securityLabel, dataPeriod, data) become conditions (consent.engine.expr).
https://hl7.org/fhir/R4B/consent.html#provision
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from consent.engine.expr import Coding, Cond, Expr, all_of, any_of, instant_range
from consent.engine.model import ParsedConsent, Provision, parse, ref_key
from consent.engine.terms import BTG, RESOURCE_TYPES, Ask, ConsentPolicy

SCOPE = ("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy")
_READ_ACTIONS = frozenset({"access", "disclose"})  # a read-type ask ("access") matches either (C4)


def epoch_ms(moment: datetime) -> int:
    """An aware datetime as epoch milliseconds."""
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def effective_purposes(ask: Ask) -> frozenset[Coding]:
    """The purposes an ask may match with: BTG only when break-glass was granted to an entitled caller (C9)."""
    return (ask.purposes - {BTG}) | ({BTG} if ask.break_glass else frozenset())


def _codes(concept: Any) -> set[Coding]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return {(str(c.get("system")), str(c.get("code"))) for c in codings or [] if isinstance(c, dict)}


def _period_contains(period: Any, now: int) -> bool:
    if not isinstance(period, dict):
        return True
    start, end = period.get("start"), period.get("end")
    low = instant_range(start) if isinstance(start, str) else None
    high = instant_range(end) if isinstance(end, str) else None
    if (start is not None and low is None) or (end is not None and high is None):
        return True  # malformed: kept, so the unevaluable consent counts as a deny rather than vanishing
    return (low is None or low[0] <= now) and (high is None or now <= high[1])


def governs(consent: dict[str, Any], patient: str, policy: ConsentPolicy) -> bool:
    """C3 without the time: this patient's, active, privacy scope, a configured category."""
    if consent.get("resourceType", "Consent") != "Consent" or consent.get("status") != "active":
        return False
    if ref_key(consent.get("patient")) != f"Patient/{patient}" or SCOPE not in _codes(consent.get("scope")):
        return False
    if policy.categories:
        found = set().union(*(_codes(c) for c in consent.get("category") or []))
        return not policy.categories.isdisjoint(found)
    return True


def candidates(consents: Sequence[dict[str, Any]], patient: str, now: datetime,
               policy: ConsentPolicy) -> list[dict[str, Any]]:
    """C3: the consents that can decide for this patient now (root provision.period contains now; absent = open)."""
    moment = epoch_ms(now)
    return [c for c in consents if governs(c, patient, policy)
            and _period_contains((c.get("provision") or {}).get("period"), moment)]


def parsed_candidates(consents: Sequence[dict[str, Any]], ask: Ask, policy: ConsentPolicy) -> list[ParsedConsent]:
    """The candidate consents, read."""
    return [parse(c) for c in candidates(consents, ask.patient, ask.now, policy)]


def static_match(p: Provision, ask: Ask) -> bool:
    """C4 for what the ask alone decides: actor, action, purpose and period."""
    actor = ask.actor
    if p.has_actor and p.actor_refs.isdisjoint(actor.references) and p.actor_ids.isdisjoint(actor.identifiers):
        return False
    if p.actions is not None and ask.action not in p.actions and not (
            ask.action == "access" and not p.actions.isdisjoint(_READ_ACTIONS)):
        return False
    if p.purposes is not None and p.purposes.isdisjoint(effective_purposes(ask)):
        return False
    if p.period is not None:
        now = epoch_ms(ask.now)
        return p.period[0] <= now <= p.period[1]
    return True


def condition(p: Provision) -> Expr:
    """C4 for what the resource decides: class, code, securityLabel, dataPeriod and data (any value within one)."""
    parts: list[Expr] = []
    for element, codings in (("class", p.classes), ("code", p.codes), ("securityLabel", p.labels)):
        if codings is not None:
            parts.append(Cond(element, codings))
    if p.data_period is not None:
        deny = p.type == "deny"  # fail closed: an undated or straddling resource is denied, never permitted
        parts.append(Cond("dataPeriod", start=p.data_period[0], end=p.data_period[1], unknown=deny, overlap=deny))
    if p.data is not None:
        parts.append(any_of(*(Cond(meaning, references=(ref,)) for meaning, ref in p.data)))
    return all_of(*parts)


@dataclass(frozen=True)
class Lineage:
    """What a provision's ancestors (and itself) say that changes what its permit or deny counts for."""

    named: bool = False  # an actor element: a permit for a third party must name it (issue item 5)
    opt_in: bool = False  # a purpose element naming an opt-in purpose the ask carries (marketing)
    btg: bool = False  # a purpose element naming BTG: a deny here holds against break-glass (C9)

    def down(self, p: Provision, ask: Ask, policy: ConsentPolicy) -> Lineage:
        purposes = p.purposes or frozenset()
        return Lineage(self.named or p.has_actor,
                       self.opt_in or not purposes.isdisjoint(effective_purposes(ask) & policy.opt_in_purposes),
                       self.btg or BTG in purposes)


def leaf(p: Provision, line: Lineage, ask: Ask, policy: ConsentPolicy) -> str:
    """What a matching provision with no matching child decides: permit, deny, or none (counts for nothing)."""
    kind = p.type
    if kind == "deny":
        if not ask.break_glass or line.btg:
            return "deny"
        kind = "permit"  # break-glass overrides every deny but one that names purpose BTG (C9)
    if ask.actor.third_party and not line.named:
        return "none"
    if not line.opt_in and not effective_purposes(ask).isdisjoint(policy.opt_in_purposes):
        return "none"
    return "permit"


def implicit(ask: Ask, policy: ConsentPolicy) -> tuple[bool, str, str]:
    """C7: (permit, policy name, why) when no consent applies."""
    purposes = effective_purposes(ask)
    kind = ask.actor.kind
    care = kind in ("clinician", "clinic-system") and not purposes.isdisjoint(policy.treatment)
    if ask.action == "collect":
        name = policy.collection
        if ask.actor.third_party:
            return False, name, "a third party collects only under a consent that names it"
        if name == "consent-required":
            return False, name, "every collection needs a consent that permits it"
        return (care, name, "a clinician or clinic system collecting for treatment needs no consent" if care
                else "collection by anyone but a clinician or clinic system for treatment needs a consent")
    name = policy.implicit
    if ask.actor.third_party:
        return False, name, "a third party is permitted only by a consent that names it"
    if not purposes.isdisjoint(policy.opt_in_purposes):
        return False, name, "an opt-in purpose (such as marketing) needs a consent that permits it"
    if ask.break_glass:
        return True, name, "break-glass by an entitled caller"
    if name == "all-normal":
        return True, name, "everything is permitted unless a consent denies it (opt-out)"
    if name == "deny":
        return False, name, "nothing is permitted unless a consent permits it (opt-in)"
    if name == "break-glass-only":
        return False, name, "only break-glass is permitted without a consent"
    return (care, name, "a clinician or clinic system asking for treatment" if care
            else "only clinicians and clinic systems asking for treatment are permitted without a consent")


def _codings_text(codings: Any) -> str:
    return ", ".join(code if system in (RESOURCE_TYPES,) or "v3-" in system else f"{system}|{code}"
                     for system, code in sorted(codings))


def describe(p: Provision) -> str:
    """One sentence naming what the provision matches on."""
    parts = []
    if p.has_actor:
        parts.append("actor " + ", ".join(sorted(p.actor_refs) + [f"{s}|{v}" for s, v in sorted(p.actor_ids)]))
    if p.actions is not None:
        parts.append("action " + ", ".join(sorted(p.actions)))
    if p.purposes is not None:
        parts.append("purpose " + _codings_text(p.purposes))
    if p.period is not None:
        parts.append("its period")
    for name, codings in (("class", p.classes), ("code", p.codes), ("security label", p.labels)):
        if codings is not None:
            parts.append(f"{name} {_codings_text(codings)}")
    if p.data_period is not None:
        parts.append(f"data dated {p.data_period[0] or '…'} to {p.data_period[1] or '…'}")
    if p.data is not None:
        parts.append("data " + ", ".join(f"{meaning} {ref}" for meaning, ref in p.data))
    return f"{p.type} for " + ("; ".join(parts) if parts else "every request and resource")
