"""History at instance, type and system level, paged newest first.

https://hl7.org/fhir/R4B/http.html#history
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from resources.bundles import history
from resources.errors import Invalid, NotFound
from resources.search.dates import date_range
from resources.store.protocol import HistoryQuery
from server.context import base_url, is_pretty, query_pairs, services
from server.querystring import encode_query
from server.responses import bytes_response


def _date_param(request: Request, name: str, pick: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    found = date_range(raw)
    if found is None:
        raise Invalid(f"{name} must be a FHIR instant or date, not '{raw}'", code="value", expression=(name,))
    return found[pick]


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise Invalid(f"{name} must be a non-negative integer, not '{raw}'", code="value", expression=(name,))
    return int(raw)


async def history_response(request: Request, type_: str | None, id_: str | None) -> Response:
    """A history Bundle for the given scope with self and next links."""
    svc = services(request)
    limits = svc.repository.search_limits
    count = min(_int_param(request, "_count", limits.default_count) or 0, limits.max_count)
    query = HistoryQuery(type=type_, id=id_, since_ms=_date_param(request, "_since", 0),
                         at_ms=_date_param(request, "_at", 1), before_seq=_int_param(request, "_cursor", None),
                         count=count + 1)
    if id_ is not None and not (await svc.repository.store.read(type_ or "", id_)):
        raise NotFound(f"{type_}/{id_} is not known")
    versions = await svc.repository.history(query)
    more = len(versions) > count
    versions = versions[:count]
    base = base_url(request)
    path = "/".join(p for p in (base, type_, id_, "_history") if p)
    pairs = query_pairs(request)
    kept = [(k, v) for k, v in pairs if k != "_cursor"]
    links = {"self": f"{path}?{encode_query(pairs)}".rstrip("?")}
    if more and versions:
        links["next"] = f"{path}?{encode_query([*kept, ('_cursor', str(versions[-1].seq))])}"
    return bytes_response(history(versions, base, links), 200, pretty=is_pretty(request))
