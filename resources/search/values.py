"""Parsing of one search value by parameter type: prefixes, dates, numbers, quantities, tokens, references.

Pure functions. https://hl7.org/fhir/R4B/search.html#ptypes
"""

from __future__ import annotations

import re

from resources.errors import Invalid
from resources.search.dates import date_range
from resources.search.normalize import normalize_string
from resources.search.query import (
    PREFIXES,
    RangeValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    Value,
)
from resources.search.registry import SearchParam

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def split_values(raw: str) -> list[str]:
    # commas separate OR values; '\,' is a literal comma
    if "\\" not in raw:  # nearly every value has no escape: a plain split (the loop costs ~2 us a value)
        return raw.split(",")
    parts, current, escaped = [], "", False
    for ch in raw:
        if escaped:
            current += ch if ch in ",|$\\" else "\\" + ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


# What a prefixed value may look like, for messages that show the accepted forms (search.html#prefix)
_FORMS = {
    "date": "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][+zz:zz], e.g. ge2020-01-01",
    "number": "a decimal number such as 100 or 6.3e2, e.g. gt100",
}


def _not_a(kind: str, code: str, raw: str) -> Invalid:
    return Invalid(f"'{raw}' is not a {kind} for parameter '{code}': write an optional prefix "
                   f"({', '.join(PREFIXES)}) and then {_FORMS[kind]}", code="value", expression=(code,))


def split_prefix(code: str, raw: str, kind: str = "number") -> tuple[str, str]:
    if len(raw) > 2 and raw[:2] in PREFIXES and not raw[2].isalpha():
        return raw[:2], raw[2:]
    if raw[:2].isalpha() and raw[:2].islower() and len(raw) > 2:
        raise _not_a(kind, code, raw)  # 'yesterday' starts like a prefix but is no prefix and no value
    return "eq", raw


def token_value(code: str, raw: str) -> TokenValue:
    if "|" in raw:
        system, value = raw.split("|", 1)
        return TokenValue(code=value or None, system=system or None, any_system=False)
    return TokenValue(code=raw)


def date_value(code: str, raw: str) -> RangeValue:
    prefix, text = split_prefix(code, raw, "date")
    found = date_range(text)
    if found is None:
        raise _not_a("date", code, raw)
    return RangeValue(prefix, found[0], found[1])


def number_value(code: str, raw: str) -> RangeValue:
    prefix, text = split_prefix(code, raw)
    if not _NUMBER.fullmatch(text):
        raise _not_a("number", code, raw)
    value = float(text)
    mantissa = text.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(text.lower().split("e")[1]) if "e" in text.lower() else 0
    half = 0.5 * 10 ** (exponent - decimals)  # precision-implied range for eq (search.html#number)
    return RangeValue(prefix, value - half, value + half)


def quantity_value(code: str, raw: str) -> RangeValue:
    number, _, rest = raw.partition("|")
    value = number_value(code, number)
    system, _, unit = rest.partition("|") if rest else ("", "", "")
    return RangeValue(value.prefix, value.low, value.high, system=system or None, code=unit or None)


def reference_value(code: str, raw: str, param: SearchParam, modifier: str | None) -> ReferenceValue:
    if "://" in raw:
        parts = raw.rstrip("/").split("/")
        return ReferenceValue(parts[-2] if len(parts) > 3 else None, parts[-1], url=raw)
    parts = raw.split("/")
    if len(parts) == 2 and parts[0] and parts[1]:
        return ReferenceValue(parts[0], parts[1])
    if len(parts) == 1 and raw:
        target = modifier if modifier and modifier[0].isupper() else None
        if target is None and len(param.targets) == 1 and not raw.startswith("#") and ":" not in raw:
            target = param.targets[0]  # a bare id of a single-target parameter names its type
        return ReferenceValue(target, raw)
    raise Invalid(f"Invalid reference '{raw}' for parameter '{code}'", code="value", expression=(code,))


def parse_value(param: SearchParam, modifier: str | None, raw: str) -> Value:
    """One raw value parsed by its parameter's type."""
    kind = param.type
    if kind == "token" and modifier == "of-type":
        parts = raw.split("|")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise Invalid(f":of-type on '{param.code}' takes system|code|value, not '{raw}'", code="value",
                          expression=(param.code,))
        return TokenValue(code=f"{parts[1]}|{parts[2]}", system=parts[0] or None, any_system=not parts[0])
    if kind == "token":
        return token_value(param.code, raw)
    if kind == "string":
        return StringValue(raw, normalize_string(raw))
    if kind == "date":
        return date_value(param.code, raw)
    if kind == "number":
        return number_value(param.code, raw)
    if kind == "quantity":
        return quantity_value(param.code, raw)
    if kind == "reference":
        if modifier == "identifier":
            return token_value(param.code, raw)
        return reference_value(param.code, raw, param, modifier)
    if kind == "uri":
        return UriValue(raw)
    raise Invalid(f"Search on parameter '{param.code}' of type {kind} is not supported",
                  code="not-supported", expression=(param.code,))
