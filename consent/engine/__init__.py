"""The consent decision engine: pure functions from a patient's Consents and one ask to a verdict or decision.

No I/O, no store, no clock: `Ask.now` is an input. Semantics: SECURITY.md §3.6 (C1-C12).
https://hl7.org/fhir/R4B/consent.html
"""

from consent.engine.decide import decide
from consent.engine.expr import FALSE, TRUE, And, Cond, Const, Expr, Not, Or, holds
from consent.engine.match import candidates
from consent.engine.model import problems
from consent.engine.terms import (
    BTG,
    PURPOSE,
    Actor,
    Ask,
    Basis,
    Coding,
    ConsentPolicy,
    Decision,
    Facts,
    Problem,
    Verdict,
)
from consent.engine.verdict import verdict

__all__ = [
    "BTG",
    "FALSE",
    "PURPOSE",
    "TRUE",
    "Actor",
    "And",
    "Ask",
    "Basis",
    "Coding",
    "Cond",
    "Const",
    "ConsentPolicy",
    "Decision",
    "Expr",
    "Facts",
    "Not",
    "Or",
    "Problem",
    "Verdict",
    "candidates",
    "decide",
    "holds",
    "problems",
    "verdict",
]
