"""Which search parameter of each type holds what a Consent provision tests (date, code, category, authors).

The same parameters serve the compiled store query and the in-memory re-check, so both judge a resource
alike. https://hl7.org/fhir/R4B/consent-definitions.html#Consent.provision.dataPeriod
"""

from __future__ import annotations

from functools import lru_cache

from consent.compile import TypeParams
from resources.search.registry import SearchRegistry

# in order of preference: the first a type has is its clinical date
_DATES = ("date", "onset-date", "recorded-date", "authored-on", "authoredon", "issued", "period", "created",
          "occurrence", "effective", "birthdate")
_AUTHORS = ("author", "recorder", "performer", "requester", "asserter", "participant", "practitioner", "sender")


class TypeParamsOf:
    """The TypeParams of a type, read from its search parameters (cached per type)."""

    def __init__(self, registry: SearchRegistry) -> None:
        self._registry = registry
        self.of = lru_cache(maxsize=None)(self._of)  # one entry per resource type: bounded by the model

    def _of(self, resource_type: str) -> TypeParams:
        params = self._registry.for_type(resource_type)
        date = next((code for code in _DATES if code in params and params[code].type == "date"), None)
        code = "code" if "code" in params and params["code"].type == "token" else None
        category = "category" if "category" in params and params["category"].type == "token" else None
        authors = tuple(c for c in _AUTHORS if c in params and params[c].type == "reference")
        return TypeParams(date, code, category, authors)
