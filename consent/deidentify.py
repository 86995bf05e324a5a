"""De-identification: a resource as a trainee may see it, direct identifiers removed or generalised by a profile.

A pure walk over the resource, typed by the R4B element tables, so that the datatype rules (HumanName,
ContactPoint, Address, Identifier, Attachment, Annotation, Narrative, Reference) apply wherever those types
occur, in any resource type, contained resource or extension, with no code per type.
https://www.hhs.gov/hipaa/for-professionals/privacy/special-topics/de-identification/index.html#safeharborguidance
"""

from __future__ import annotations

from typing import Any

import orjson

from consent.deidentify_profile import Profile
from resources.elements import element_info

_RESOURCE_LIST = "ResourceList"


def deidentify(resource: dict[str, Any], profile: Profile, year: int) -> dict[str, Any]:
    """The resource with the profile applied (a new dict; `year` is the current year, for the age rule)."""
    return _Walk(profile, year).resource(resource)


def deidentified_bytes(body: bytes, profile: Profile, year: int) -> bytes:
    """A stored JSON body with the profile applied."""
    return orjson.dumps(deidentify(orjson.loads(body), profile, year))


class _Walk:
    """One application of a profile; `changed` tells whether the resource being walked lost anything."""

    def __init__(self, profile: Profile, year: int) -> None:
        self.profile = profile
        self.year = year
        self.changed = False
        self.generic = profile.elements.get("*", {})

    def resource(self, resource: dict[str, Any]) -> dict[str, Any]:
        kind = resource.get("resourceType")
        if not isinstance(kind, str) or kind in self.profile.exempt_types:
            return resource
        outer, self.changed = self.changed, False
        out = self.complex(kind, resource)
        if self.changed and self.profile.label is not None:
            # the label tells a client that this is not the whole record (FHIR security labels)
            meta = dict(out.get("meta") or {})
            meta["security"] = [*(meta.get("security") or ()), self.profile.label]
            out["meta"] = meta
        self.changed = outer or self.changed
        return out

    def complex(self, definition: str, value: dict[str, Any]) -> dict[str, Any]:
        rules = self.profile.elements.get(definition, {})
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = key[1:] if key.startswith("_") else key
            action = rules.get(name) or self.generic.get(name)
            if action == "remove":
                self.changed = True
                continue
            if action in ("year", "birth-year"):
                found = self._year(item, action == "birth-year") if not key.startswith("_") else None
                self.changed = self.changed or found != item
                if found is not None:  # a primitive's extensions (e.g. a birth time) go with its detail
                    out[key] = found
                continue
            info = element_info(definition, key)
            if info is None:
                out[key] = item  # resourceType, or what validation let through: nothing typed to walk
                continue
            kept = self.element(info[1], item)
            if kept is not None:
                out[key] = kept
        return out

    def element(self, kind: str, item: Any) -> Any:
        """One element's value (a list for a repeating one) after the rules, None when nothing is left."""
        if isinstance(item, list):
            values = [v for v in (self.value(kind, one) for one in item) if v is not None]
            return values or None
        return self.value(kind, item)

    def value(self, kind: str, item: Any) -> Any:
        if not isinstance(item, dict):
            return item  # a primitive (its extensions are the `_name` sibling, walked as an Element)
        if kind == _RESOURCE_LIST:
            return self.resource(item)
        if kind == "Extension" and item.get("url") in self.profile.removed_extensions:
            self.changed = True
            return None
        rule = self.profile.datatypes.get(kind)
        if rule is None:
            return self.complex(kind, item)
        if rule.action == "remove":
            self.changed = True
            return None
        if rule.action == "keep":
            kept = {k: v for k, v in item.items() if (k[1:] if k.startswith("_") else k) in rule.elements}
            self.changed = self.changed or len(kept) != len(item)
            return kept or None
        if rule.action == "initials":
            return self._initials(item)
        return self._reference(kind, item)

    def _reference(self, kind: str, item: dict[str, Any]) -> dict[str, Any] | None:
        # ids stay (a trainee follows the record by them); a display names whoever is referred to, unless the
        # target is of a type the profile leaves as it is (an Organization, a Location)
        target = item.get("type")
        reference = item.get("reference")
        if not isinstance(target, str) and isinstance(reference, str) and "/" in reference:
            parts = reference.split("/")
            target = parts[parts.index("_history") - 2] if "_history" in parts[2:] else parts[-2]
        walked = self.complex(kind, item)
        if "display" in walked and target not in self.profile.exempt_types:
            del walked["display"]
            walked.pop("_display", None)
            self.changed = True
        return walked or None

    def _initials(self, name: dict[str, Any]) -> dict[str, Any] | None:
        self.changed = True
        out: dict[str, Any] = {}
        if isinstance(name.get("use"), str):
            out["use"] = name["use"]
        given = [f"{g.strip()[0]}." for g in name.get("given") or () if isinstance(g, str) and g.strip()]
        if given:
            out["given"] = given
        family = name.get("family")
        if isinstance(family, str) and family.strip():
            out["family"] = f"{family.strip()[0]}."
        return out or None

    def _year(self, item: Any, birth: bool) -> str | None:
        if not isinstance(item, str) or len(item) < 4 or not item[:4].isdigit():
            return None
        age = self.profile.birth_date_removed_from_age
        if birth and age is not None and self.year - int(item[:4]) >= age:
            return None  # ages of 90 and over are one group in Safe Harbor: a birth year would tell them apart
        return item[:4]
