"""The write check that keeps Consents the engine cannot evaluate out of the store (422 naming the element).

Only active patient-privacy Consents are decided on (C3), so only they are checked: a draft may be
incomplete until it is made active. https://hl7.org/fhir/R4B/consent.html
"""

from __future__ import annotations

from typing import Any

from consent.engine.match import SCOPE
from consent.engine.model import parse
from resources.errors import Issue, Unprocessable


def refuse_unevaluable(resource_type: str, resource: dict[str, Any]) -> None:
    """Raise 422 (processing) with one issue per problem when an active privacy Consent cannot be evaluated."""
    if resource_type != "Consent" or resource.get("status") != "active":
        return
    scope = resource.get("scope")
    codings = scope.get("coding") if isinstance(scope, dict) else None
    if not any(isinstance(c, dict) and (c.get("system"), c.get("code")) == SCOPE for c in codings or []):
        return
    found = parse(resource).problems
    if found:
        issues = tuple(Issue("processing", f"This Consent's decision cannot be derived: {p.message}",
                             expression=(p.expression,)) for p in found)
        raise Unprocessable(issues[0].diagnostics, issues=issues)
