"""Patient/$merge: one person's duplicate record folded into the other, in one transaction, losing nothing.

Every resource in the source patient's compartment is re-pointed to the target (a new version of each: history
keeps where it pointed before); the source becomes inactive with `link.type=replaced-by`, the target gains
`link.type=replaces`; a Provenance records the merge. The source is never deleted (delete-source=true is
refused), so the merge can be reviewed and nothing is lost. The R5 shape (HAPI's), on R4B:
https://hl7.org/fhir/R5/patient-operation-merge.html
"""

from __future__ import annotations

from typing import Any

import orjson

from operations.context import OperationCall
from operations.parameters import parameters
from resources.errors import FhirError, Forbidden, Invalid, NotFound, NotSupported, Unprocessable
from resources.guard import current_guard
from resources.ids import new_id
from resources.outcome import information
from resources.repository import APPEND_ONLY, Repository
from resources.search.dates import format_instant
from resources.search.parse import parse_search
from resources.search.query import Filter, ReferenceValue, SearchQuery
from resources.store.protocol import WriteSession

LIMIT = 10_000  # resources one merge moves; a larger record is refused rather than half moved
_DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"


def _repointed(value: Any, source: str, target: str) -> Any:
    """A copy of a resource body with every reference to Patient/source (relative, absolute or versioned) moved."""
    if isinstance(value, list):
        return [_repointed(v, source, target) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _repointed(v, source, target) for k, v in value.items()}
    reference = value.get("reference")
    if isinstance(reference, str):
        head, found, tail = reference.partition(f"Patient/{source}")
        if found and (not head or head.endswith("/")) and (not tail or tail.startswith("/_history/")):
            out["reference"] = f"{head}Patient/{target}"  # a version of the source means nothing for the target
    return out


async def _patient(call: OperationCall, role: str) -> str:
    """The id of the source or target patient, by reference or by identifiers (which must name exactly one)."""
    given = call.input
    by_reference = next((p for p in given.parts if p["name"] == f"{role}-patient"), None)
    identifiers = [p.get("valueIdentifier") for p in given.parts if p["name"] == f"{role}-patient-identifier"]
    if by_reference is not None:
        reference = (by_reference.get("valueReference") or {}).get("reference")
        if not isinstance(reference, str) or not reference.startswith("Patient/") or "/" in reference[8:]:
            raise Invalid(f"{role}-patient must be a Reference to Patient/[id]", code="value",
                          expression=(f"{role}-patient",))
        await call.context.repository.read("Patient", reference[8:])  # 404 for what is absent or hidden
        return reference[8:]
    if not identifiers:
        raise Invalid(f"Either {role}-patient or {role}-patient-identifier is required", code="required",
                      expression=(f"{role}-patient",))
    params = []
    for identifier in identifiers:
        if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
            raise Invalid(f"{role}-patient-identifier must be an Identifier with a value", code="value",
                          expression=(f"{role}-patient-identifier",))
        params.append(("identifier", f"{identifier.get('system', '')}|{identifier['value']}"
                       if identifier.get("system") else identifier["value"]))
    repository = call.context.repository
    query = parse_search("Patient", [*params, ("_count", "2")], repository.registry, repository.search_limits).query
    found = (await repository.search(query)).resources
    if len(found) != 1:
        raise Unprocessable(f"{role}-patient-identifier matches {'no' if not found else 'more than one'} patient",
                            code="not-found" if not found else "multiple-matches",
                            expression=(f"{role}-patient-identifier",))
    return found[0].id


