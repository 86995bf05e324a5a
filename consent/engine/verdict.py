"""The verdict for one ask: which of the patient's resources may be seen or used, as an expression (C3-C9).

Per consent: eval(root) if the root matches, where eval(p) combines the matching children (a deny among them
wins) or, when none match, is p's own type (C5). Across consents: deny-overrides, or most-recent by
dateTime then meta.lastUpdated (C6); where no consent applies the implicit policy decides (C7); R and V
labels need a permit naming them (C8); break-glass overrides denies but explicit BTG ones (C9).
https://hl7.org/fhir/R4B/consent.html
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from itertools import groupby
from typing import Any

from consent.engine.expr import FALSE, TRUE, Cond, Expr, all_of, any_of, const, negate
from consent.engine.match import (
    Lineage,
    condition,
    describe,
    epoch_ms,
    from_ms,
    governs,
    implicit,
    leaf,
    parsed_candidates,
    static_match,
)
from consent.engine.model import ParsedConsent, Provision, parse
from consent.engine.terms import Ask, Basis, ConsentPolicy, Verdict
from resources.search.dates import MAX_MS


def usable(consent: ParsedConsent) -> ParsedConsent:
    """A consent whose decision cannot be derived counts as a deny of everything (fail closed)."""
    if not consent.problems:
        return consent
    root = Provision("provision", "deny", None, frozenset(), frozenset(), False, None, None, None, None, None,
                     None, None, ())
    return replace(consent, root=root)


def _outcome(p: Provision, line: Lineage, ask: Ask, policy: ConsentPolicy) -> tuple[Expr, Expr]:
    """(permit, deny) of eval(p), given that p matches; both false: it counts for nothing."""
    line = line.down(p, ask, policy)
    matches, denies, permits = [], [], []
    for child in p.children:
        if not static_match(child, ask):
            continue
        match = condition(child)
        permit, deny = _outcome(child, line, ask, policy)
        matches.append(match)
        denies.append(all_of(match, deny))
        permits.append(all_of(match, permit))
    any_match, child_deny = any_of(*matches), any_of(*denies)
    own = leaf(p, line, ask, policy)
    permit = any_of(all_of(negate(any_match), const(own == "permit")),
                    all_of(any_match, negate(child_deny), any_of(*permits)))
    deny = any_of(all_of(negate(any_match), const(own == "deny")), child_deny)
    return permit, deny


def consent_outcome(consent: ParsedConsent, ask: Ask, policy: ConsentPolicy) -> tuple[Expr, Expr]:
    """(permit, deny) of one candidate consent for every resource."""
    root = usable(consent).root
    if not static_match(root, ask):
        return FALSE, FALSE
    match = condition(root)
    permit, deny = _outcome(root, Lineage(), ask, policy)
    return all_of(match, permit), all_of(match, deny)


def groups(consents: Sequence[ParsedConsent], policy: ConsentPolicy) -> list[list[ParsedConsent]]:
    """Consents combined together: all at once (deny-overrides), or newest first, equal times together."""
    if policy.combining == "deny-overrides":
        return [list(consents)] if consents else []
    ordered = sorted(consents, key=lambda c: c.order, reverse=True)
    return [list(group) for _, group in groupby(ordered, key=lambda c: c.order)]


def _walk(p: Provision, ask: Ask) -> Iterator[Provision]:
    """Every provision whose own and ancestors' ask-dependent elements match."""
    if static_match(p, ask):
        yield p
        for child in p.children:
            yield from _walk(child, ask)


def basis_of(consent: ParsedConsent, ask: Ask) -> list[Basis]:
    """The provisions of a consent that can take part in a decision for this ask."""
    if consent.problems:
        why = "; ".join(f"{p.expression}: {p.message}" for p in consent.problems)
        return [Basis(consent.reference, "provision", "deny", f"cannot be evaluated, so it denies everything ({why})")]
    return [Basis(consent.reference, p.path, p.type, describe(p)) for p in _walk(consent.root, ask)]


def _label_permits(consents: Sequence[ParsedConsent], ask: Ask, policy: ConsentPolicy) -> list[Expr]:
    """C8: per sensitive label, resources carrying it are seen only where a matching permit names it."""
    found: list[Expr] = []
    for label in sorted(policy.sensitive):
        allowed: list[Expr] = []
        for consent in consents:
            if not consent.problems:
                allowed.extend(_naming(consent.root, label, Lineage(), TRUE, ask, policy))
        found.append(any_of(negate(Cond("securityLabel", (label,))), *allowed))
    return found


def _naming(p: Provision, label: tuple[str, str], line: Lineage, above: Expr, ask: Ask,
            policy: ConsentPolicy) -> Iterator[Expr]:
    if not static_match(p, ask):
        return
    line = line.down(p, ask, policy)
    here = all_of(above, condition(p))
    if p.type == "permit" and label in (p.labels or ()) and leaf(p, line, ask, policy) == "permit":
        yield here
    for child in p.children:
        yield from _naming(child, label, line, here, ask, policy)


def valid_until(consents: Sequence[dict[str, Any]], ask: Ask, policy: ConsentPolicy) -> datetime | None:
    """The next instant a period of one of the patient's consents begins or ends."""
    now = epoch_ms(ask.now)
    bounds: list[int] = []

    def visit(p: Provision) -> None:
        if p.period is not None and p.period[0] <= p.period[1]:
            bounds.extend(b for b in (p.period[0], p.period[1] + 1) if now < b <= MAX_MS)  # open ends: none
        for child in p.children:
            visit(child)

    for consent in consents:
        if governs(consent, ask.patient, policy):
            visit(parse(consent).root)
    return from_ms(min(bounds)) if bounds else None


def verdict(consents: Sequence[dict[str, Any]], ask: Ask, policy: ConsentPolicy) -> Verdict:
    """C2-C9 for one patient and one ask: True where a resource may be seen or used."""
    if ask.actor.kind == "self":  # C2: the patient (or their representative) is the grantor
        return Verdict(TRUE, (), (), None, None)
    found = parsed_candidates(consents, ask, policy)
    outcomes = {id(c): consent_outcome(c, ask, policy) for c in found}  # by object: one Consent may come twice
    permitted, name, _ = implicit(ask, policy)
    result: Expr = const(permitted)
    for group in reversed(groups(found, policy)):
        deny = any_of(*(outcomes[id(c)][1] for c in group))
        permit = all_of(negate(deny), any_of(*(outcomes[id(c)][0] for c in group)))
        result = any_of(permit, all_of(negate(deny), result))
    if not ask.break_glass and ask.action != "collect":
        result = all_of(result, *_label_permits(found, ask, policy))
    unapplied = all_of(*(negate(any_of(*outcomes[id(c)])) for c in found))
    basis = tuple(b for c in found for b in basis_of(c, ask))
    return Verdict(result, basis, tuple(c.reference for c in found), None if unapplied == FALSE else name,
                   valid_until(consents, ask, policy))
