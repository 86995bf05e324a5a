"""Splitting a parameter's raw value into OR values, with '\\,' a literal comma.

https://hl7.org/fhir/R4B/search.html#escaping
"""

from __future__ import annotations

import pytest

from resources.search.values import split_values


@pytest.mark.parametrize(("raw", "values"), [
    ("", [""]),
    ("a", ["a"]),
    ("a,b", ["a", "b"]),
    (",", ["", ""]),
    ("a,,b", ["a", "", "b"]),
    ("http://loinc.org|2339-0,http://loinc.org|8867-4", ["http://loinc.org|2339-0", "http://loinc.org|8867-4"]),
    ("a\\,b,c", ["a,b", "c"]),
    ("x\\\\y", ["x\\y"]),
    ("a\\|b\\$c", ["a|b$c"]),
    ("a\\qb", ["a\\qb"]),
])
def test_values_split_on_unescaped_commas(raw: str, values: list[str]) -> None:
    assert split_values(raw) == values