async def _record(session: WriteSession, repository: Repository, source: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every current resource in the source's compartment but Patients and the audit trail, as seen in the session."""
    compartment = Filter("_compartment", "compartment", None, (ReferenceValue("Patient", source),))
    found = []
    for resource_type in await repository.store.compartment_types(source):
        if resource_type == "Patient" or resource_type in APPEND_ONLY:
            continue  # linked Patients stay linked; the audit trail is what happened, to whom, then
        page = await session.search(SearchQuery(resource_type, (compartment,), count=LIMIT + 1))
        found.extend((r.type, r.id, orjson.loads(r.body or b"{}")) for r in page.resources)
        if len(found) > LIMIT:
            raise Invalid(f"Patient/{source} has more than {LIMIT} resources: too many to merge in one transaction",
                          code="too-costly")
    return found


async def _current(session: WriteSession, id_: str) -> dict[str, Any]:
    found = await session.head("Patient", id_)
    if found is None or found.body is None:
        raise NotFound(f"Patient/{id_} is not known")  # deleted since it was looked up
    body: dict[str, Any] = orjson.loads(found.body)
    return body


def _linked(patient: dict[str, Any], other: str, kind: str) -> dict[str, Any]:
    links = [x for x in patient.get("link") or []
             if not (isinstance(x, dict) and (x.get("other") or {}).get("reference") == f"Patient/{other}")]
    return {**patient, "link": [*links, {"other": {"reference": f"Patient/{other}"}, "type": kind}]}


def _check_access(moves: list[tuple[str, str, dict[str, Any]]], bodies: list[dict[str, Any]]) -> None:
    """403 unless the caller may change every resource the merge moves: a merge that leaves some behind loses them."""
    guard = current_guard()
    if guard is None:
        return
    try:
        for (resource_type, _, before), after in zip(moves, bodies, strict=True):
            guard.require(resource_type, "u")
            if not guard.visible(resource_type, before, "u") or not guard.visible(resource_type, after, "u"):
                raise Forbidden("hidden")
    except FhirError:
        raise Forbidden("The access token does not reach every resource of the source patient's record, so the "
                        "merge would leave some behind: nothing was merged", code="forbidden") from None


async def run(call: OperationCall) -> dict[str, Any]:
    """The Parameters output: input, outcome and result (the target patient as merged)."""
    given = call.input
    repository = call.context.repository
    if given.boolean("delete-source"):
        raise NotSupported("delete-source=true is not supported: the source is kept, inactive and linked to the "
                           "target, so nothing is lost", expression=("delete-source",))
    preview = given.boolean("preview") or False
    source, target = await _patient(call, "source"), await _patient(call, "target")
    if source == target:
        raise Invalid("The source and target patient are the same", code="invalid", expression=("target-patient",))
    result_part = given.resource("result-patient", "Patient")
    if result_part is not None and result_part.get("id") != target:
        raise Invalid("result-patient must carry the target patient's id", code="invalid",
                      expression=("result-patient",))
    async with repository.store.write_session() as session:
        source_body, target_body = await _current(session, source), await _current(session, target)
        if any(isinstance(x, dict) and x.get("type") == "replaced-by" for x in source_body.get("link") or []):
            raise Unprocessable(f"Patient/{source} was merged already (it has a replaced-by link)", code="invalid",
                                expression=("source-patient",))
        moves = await _record(session, repository, source)
        bodies = [_repointed(body, source, target) for _, _, body in moves]
        _check_access(moves, bodies)
        merged_target = _linked({k: v for k, v in (result_part or target_body).items() if k != "meta"}, source,
                                "replaces")
        retired = _linked({**{k: v for k, v in source_body.items() if k != "meta"}, "active": False}, target,
                          "replaced-by")
        if preview:
            text = (f"Preview only: {len(moves)} resources would move from Patient/{source} to Patient/{target}; "
                    "nothing was changed")
            return _output(given.parts, text, {**merged_target, "id": target})
        for (resource_type, id_, _), body in zip(moves, bodies, strict=True):
            await repository.update_in(session, resource_type, id_, body, None, method="PUT")
        await repository.validate(merged_target, "Patient")
        stored = await repository.update_in(session, "Patient", target, merged_target, None, method="PUT")
        await repository.update_in(session, "Patient", source, retired, None, method="PUT")
        await _provenance(session, repository, source, target, [(t, i) for t, i, _ in moves])
    result = orjson.loads(stored.resource.body or b"{}")
    return _output(given.parts, f"Merged Patient/{source} into Patient/{target}: {len(moves)} resources moved",
                   result)


async def _provenance(session: WriteSession, repository: Repository, source: str, target: str,
                      moved: list[tuple[str, str]]) -> None:
    """A Provenance of the merge, naming both patients and every resource it moved."""
    now = repository.clock()
    body = {"resourceType": "Provenance", "recorded": format_instant(now),
            "target": [{"reference": f"Patient/{target}"}, {"reference": f"Patient/{source}"},
                       *({"reference": f"{t}/{i}"} for t, i in moved)],
            "activity": {"coding": [{"system": _DATA_OPERATION, "code": "UPDATE"}], "text": "Patient merge"},
            "reason": [{"text": f"Patient/{source} is a duplicate of Patient/{target}"}],
            "agent": [{"who": {"display": "CareLoop Patient/$merge"}}]}
    await repository.validate(body, "Provenance")
    await session.apply([repository.prepare("Provenance", new_id(), body, 1, now, "create", 0, "POST")])


def _output(parts: tuple[dict[str, Any], ...], text: str, result: dict[str, Any]) -> dict[str, Any]:
    return parameters({"name": "input", "resource": {"resourceType": "Parameters", "parameter": list(parts)}},
                      {"name": "outcome", "resource": information(text)},
                      {"name": "result", "resource": result})
