"""Comparable forms of patient demographics for $match: names (Chinese characters as pinyin), dates, phones.

https://hl7.org/fhir/R4B/patient-operation-match.html
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from typing import Any

from resources.search.normalize import normalize_string

_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_NOT_LETTER = re.compile(r"[^0-9a-z]")


@cache
def _pinyin() -> Any:
    # loading pypinyin's dictionary takes a moment: only servers that match names pay for it, once
    from pypinyin import Style, lazy_pinyin
    return lambda text: lazy_pinyin(text, style=Style.NORMAL, errors="default")


def has_han(text: str) -> bool:
    """True when the text holds Chinese characters."""
    return _HAN.search(text) is not None


@lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """One name part as plain lower-case letters: accents removed, Chinese characters as toneless pinyin."""
    if has_han(text):
        text = "".join(_pinyin()(text))
    return _NOT_LETTER.sub("", normalize_string(text))


def name_parts(name: dict[str, Any]) -> tuple[str, str] | None:
    """(family, given) of a HumanName, folded; from its text when it has no parts (Chinese: surname first)."""
    family = name.get("family") if isinstance(name.get("family"), str) else ""
    given = " ".join(g for g in name.get("given") or [] if isinstance(g, str))
    if not family and not given and isinstance(name.get("text"), str):
        text = name["text"].strip()
        if has_han(text):
            # a one-character surname is by far the most common; the swapped comparison covers the others
            family, given = text[:1], text[1:]
        else:
            words = text.split()
            family, given = (words[-1], " ".join(words[:-1])) if words else ("", "")
    parts = (fold(family), fold(given))
    return parts if any(parts) else None


def names_of(patient: dict[str, Any]) -> list[tuple[str, str]]:
    """Every name of a Patient, folded."""
    found = [name_parts(n) for n in patient.get("name") or [] if isinstance(n, dict)]
    return [n for n in found if n is not None]


def edit_distance(a: str, b: str, limit: int = 3) -> int:
    """Levenshtein distance with adjacent transpositions, stopped at `limit` (short strings only)."""
    if abs(len(a) - len(b)) >= limit:
        return limit
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
        if min(current) >= limit:
            return limit
    return min(previous[-1], limit)


def near(a: str, b: str) -> bool:
    """A typo apart: one edit, or two in a long word."""
    return edit_distance(a, b) <= (2 if min(len(a), len(b)) >= 8 else 1)


def swapped_date(date: str) -> str | None:
    """YYYY-DD-MM for YYYY-MM-DD when both could be a month (the day/month mix-up), else None."""
    if len(date) != 10 or date[4] != "-" or date[7] != "-":
        return None
    month, day = date[5:7], date[8:10]
    if month == day or not (day.isdigit() and 1 <= int(day) <= 12):
        return None
    return f"{date[:4]}-{day}-{month}"


def phone_digits(value: str) -> str:
    """A phone number's digits without the international prefix (+86, 0086) or a leading trunk 0."""
    digits = "".join(ch for ch in value if ch.isdigit())
    if value.strip().startswith("+") or digits.startswith("00"):
        digits = digits.lstrip("0")
        digits = digits[2:] if digits.startswith("86") and len(digits) == 13 else digits
    return digits.lstrip("0")


def telecoms_of(patient: dict[str, Any]) -> set[str]:
    """Every phone (as digits) and email (lower case) of a Patient."""
    found = set()
    for point in patient.get("telecom") or []:
        value = point.get("value") if isinstance(point, dict) else None
        if not isinstance(value, str) or not value.strip():
            continue
        if point.get("system") == "email" or "@" in value:
            found.add(value.strip().lower())
        elif len(phone_digits(value)) >= 6:
            found.add(phone_digits(value))
    return found


def addresses_of(patient: dict[str, Any]) -> list[tuple[str, str]]:
    """Every address as (lines with city, postal code), folded."""
    found = []
    for address in patient.get("address") or []:
        if not isinstance(address, dict):
            continue
        lines = " ".join(x for x in address.get("line") or [] if isinstance(x, str))
        city = address.get("city") if isinstance(address.get("city"), str) else ""
        postal = address.get("postalCode") if isinstance(address.get("postalCode"), str) else ""
        found.append((fold(f"{lines} {city}"), fold(postal)))
    return [a for a in found if any(a)]
