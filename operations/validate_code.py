"""$validate-code on a CodeSystem or a ValueSet: is this code (Coding, CodeableConcept) in it.

https://hl7.org/fhir/R4B/valueset-operation-validate-code.html
https://hl7.org/fhir/R4B/codesystem-operation-validate-code.html
"""

from __future__ import annotations

from typing import Any

from operations.context import OperationCall
from operations.parameters import OperationInput, parameters, part
from resources.errors import Invalid
from terminology.codesystem import CodeSystemIndex
from terminology.service import Validation


def _codings(given: OperationInput) -> list[dict[str, Any]]:
    concept = given.codeable_concept("codeableConcept")
    if concept is not None:
        codings = [c for c in concept.get("coding") or [] if isinstance(c, dict) and c.get("code")]
        if not codings:
            raise Invalid("codeableConcept has no coding with a code", code="required",
                          expression=("codeableConcept",))
        return codings
    coding = given.coding("coding")
    if coding is not None:
        return [coding]
    code = given.text("code")
    if not code:
        raise Invalid("$validate-code needs 'code', 'coding' or 'codeableConcept'", code="required",
                      expression=("code",))
    return [{"code": code, "system": given.text("system"), "display": given.text("display")}]


async def run(call: OperationCall) -> dict[str, Any]:
    """Answer result, message and display in a Parameters resource."""
    if call.resource_type == "CodeSystem":
        answers = await _in_code_system(call)
    else:
        answers = await _in_value_set(call)
    good = next((a for a in answers if a.result), None)
    answer = good or answers[0]
    return parameters(part("result", "Boolean", answer.result), part("message", "String", answer.message),
                      part("display", "String", answer.display))


async def _in_value_set(call: OperationCall) -> list[Validation]:
    given = call.input
    value_set: dict[str, Any] | str | None = await call.target() or given.resource("valueSet", "ValueSet")
    value_set = value_set or given.text("url")
    if value_set is None:
        raise Invalid("$validate-code on ValueSet needs 'url' or 'valueSet'", code="required", expression=("url",))
    service = call.context.terminology
    return [await service.validate_in_value_set(value_set, c.get("system"), c["code"], c.get("display"))
            for c in _codings(given)]


async def _in_code_system(call: OperationCall) -> list[Validation]:
    given = call.input
    target = await call.target() or given.resource("codeSystem", "CodeSystem")
    service = call.context.terminology
    answers = []
    for coding in _codings(given):
        if target is not None:
            index = CodeSystemIndex.of(target)
            concept = index.find(coding["code"])
            answers.append(Validation(concept is not None, None if concept else
                                      f"Unknown code '{coding['code']}' in the code system {index.url}",
                                      concept.display if concept else None))
            continue
        system = given.text("url") or coding.get("system")
        if not system:
            raise Invalid("$validate-code on CodeSystem needs 'url' (the code system)", code="required",
                          expression=("url",))
        answers.append(await service.validate_in_code_system(system, coding["code"], given.text("version"),
                                                             coding.get("display")))
    return answers
