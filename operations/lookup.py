"""$lookup: the details of a code in a code system (display, definition, designations, properties).

https://hl7.org/fhir/R4B/codesystem-operation-lookup.html
"""

from __future__ import annotations

from typing import Any

from operations.context import OperationCall
from operations.parameters import parameters, part
from resources.errors import Invalid, NotFound
from terminology.codesystem import CodeSystemIndex


async def run(call: OperationCall) -> dict[str, Any]:
    """Answer $lookup with a Parameters resource; 404 for an unknown system or code."""
    given = call.input
    target = await call.target()
    coding = given.coding("coding") or {}
    code = given.text("code") or coding.get("code")
    system = given.text("system") or coding.get("system") or (target or {}).get("url")
    version = given.text("version") or coding.get("version")
    if not code:
        raise Invalid("$lookup needs 'code' and 'system', or 'coding'", code="required", expression=("code",))
    if target is not None:
        index = CodeSystemIndex.of(target)
        concept = index.find(code)
        if concept is None:
            raise NotFound(f"Code '{code}' is not in the code system {index.url}", code="code-invalid",
                           expression=("code",))
    else:
        if not system:
            raise Invalid("$lookup needs the 'system' of the code", code="required", expression=("system",))
        index, concept = await call.context.terminology.lookup(system, code, version)
    properties = [{"name": "property", "part": [{"name": "code", "valueCode": "parent"},
                                                {"name": "value", "valueCode": p}]} for p in sorted(concept.parents)]
    properties += [{"name": "property", "part": [{"name": "code", "valueCode": "child"},
                                                 {"name": "value", "valueCode": c}]} for c in sorted(concept.children)]
    for prop in concept.properties:
        value = {k: v for k, v in prop.items() if k.startswith("value")}
        properties.append({"name": "property", "part": [{"name": "code", "valueCode": prop.get("code")},
                                                        {"name": "value", **value}]})
    designations = [{"name": "designation", "part": [p for p in (
        part("language", "Code", d.get("language")), part("use", "Coding", d.get("use")),
        part("value", "String", d.get("value"))) if p]} for d in concept.designations]
    return parameters(part("name", "String", index.name or index.url), part("version", "String", index.version),
                      part("display", "String", concept.display or concept.code),
                      part("definition", "String", concept.definition),
                      part("abstract", "Boolean", concept.abstract or None), *designations, *properties)
