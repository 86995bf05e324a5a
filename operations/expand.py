"""$expand: the codes of a value set, with text filter and paging by count and offset.

https://hl7.org/fhir/R4B/valueset-operation-expand.html
"""

from __future__ import annotations

import uuid
from typing import Any

from operations.context import OperationCall
from resources.errors import Invalid
from resources.ids import now_ms
from resources.search.dates import format_instant
from resources.search.normalize import normalize_string
from terminology.expansion import Coded, split_canonical

_MAX_COUNT = 1000


def _contains(item: Coded) -> dict[str, Any]:
    entry: dict[str, Any] = {"system": item.system, "code": item.code}
    if item.version:
        entry["version"] = item.version
    if item.display:
        entry["display"] = item.display
    if item.inactive:
        entry["inactive"] = True
    if item.abstract:
        entry["abstract"] = True
    return entry


async def run(call: OperationCall) -> dict[str, Any]:
    """The value set with an `expansion` (total, offset, parameters, contains)."""
    given = call.input
    value_set = await call.target() or given.resource("valueSet", "ValueSet")
    url = given.text("url")
    service = call.context.terminology
    if value_set is None:
        if url is None:
            raise Invalid("$expand needs 'url' or 'valueSet' (or a ValueSet id in the URL)", code="required",
                          expression=("url",))
        items = await service.expand(url)
        value_set = await service.value_set(*split_canonical(url))
    else:
        items = await service.expander.expand(value_set)
    assert value_set is not None
    text = given.text("filter")
    if text:
        wanted = normalize_string(text)
        items = [c for c in items if wanted in normalize_string(c.display or "") or wanted in c.code.lower()]
    if given.boolean("activeOnly"):
        items = [c for c in items if not c.inactive]
    offset = given.integer("offset") or 0
    count = given.integer("count")
    count = _MAX_COUNT if count is None else min(count, _MAX_COUNT)
    page = items[offset:offset + count]
    params: list[dict[str, Any]] = [{"name": "offset", "valueInteger": offset},
                                    {"name": "count", "valueInteger": count}]
    if text:
        params.append({"name": "filter", "valueString": text})
    expanded = {k: v for k, v in value_set.items() if k not in ("expansion", "meta", "text")}
    expanded["expansion"] = {"identifier": f"urn:uuid:{uuid.uuid4()}", "timestamp": format_instant(now_ms()),
                             "total": len(items), "offset": offset, "parameter": params,
                             "contains": [_contains(c) for c in page]}
    if not page:
        del expanded["expansion"]["contains"]
    return expanded
