"""The consent decisions a request made, kept for the audit trail (AuthZ-Consent events, SECURITY.md §4).

The enforcement records one entry per (patient, outcome) it decided while serving the request; the audit
recorder reads them when the request ends. https://profiles.ihe.net/ITI/BALP/StructureDefinition-IHE.BasicAudit.PatientRead.html
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class DecisionRecord:
    """One consent decision: for which patient, permit or deny, on what basis."""

    patient: str  # the Patient id whose Consents (or implicit policy) decided
    permit: bool
    consents: tuple[str, ...]  # versioned references of the Consents that decided ("Consent/1/_history/2")
    policy: str | None  # the implicit policy that decided when no Consent applied (e.g. "basic-normal")
    reason: str  # one sentence a compliance officer can read
    break_glass: bool = False  # the decision was a break-glass override of a deny


DECISIONS: ContextVar[list[DecisionRecord] | None] = ContextVar("careloop_consent_decisions", default=None)


def note(record: DecisionRecord) -> None:
    """Keep a decision for the request's audit (ignored outside a request that collects them)."""
    found = DECISIONS.get()
    if found is not None and record not in found:
        found.append(record)
