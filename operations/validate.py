"""$validate: would this resource be accepted? Every issue a write would raise, and a profile's cardinality and
fixed/pattern values, listed in one OperationOutcome (200 even when invalid); nothing is stored.

https://hl7.org/fhir/R4B/resource-operation-validate.html
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from operations.context import OperationCall
from resources import profile_check
from resources.errors import FhirError, Invalid, Issue
from resources.guard import current_guard
from resources.models import resource_types
from resources.outcome import issue_json
from resources.repository import Repository
from resources.search.parse import parse_search

CORE = "http://hl7.org/fhir/StructureDefinition/"
MODES = ("create", "update", "delete")


def _caught(issues: list[Issue], error: FhirError) -> None:
    issues.extend(error.issues)


async def _write_issues(repository: Repository, resource_type: str, body: dict[str, Any], mode: str) -> list[Issue]:
    """What the write path would refuse: shape, model, references, then the write hooks and the access checks."""
    issues: list[Issue] = []
    try:
        await repository.validate(body, resource_type)
    except FhirError as exc:
        _caught(issues, exc)
        if exc.status == 400:
            # a write stops at the shape problems; the model's own findings are listed too, each element once
            named = {i.expression for i in issues}
            model = (await repository.models.issues_many([(resource_type, body)]))[0]
            issues.extend(i for i in model if i.expression not in named)
            return issues  # the rules after the model check expect a well-formed resource
    resource = copy.deepcopy(body)  # hooks may complete a resource in place: the caller's copy stays as sent
    for hook in repository.write_hooks:
        try:
            hook(resource_type, resource)
        except FhirError as exc:
            _caught(issues, exc)
    guard = current_guard()
    if guard is not None:
        letter = "c" if mode == "create" else "u"
        try:
            guard.require(resource_type, letter)
            if not guard.visible(resource_type, resource, letter):
                issues.append(Issue("forbidden", f"The access token does not allow writing this {resource_type}: it "
                                    "would fall outside the patient context or the granted filters"))
            else:
                guard.admit(resource_type, resource, repository.indexer.extract(resource_type, resource).compartments)
        except FhirError as exc:
            _caught(issues, exc)
    return issues


async def _profile(repository: Repository, url: str, resource_type: str) -> dict[str, Any] | None:
    """The stored StructureDefinition of a canonical URL (None for the core profile of the type itself)."""
    if url == f"{CORE}{resource_type}":
        return None  # the core profile is what the model check already checks
    query = parse_search("StructureDefinition", [("url", url)], repository.registry, repository.search_limits).query
    page = await repository.search(query)
    if not page.resources:
        raise Invalid(f"No StructureDefinition with url '{url}' is stored here; store it first, or name the core "
                      f"profile {CORE}{resource_type}", code="not-found", expression=("profile",))
    found: dict[str, Any] = orjson.loads(page.resources[0].body or b"{}")
    if found.get("type") != resource_type:
        raise Invalid(f"Profile '{url}' constrains {found.get('type')}, not {resource_type}", code="invalid",
                      expression=("profile",))
    return found


def _profile_issues(resource: dict[str, Any], definition: dict[str, Any], url: str) -> list[Issue]:
    snapshot = (definition.get("snapshot") or {}).get("element")
    if isinstance(snapshot, list):
        return profile_check.check(resource, snapshot, url)
    differential = (definition.get("differential") or {}).get("element") or []
    note = Issue("informational", f"{url} has no snapshot: its differential was checked, the elements it does not "
                 "constrain were checked against the base definition", severity="warning")
    return [note, *profile_check.check(resource, differential, url)]


async def run(call: OperationCall) -> dict[str, Any]:
    """An OperationOutcome with every issue found (information only when there is none)."""
    given = call.input
    repository = call.context.repository
    resource_type = call.resource_type or ""
    mode = given.text("mode") or ("update" if call.id else "create")
    if mode not in MODES:
        raise Invalid(f"mode must be create, update or delete, not '{mode}'", code="value", expression=("mode",))
    if mode == "delete":
        if call.id is None:
            raise Invalid("mode delete validates deleting one resource: call it on the instance", code="value",
                          expression=("mode",))
        await call.target()  # 404 like a read for what is absent or hidden
        guard = current_guard()
        issues: list[Issue] = []
        if guard is not None:
            try:
                guard.require(resource_type, "d")
            except FhirError as exc:
                _caught(issues, exc)
        return _outcome(issues)
    part = next((p for p in given.parts if p["name"] == "resource"), None)
    body = part.get("resource") if part is not None else None
    if not isinstance(body, dict):
        raise Invalid("Parameter 'resource' (the resource to validate) is required", code="required",
                      expression=("resource",))
    if body.get("resourceType") != resource_type or resource_type not in resource_types():
        raise Invalid(f"The resource is a {body.get('resourceType')}, not a {resource_type}", code="invalid",
                      expression=("resource",))
    issues = []
    if mode == "update" and body.get("id") is None:
        issues.append(Issue("required", "A resource to update must carry its id", expression=(f"{resource_type}.id",)))
    if call.id is not None and body.get("id") not in (None, call.id):
        issues.append(Issue("invalid", f"The resource id '{body.get('id')}' does not match the URL id '{call.id}'",
                            expression=(f"{resource_type}.id",)))
    issues.extend(await _write_issues(repository, resource_type, body, mode))
    url = given.text("profile")
    if url is not None:
        definition = await _profile(repository, url, resource_type)
        if definition is not None:
            issues.extend(_profile_issues(body, definition, url))
    return _outcome(issues)


def _outcome(issues: list[Issue]) -> dict[str, Any]:
    if not any(i.severity in ("error", "fatal") for i in issues):
        issues = [*issues, Issue("informational", "No issues: the resource would be accepted", severity="information")]
    return {"resourceType": "OperationOutcome", "issue": [issue_json(i) for i in issues]}
