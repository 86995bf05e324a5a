"""The explained decision for one ask and one resource, evaluated directly on the resource's facts.

It follows the same semantics as the verdict's expression by a separate path (a property test holds the two
to the same answers) and says which consents, provisions and policy decided, and why.
https://hl7.org/fhir/R4B/consent.html
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consent.engine.expr import Const, holds
from consent.engine.match import (
    Lineage,
    condition,
    describe,
    implicit,
    leaf,
    parsed_candidates,
    static_match,
)
from consent.engine.model import ParsedConsent, Provision
from consent.engine.terms import CONFIDENTIALITY, Ask, Basis, ConsentPolicy, Decision, Facts
from consent.engine.verdict import basis_of, groups, usable, verdict

_PAST = {"permit": "permitted", "deny": "denied"}
Outcome = tuple[str, tuple[Provision, ...]]  # (permit | deny | none, the provisions that decided)


def _evaluate(p: Provision, line: Lineage, ask: Ask, policy: ConsentPolicy, facts: Facts) -> Outcome:
    line = line.down(p, ask, policy)
    found = [_evaluate(child, line, ask, policy, facts) for child in p.children
             if static_match(child, ask) and holds(condition(child), facts)]
    if not found:
        own = leaf(p, line, ask, policy)
        return own, (p,) if own != "none" else ()
    for kind in ("deny", "permit"):
        deciding = tuple(q for result, provisions in found if result == kind for q in provisions)
        if deciding:
            return kind, deciding
    return "none", ()


def _consent(consent: ParsedConsent, ask: Ask, policy: ConsentPolicy, facts: Facts) -> Outcome:
    root = usable(consent).root
    if not static_match(root, ask) or not holds(condition(root), facts):
        return "none", ()
    return _evaluate(root, Lineage(), ask, policy, facts)


def _label_allowed(consents: Sequence[ParsedConsent], label: tuple[str, str], ask: Ask, policy: ConsentPolicy,
                   facts: Facts) -> bool:
    def visit(p: Provision, line: Lineage) -> bool:
        if not static_match(p, ask) or not holds(condition(p), facts):
            return False
        line = line.down(p, ask, policy)
        if p.type == "permit" and label in (p.labels or ()) and leaf(p, line, ask, policy) == "permit":
            return True
        return any(visit(child, line) for child in p.children)

    return any(visit(c.root, Lineage()) for c in consents if not c.problems)


def _bases(consent: ParsedConsent, provisions: Sequence[Provision], ask: Ask) -> tuple[Basis, ...]:
    if consent.problems:
        return tuple(basis_of(consent, ask))
    return tuple(Basis(consent.reference, p.path, p.type, describe(p)) for p in provisions)


def _label_name(label: tuple[str, str]) -> str:
    return label[1] if label[0] == CONFIDENTIALITY else f"{label[0]}|{label[1]}"


def _on_resource(found: list[ParsedConsent], ask: Ask, policy: ConsentPolicy, facts: Facts) -> Decision:
    for group in groups(found, policy):
        results = [(c, _consent(c, ask, policy, facts)) for c in group]
        for kind in ("deny", "permit"):
            deciding = [(c, provisions) for c, (result, provisions) in results if result == kind]
            if deciding:
                basis = tuple(b for c, provisions in deciding for b in _bases(c, provisions, ask))
                where = ", ".join(f"{b.consent} {b.path} ({b.why})" for b in basis)
                glass = " by break-glass over their denies" if ask.break_glass and kind == "permit" and any(
                    b.type == "deny" for b in basis) else ""
                return Decision(kind == "permit", basis, None, f"{_PAST[kind]}{glass} by {where}")
    permitted, name, why = implicit(ask, policy)
    verb = "permits" if permitted else "denies"
    return Decision(permitted, (), name, f"no consent applies: the implicit policy {name} {verb} ({why})")


def decide(consents: Sequence[dict[str, Any]], ask: Ask, policy: ConsentPolicy, facts: Facts | None) -> Decision:
    """The decision with its basis and reason; facts None: the decision that does not depend on the resource."""
    if ask.actor.kind == "self":
        return Decision(True, (), None, "the patient's own access is exempt from consent (right of access)")
    if facts is None:
        found = verdict(consents, ask, policy)
        if isinstance(found.expr, Const):
            sure = "permitted" if found.expr.value else "denied"
            return Decision(found.expr.value, found.basis, found.policy, f"{sure} whatever the resource, "
                            f"by {', '.join(found.consents) or 'no consent'} and "
                            f"{'the implicit policy ' + found.policy if found.policy else 'no implicit policy'}")
        return Decision(False, found.basis, found.policy, "depends on the resource: its class, code, security "
                        "labels, date or links decide (listed in basis); give a resource for the answer", True)
    candidates = parsed_candidates(consents, ask, policy)
    decision = _on_resource(candidates, ask, policy, facts)
    if not decision.permit or ask.break_glass or ask.action == "collect":
        return decision
    for label in sorted(policy.sensitive & facts.labels):
        if not _label_allowed(candidates, label, ask, policy, facts):
            return Decision(False, decision.basis, decision.policy, f"denied: the resource is labelled "
                            f"{_label_name(label)} and no matching permit provision names that label")
    return decision
