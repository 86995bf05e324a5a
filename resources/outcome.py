"""OperationOutcome builders.

https://hl7.org/fhir/R4B/operationoutcome.html
"""

from __future__ import annotations

from typing import Any

from resources.errors import FhirError, Issue


def issue_json(issue: Issue) -> dict[str, Any]:
    """One OperationOutcome.issue as FHIR JSON."""
    out: dict[str, Any] = {"severity": issue.severity, "code": issue.code, "diagnostics": issue.diagnostics}
    if issue.expression:
        out["expression"] = list(issue.expression)
    return out


def outcome(*issues: Issue) -> dict[str, Any]:
    """An OperationOutcome resource from issues."""
    return {"resourceType": "OperationOutcome", "issue": [issue_json(i) for i in issues]}


def from_error(error: FhirError) -> dict[str, Any]:
    """The OperationOutcome a FhirError carries."""
    return outcome(*error.issues)


def information(diagnostics: str, code: str = "informational") -> dict[str, Any]:
    """An informational OperationOutcome (used for success answers with Prefer: return=OperationOutcome)."""
    return outcome(Issue(code, diagnostics, severity="information"))
