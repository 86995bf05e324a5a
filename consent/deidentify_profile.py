"""The de-identification profile: which elements a trainee's view removes or generalises, read from data.

The shipped profile is consent/data/deidentify-profile.json (docs/deidentification.md); a setting may name
another file. It is checked when it is loaded, so a typo stops the server at start rather than showing data.
https://www.hhs.gov/hipaa/for-professionals/privacy/special-topics/de-identification/index.html#safeharborguidance
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources as pkg
from pathlib import Path
from typing import Any

import orjson

from resources.elements import element_info, resource_type_names

SHIPPED = "deidentify-profile.json"
# what a rule may do to an element (element rules) or to every value of a datatype (datatype rules)
ELEMENT_ACTIONS = frozenset({"remove", "year", "birth-year"})
DATATYPE_ACTIONS = frozenset({"remove", "keep", "initials", "display-unless-exempt"})


class ProfileError(ValueError):
    """A de-identification profile that cannot be applied as written."""


@dataclass(frozen=True)
class DatatypeRule:
    """What happens to every value of one datatype, wherever it occurs."""

    action: str
    elements: frozenset[str] = frozenset()  # for "keep": the elements kept, everything else goes


@dataclass(frozen=True)
class Profile:
    """A loaded, checked de-identification profile."""

    role: str
    exempt_types: frozenset[str]
    datatypes: dict[str, DatatypeRule]
    elements: dict[str, dict[str, str]]  # type or backbone name ("Patient_Contact", "*") -> element -> action
    removed_extensions: frozenset[str]
    birth_date_removed_from_age: int | None
    label: dict[str, str] | None
    refused_search: frozenset[str]
    year_only_search: frozenset[str]


def parse_profile(data: Any) -> Profile:
    """A Profile from its JSON form; ProfileError naming the first thing that is wrong."""
    if not isinstance(data, dict):
        raise ProfileError("a de-identification profile is a JSON object")
    types = resource_type_names()
    exempt = _strings(data, "exempt_types")
    if unknown := exempt - types:
        raise ProfileError(f"exempt_types names unknown resource types: {', '.join(sorted(unknown))}")
    datatypes: dict[str, DatatypeRule] = {}
    for name, rule in _object(data, "datatypes").items():
        if not isinstance(rule, dict) or rule.get("action") not in DATATYPE_ACTIONS:
            raise ProfileError(f"datatypes.{name}.action must be one of {', '.join(sorted(DATATYPE_ACTIONS))}")
        kept = frozenset(rule.get("elements") or ())
        if rule["action"] == "keep" and (not kept or any(element_info(name, e) is None for e in kept)):
            raise ProfileError(f"datatypes.{name}.elements must list elements of {name} to keep")
        if element_info(name, "id") is None:
            raise ProfileError(f"datatypes names an unknown datatype: {name}")
        datatypes[name] = DatatypeRule(rule["action"], kept)
    elements: dict[str, dict[str, str]] = {}
    for owner, rules in _object(data, "elements").items():
        if not isinstance(rules, dict):
            raise ProfileError(f"elements.{owner} must map element names to actions")
        for element, action in rules.items():
            if action not in ELEMENT_ACTIONS:
                raise ProfileError(f"elements.{owner}.{element} must be one of {', '.join(sorted(ELEMENT_ACTIONS))}")
            if owner != "*" and element_info(owner, element) is None:
                raise ProfileError(f"elements.{owner}.{element} is not an element of {owner}")
        elements[owner] = dict(rules)
    age = data.get("birth_date_removed_from_age")
    if age is not None and (not isinstance(age, int) or isinstance(age, bool) or age < 1):
        raise ProfileError("birth_date_removed_from_age must be a positive whole number of years")
    label = data.get("label")
    if label is not None and not (isinstance(label, dict) and isinstance(label.get("system"), str)
                                  and isinstance(label.get("code"), str)):
        raise ProfileError("label must be a Coding with system and code")
    role = data.get("role")
    if not isinstance(role, str) or not role:
        raise ProfileError("role must name the role that sees de-identified records")
    return Profile(role, exempt, datatypes, elements, _strings(data, "removed_extensions"), age, label,
                   _strings(data, "refused_search_parameters"), _strings(data, "year_only_search_parameters"))


def load_profile(path: str | Path | None = None) -> Profile:
    """The profile in a file (blocking: call it at start, never while serving), or the shipped one."""
    if path is None:
        return shipped_profile()
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ProfileError(f"cannot read the de-identification profile {path}: {exc.strerror}") from exc
    try:
        return parse_profile(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise ProfileError(f"the de-identification profile {path} is not JSON: {exc}") from exc


@cache
def shipped_profile() -> Profile:
    """The profile shipped with the server (consent/data/deidentify-profile.json)."""
    return parse_profile(orjson.loads(pkg.files("consent").joinpath("data", SHIPPED).read_bytes()))


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    found = data.get(key) or {}
    if not isinstance(found, dict):
        raise ProfileError(f"{key} must be a JSON object")
    return found


def _strings(data: dict[str, Any], key: str) -> frozenset[str]:
    found = data.get(key) or []
    if not isinstance(found, list) or not all(isinstance(s, str) for s in found):
        raise ProfileError(f"{key} must be a list of strings")
    return frozenset(found)
