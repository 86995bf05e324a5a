"""Validation messages in FHIR terms: the element, what was wrong, and the form the specification expects.

The R4B models report in pydantic's words ("Extra inputs are not permitted"); a client developer needs the
element's path and the expected JSON form. https://hl7.org/fhir/R4B/json.html and
https://hl7.org/fhir/R4B/datatypes.html#primitive
"""

from __future__ import annotations

import re
from typing import Any

# The written form of each primitive type a client most often gets wrong (datatypes.html#primitive).
PRIMITIVE_FORMS = {
    "boolean": "true or false, unquoted",
    "integer": "a whole number, unquoted (e.g. 2)",
    "positiveInt": "a whole number from 1, unquoted",
    "unsignedInt": "a whole number from 0, unquoted",
    "integer64": "a whole number in quotes",
    "decimal": "a number, unquoted (e.g. 6.3)",
    "string": "a JSON string in quotes",
    "date": "YYYY, YYYY-MM or YYYY-MM-DD (e.g. 1970-04-01)",
    "dateTime": "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz (a time needs seconds and a time zone, "
                "e.g. 2024-03-01T08:00:00Z)",
    "instant": "YYYY-MM-DDThh:mm:ss[.sss]+zz:zz, with seconds and a time zone (e.g. 2024-03-01T08:00:00Z)",
    "time": "hh:mm:ss (e.g. 08:30:00)",
    "id": "1 to 64 letters, digits, '-' and '.'",
}
_JSON_FORMS = {"boolean": "true or false, unquoted", "integer": "a whole number, unquoted",
               "number": "a number, unquoted", "string": "a JSON string in quotes"}
_REGEX_TYPE = re.compile(r"(\w+) value string does not match spec regex")
_TYPE_NAMES = {"Date": "date", "DateTime": "dateTime", "Instant": "instant", "Time": "time"}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def wrong_kind(where: str, value: Any, fhir_type: str, json_kind: str) -> str:
    """A primitive written as the wrong JSON kind ("yes" for a boolean, "5" for a decimal)."""
    form = PRIMITIVE_FORMS.get(fhir_type) or _JSON_FORMS.get(json_kind, json_kind)
    return f"{where}: {_show(value)} is not a valid FHIR {fhir_type}; write {form}"


def control_characters(where: str, value: str, fhir_type: str) -> str:
    """A string holding control characters the FHIR string rule forbids."""
    return f"{where}: {_show(value)} does not match the FHIR {fhir_type} rule: no control characters but tab, CR and LF"


def _parent(where: str) -> str:
    return where.rpartition(".")[0] or where


def model_message(error: dict[str, Any], where: str) -> str:
    """One model validation error (a pydantic error dict) in FHIR terms, naming the element at `where`."""
    kind, value, context = error.get("type", ""), error.get("input"), error.get("ctx") or {}
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return (f"{where} is not an element of {_parent(where)}: check its spelling and case "
                f"(FHIR element names are camelCase, e.g. birthDate)")
    if kind == "missing":
        return f"{where} is required (cardinality 1..) but absent"
    if kind == "list_type":
        return f"{where} repeats (cardinality ..*): write it as a JSON array, e.g. [{{...}}], even for one value"
    if kind in ("dict_type", "model_type", "json_invalid", "model_validation_format"):
        name = context.get("model_class")
        return f"{where} must be a JSON object{f' (a {name})' if name else ''}, not {_show(value)}"
    if kind == "string_type":
        return f"{where}: {_show(value)} is not a FHIR string; write {PRIMITIVE_FORMS['string']}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{where}: {_show(value)} is not a FHIR integer; write {PRIMITIVE_FORMS['integer']}"
    if kind in ("bool_type", "bool_parsing"):
        return f"{where}: {_show(value)} is not a FHIR boolean; write {PRIMITIVE_FORMS['boolean']}"
    if kind in ("float_type", "float_parsing", "decimal_type", "decimal_parsing"):
        return f"{where}: {_show(value)} is not a FHIR decimal; write {PRIMITIVE_FORMS['decimal']}"
    if kind in ("greater_than_equal", "greater_than"):
        bound = context.get("ge", context.get("gt"))
        relation = "at least" if kind == "greater_than_equal" else "more than"
        return f"{where}: {_show(value)} is out of range; it must be {relation} {bound}"
    if kind == "string_pattern_mismatch":
        if where.endswith(".id"):
            return f"{where}: {_show(value)} is not a FHIR id; write {PRIMITIVE_FORMS['id']}"
        return f"{where}: {_show(value)} does not have the form the element's type requires"
    found = _REGEX_TYPE.search(message)
    if found:
        fhir_type = _TYPE_NAMES.get(found.group(1), found.group(1)[:1].lower() + found.group(1)[1:])
        form = PRIMITIVE_FORMS.get(fhir_type, f"the FHIR {fhir_type} form")
        return f"{where}: {_show(value)} is not a valid FHIR {fhir_type}; write {form}"
    return f"{where}: {message}"
