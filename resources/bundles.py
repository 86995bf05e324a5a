"""Searchset, history and batch/transaction-response Bundles assembled from stored bytes.

Stored resources are spliced in as bytes, never re-serialised.
https://hl7.org/fhir/R4B/bundle.html
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from resources.search.dates import format_instant
from resources.store.protocol import StoredResource


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _splice(head: dict[str, Any], entries: Sequence[bytes]) -> bytes:
    start = _dumps(head)[:-1]
    if not entries:
        return start + b"}"
    return start + b',"entry":[' + b",".join(entries) + b"]}"


def _head(total: int | None, links: dict[str, str]) -> dict[str, Any]:
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        head["total"] = total
    head["link"] = [{"relation": rel, "url": url} for rel, url in links.items()]
    return head


def _open_url(base_url: str) -> bytes:
    # Types and ids ([A-Za-z0-9-.]) need no JSON escaping; the base URL is escaped once.
    return b'{"fullUrl":' + _dumps(base_url + "/")[:-1]


def _close(mode: str) -> bytes:
    return b',"search":{"mode":"' + mode.encode() + b'"}},'


def _joined(head: dict[str, Any], parts: list[bytes]) -> bytes:
    # one join of small pieces: concatenating each entry first would copy every body several times
    start = _dumps(head)[:-1]
    if not parts:
        return start + b"}"
    parts[-1] = parts[-1][:-1]  # no comma after the last entry
    return b"".join((start, b',"entry":[', *parts, b"]}"))


def searchset(resources: Sequence[StoredResource], base_url: str, links: dict[str, str], total: int | None,
              outcome: dict[str, Any] | None = None, body_of: Callable[[StoredResource], bytes] | None = None,
              included: Sequence[StoredResource] = ()) -> bytes:
    """A searchset Bundle; `body_of` may reshape bodies (for _summary/_elements)."""
    open_url = _open_url(base_url)
    parts: list[bytes] = []
    for mode, group in (("match", resources), ("include", included)):
        close = _close(mode)
        for res in group:
            body = body_of(res) if body_of else res.body
            parts += (open_url, res.type.encode(), b"/", res.id.encode(), b'","resource":', body or b"{}",
                      close)
    if outcome is not None:
        parts += (b'{"resource":', _dumps(outcome), b',"search":{"mode":"outcome"}},')
    return _joined(_head(total, links), parts)


def searchset_entries(entries: Sequence[tuple[bytes, bytes]], base_url: str, links: dict[str, str],
                      total: int | None) -> bytes:
    """A searchset Bundle of matches given as (type/id, body), as Repository.entries returns them."""
    open_url, close = _open_url(base_url), _close("match")
    parts: list[bytes] = []
    for ref, body in entries:
        parts += (open_url, ref, b'","resource":', body, close)
    return _joined(_head(total, links), parts)


def history(versions: Sequence[StoredResource], base_url: str, links: dict[str, str]) -> bytes:
    """A history Bundle, newest version first, with deletions as request-only entries."""
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "history",
                            "link": [{"relation": rel, "url": url} for rel, url in links.items()]}
    entries = []
    for v in versions:
        full = _dumps(f"{base_url}/{v.type}/{v.id}")
        if v.deleted:
            request = {"method": "DELETE", "url": f"{v.type}/{v.id}"}
            response = {"status": "410 Gone", "etag": f'W/"{v.vid}"', "lastModified": format_instant(v.updated_ms)}
            entries.append(b'{"fullUrl":' + full + b',"request":' + _dumps(request) + b',"response":'
                           + _dumps(response) + b"}")
            continue
        # a version is listed as the PUT of its full result, which a client can replay (patch bodies are not kept)
        method = "POST" if v.vid == 1 and v.method == "POST" else "PUT"
        url = v.type if method == "POST" else f"{v.type}/{v.id}"
        status = "201 Created" if v.vid == 1 else "200 OK"
        response = {"status": status, "etag": f'W/"{v.vid}"', "lastModified": format_instant(v.updated_ms)}
        entries.append(b'{"fullUrl":' + full + b',"resource":' + (v.body or b"{}") + b',"request":'
                       + _dumps({"method": method, "url": url})
                       + b',"response":' + _dumps(response) + b"}")
    return _splice(head, entries)


def response_bundle(kind: str, entries: Sequence[bytes]) -> bytes:
    """A batch-response or transaction-response Bundle from pre-serialised entries."""
    return _splice({"resourceType": "Bundle", "type": f"{kind}-response"}, entries)
