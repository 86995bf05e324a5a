"""Loading and checking a de-identification profile; what other actions (initials) do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consent.deidentify import deidentify
from consent.deidentify_profile import ProfileError, load_profile, parse_profile, shipped_profile

MINIMAL: dict[str, Any] = {"role": "trainee"}

BAD: list[tuple[str, Any, str]] = [
    ("not an object", [], "a JSON object"),
    ("no role", {}, "role must name"),
    ("unknown exempt type", {**MINIMAL, "exempt_types": ["Patiant"]}, "unknown resource types: Patiant"),
    ("unknown datatype action", {**MINIMAL, "datatypes": {"HumanName": {"action": "blur"}}},
     "datatypes.HumanName.action must be one of"),
    ("unknown datatype", {**MINIMAL, "datatypes": {"Humanname": {"action": "remove"}}}, "unknown datatype"),
    ("keep with no elements", {**MINIMAL, "datatypes": {"Address": {"action": "keep"}}},
     "datatypes.Address.elements"),
    ("keep of an element the type lacks", {**MINIMAL, "datatypes": {"Address": {"action": "keep",
                                                                                "elements": ["province"]}}},
     "datatypes.Address.elements"),
    ("unknown element action", {**MINIMAL, "elements": {"Patient": {"birthDate": "month"}}},
     "elements.Patient.birthDate must be one of"),
    ("element the type lacks", {**MINIMAL, "elements": {"Patient": {"birthdate": "year"}}},
     "elements.Patient.birthdate is not an element of Patient"),
    ("age not a number", {**MINIMAL, "birth_date_removed_from_age": "90"}, "birth_date_removed_from_age"),
    ("label without a code", {**MINIMAL, "label": {"system": "x"}}, "label must be a Coding"),
    ("search list of numbers", {**MINIMAL, "refused_search_parameters": [1]}, "must be a list of strings"),
]


@pytest.mark.parametrize(("data", "message"), [(c[1], c[2]) for c in BAD], ids=[c[0] for c in BAD])
def test_bad_profiles_are_refused_with_the_reason(data: Any, message: str) -> None:
    with pytest.raises(ProfileError, match=message.replace("(", r"\(")):
        parse_profile(data)


def test_shipped_profile_loads_and_names_the_trainee_role() -> None:
    profile = shipped_profile()
    assert profile.role == "trainee" and "Organization" in profile.exempt_types
    assert load_profile(None) is profile


def test_a_profile_file_replaces_the_shipped_one(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"role": "student", "datatypes": {"HumanName": {"action": "initials"}},
                                "elements": {"Patient": {"birthDate": "remove"}}}))
    profile = load_profile(path)
    given = {"resourceType": "Patient", "name": [{"use": "official", "family": "Alpha", "given": ["Alice", "B"],
                                                  "text": "Alice B Alpha"}], "birthDate": "1980-05-12",
             "telecom": [{"value": "555"}]}
    # a profile says everything that happens: no label, telecom kept, names to initials, birth date removed
    assert deidentify(given, profile, 2026) == {"resourceType": "Patient", "telecom": [{"value": "555"}], "name": [
        {"use": "official", "given": ["A.", "B."], "family": "A."}]}


def test_unreadable_or_malformed_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ProfileError, match="is not JSON"):
        load_profile(tmp_path / "bad.json")
