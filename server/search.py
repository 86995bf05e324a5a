"""Search answers: parse, run in the store, assemble a searchset Bundle with absolute paging links.

https://hl7.org/fhir/R4B/search.html
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from fastapi import Request
from starlette.responses import Response

from resources.bundles import searchset
from resources.outcome import outcome
from resources.search.parse import parse_search
from resources.search.query import SYSTEM
from resources.search.system import parse_system_search
from resources.shaping import check_summary
from resources.store.protocol import ReadSource, StoredResource
from server.context import Services, base_url, is_pretty, prefer_strict, services
from server.querystring import encode_query
from server.render import shape_bytes
from server.responses import bytes_response


async def search_response(request: Request, resource_type: str, params: Sequence[tuple[str, str]]) -> Response:
    """The HTTP answer of a type-level or system-level search."""
    body = await search_bundle(services(request), base_url(request), resource_type, params,
                               strict=prefer_strict(request))
    return bytes_response(body, pretty=is_pretty(request))


async def search_bundle(svc: Services, base: str, resource_type: str, params: Sequence[tuple[str, str]],
                        *, strict: bool = False, source: ReadSource | None = None) -> bytes:
    """A searchset Bundle for one page of a type-level (or, with SYSTEM, system-level) search."""
    if resource_type == SYSTEM:
        parsed = parse_system_search(params, svc.repository.registry, svc.repository.search_limits,
                                     strict=strict)
    else:
        parsed = parse_search(resource_type, params, svc.repository.registry, svc.repository.search_limits,
                              strict=strict)
    values = dict(params)
    summary, elements = values.get("_summary"), values.get("_elements")
    check_summary(summary)
    kept = [(k, v) for k, v in params if k != "_cursor"]
    path = base if resource_type == SYSTEM else f"{base}/{resource_type}"
    query = encode_query(params)
    first = query if len(kept) == len(params) else encode_query(kept)  # the same text unless paging
    links = {"self": f"{path}?{query}".rstrip("?"), "first": f"{path}?{first}".rstrip("?")}
    if summary == "count" or parsed.query.count == 0:  # _count=0 asks for the count only (fhirpy's count())
        page = await svc.repository.search(replace(parsed.query, total="accurate", count=0), source)
        return searchset([], base, links, page.total)
    page = await svc.repository.search(parsed.query, source)
    if page.next_cursor is not None:
        links["next"] = f"{path}?{encode_query([*kept, ('_cursor', page.next_cursor)])}"
    body_of: Callable[[StoredResource], bytes] | None = None
    if (summary and summary != "false") or elements:
        def body_of(res: StoredResource) -> bytes:
            return shape_bytes(res.body or b"{}", summary, elements)

    issues = outcome(*parsed.ignored) if parsed.ignored else None
    return searchset(page.resources, base, links, page.total, issues, body_of, page.included)
