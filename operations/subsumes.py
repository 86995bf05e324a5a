"""$subsumes: how code A relates to code B in a code system's is-a hierarchy.

https://hl7.org/fhir/R4B/codesystem-operation-subsumes.html
"""

from __future__ import annotations

from typing import Any

from operations.context import OperationCall
from operations.parameters import parameters, part
from resources.errors import Invalid, NotFound
from terminology.codesystem import CodeSystemIndex


async def run(call: OperationCall) -> dict[str, Any]:
    """Answer equivalent, subsumes, subsumed-by or not-subsumed."""
    given = call.input
    target = await call.target()
    coding_a, coding_b = given.coding("codingA") or {}, given.coding("codingB") or {}
    code_a = given.text("codeA") or coding_a.get("code")
    code_b = given.text("codeB") or coding_b.get("code")
    system = given.text("system") or coding_a.get("system") or (target or {}).get("url")
    if not code_a or not code_b:
        raise Invalid("$subsumes needs codeA and codeB (or codingA and codingB)", code="required",
                      expression=("codeA" if not code_a else "codeB",))
    if coding_b.get("system") and system and coding_b["system"] != system:
        raise Invalid("codingA and codingB must be from the same code system", code="invalid",
                      expression=("codingB",))
    if target is not None:
        index = CodeSystemIndex.of(target)
        for name, code in (("codeA", code_a), ("codeB", code_b)):
            if index.find(code) is None:
                raise NotFound(f"Code '{code}' is not in the code system {index.url}", code="code-invalid",
                               expression=(name,))
        outcome = index.subsumes(code_a, code_b)
    else:
        if not system:
            raise Invalid("$subsumes needs the 'system' of the codes", code="required", expression=("system",))
        outcome = await call.context.terminology.subsumes(system, code_a, code_b, given.text("version"))
    return parameters(part("outcome", "Code", outcome))
