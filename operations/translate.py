"""$translate: a code mapped to other code systems through stored ConceptMaps (forward or reverse).

https://hl7.org/fhir/R4B/conceptmap-operation-translate.html
"""

from __future__ import annotations

from typing import Any

from operations.context import OperationCall
from operations.parameters import parameters, part
from resources.errors import Invalid

_NO_MATCH = ("unmatched", "disjoint")


def _match(equivalence: str, system: str | None, code: str | None, display: str | None,
           source: str | None) -> dict[str, Any]:
    coding = {k: v for k, v in (("system", system), ("code", code), ("display", display)) if v}
    return {"name": "match", "part": [p for p in (part("equivalence", "Code", equivalence),
                                                  part("concept", "Coding", coding or None),
                                                  part("source", "Uri", source)) if p]}


def _forward(group: dict[str, Any], code: str, source: str | None) -> list[dict[str, Any]]:
    matches = []
    for element in group.get("element") or []:
        if element.get("code") != code:
            continue
        for target in element.get("target") or []:
            matches.append(_match(target.get("equivalence", "equivalent"), group.get("target"), target.get("code"),
                                  target.get("display"), source))
    if not matches:
        unmapped = group.get("unmapped") or {}
        if unmapped.get("mode") == "provided":
            matches.append(_match("equal", group.get("target"), code, None, source))
        elif unmapped.get("mode") == "fixed":
            matches.append(_match("equivalent", group.get("target"), unmapped.get("code"), unmapped.get("display"),
                                  source))
    return matches


def _reverse(group: dict[str, Any], code: str, source: str | None) -> list[dict[str, Any]]:
    return [_match(target.get("equivalence", "equivalent"), group.get("source"), element.get("code"),
                   element.get("display"), source)
            for element in group.get("element") or [] for target in element.get("target") or []
            if target.get("code") == code]


async def run(call: OperationCall) -> dict[str, Any]:
    """Answer result, message and the matches."""
    given = call.input
    coding = given.coding("coding")
    concept = given.codeable_concept("codeableConcept")
    codings = [coding] if coding else [c for c in (concept or {}).get("coding") or [] if isinstance(c, dict)]
    if not codings:
        code = given.text("code")
        if not code:
            raise Invalid("$translate needs 'code' and 'system', 'coding' or 'codeableConcept'", code="required",
                          expression=("code",))
        codings = [{"code": code, "system": given.text("system")}]
    if any(not c.get("system") for c in codings):
        raise Invalid("$translate needs the 'system' of the code", code="required", expression=("system",))
    target = await call.target() or given.resource("conceptMap", "ConceptMap")
    service = call.context.terminology
    maps = [target] if target else await service.concept_maps(given.text("url"), given.text("source"),
                                                               given.text("target"))
    reverse = bool(given.boolean("reverse"))
    target_system = given.text("targetsystem")
    matches: list[dict[str, Any]] = []
    for concept_map in maps:
        for group in concept_map.get("group") or []:
            for item in codings:
                from_side, to_side = ("target", "source") if reverse else ("source", "target")
                if group.get(from_side) != item["system"]:
                    continue
                if target_system and group.get(to_side) != target_system:
                    continue
                find = _reverse if reverse else _forward
                matches += find(group, item["code"], concept_map.get("url"))
    found = any(_equivalence(m) not in _NO_MATCH for m in matches)
    message = None if found else "No mapping found for " + ", ".join(f"{c['system']}#{c['code']}" for c in codings)
    return parameters(part("result", "Boolean", found), part("message", "String", message), *matches)


def _equivalence(match: dict[str, Any]) -> str:
    return next((p["valueCode"] for p in match["part"] if p["name"] == "equivalence"), "equivalent")
