"""SMART scopes: the v2 grammar (`patient/Observation.rs?category=...`), v1 names, and which scope covers which.

https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

CONTEXTS = ("patient", "user", "system")
LETTERS = "cruds"
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
# scopes that are not about resources: identity, launch context, refresh
OTHER_SCOPES = frozenset({"openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
                          "offline_access", "online_access"})
_RESOURCE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(?:\?(.+))?$")


class ScopeError(ValueError):
    """A scope that does not follow the SMART grammar (answered invalid_scope)."""


@dataclass(frozen=True)
class ResourceScope:
    """One resource scope: context, type (or *), permitted interactions and an optional granular query."""

    context: str
    type: str
    letters: frozenset[str]
    query: tuple[tuple[str, str], ...] = ()
    text: str = ""

    def applies(self, resource_type: str, letter: str) -> bool:
        """True when this scope grants `letter` on `resource_type`."""
        return letter in self.letters and self.type in ("*", resource_type)

    def within(self, allowed: ResourceScope) -> bool:
        """True when every access this scope gives is also given by `allowed`."""
        return (self.context == allowed.context and allowed.type in ("*", self.type)
                and self.letters <= allowed.letters and (not allowed.query or set(allowed.query) <= set(self.query)))


def parse_scope(text: str, known_types: frozenset[str] | None = None) -> ResourceScope | None:
    """A resource scope, None for a non-resource scope, ScopeError for a malformed one."""
    if text in OTHER_SCOPES or text.startswith("__") or text.startswith("launch/"):
        return None
    match = _RESOURCE.match(text)
    if match is None:
        raise ScopeError(f"'{text}' is not a SMART scope")
    context, resource_type, permission, query = match.groups()
    if known_types is not None and resource_type != "*" and resource_type not in known_types:
        raise ScopeError(f"'{text}' names an unknown resource type")
    if permission in V1:
        letters = V1[permission]
        if query:
            raise ScopeError(f"'{text}': SMART v1 scopes take no query")
    else:
        letters = permission
        # v2 letters must appear in the order c r u d s, each at most once
        if not letters or any(ch not in LETTERS for ch in letters) or "".join(
                ch for ch in LETTERS if ch in letters) != letters:
            raise ScopeError(f"'{text}': permissions must be some of c, r, u, d, s in that order")
    pairs = tuple(parse_qsl(query, keep_blank_values=False, strict_parsing=True)) if query else ()
    return ResourceScope(context, resource_type, frozenset(letters), pairs, text)


def parse_scopes(text: str | Iterable[str], known_types: frozenset[str] | None = None,
                 ) -> tuple[tuple[ResourceScope, ...], frozenset[str]]:
    """Resource scopes and the other scopes of a space-separated scope string."""
    items = text.split() if isinstance(text, str) else list(text)
    resources: list[ResourceScope] = []
    others: set[str] = set()
    for item in items:
        try:
            parsed = parse_scope(item, known_types)
        except ValueError as exc:
            raise ScopeError(str(exc)) from exc
        if parsed is None:
            others.add(item)
        else:
            resources.append(parsed)
    return tuple(resources), frozenset(others)


def granted(requested: str, allowed: str, known_types: frozenset[str] | None = None) -> str:
    """The requested scopes that the client's allowed scopes cover, in request order (ScopeError if malformed)."""
    allowed_resources, allowed_other = parse_scopes(allowed, known_types)
    out = []
    for item in requested.split():
        scope = parse_scope(item, known_types)
        if scope is None:
            if item in allowed_other or (item.startswith("launch") and "launch" in allowed_other):
                out.append(item)
        elif any(scope.within(a) for a in allowed_resources):
            out.append(item)
    return " ".join(dict.fromkeys(out))
