"""Build resources/data/elements.json and resources/data/resource-types.json (run by hand, not at runtime).

Usage: python -m tools.element_tables

elements.json is read from the official R4B JSON schema (resources/data/fhir.schema.json): for every type and
backbone element, each element's cardinality (repeats or not) and type, and the JSON kind of each primitive.
resource-types.json lists the resource types and, from the R4B models, the elements marked isSummary. The
serving process reads these small tables instead of compiling the schema or importing the models.
https://hl7.org/fhir/R4B/json.html#schema
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

DATA = Path(__file__).parent.parent / "resources" / "data"

# the JSON kind a primitive's value must have (json.html#primitive); integers are stricter than the schema,
# whose "number" lets 2.0 through where FHIR's lexical rule for integer does not
_KINDS = {"boolean": "boolean", "integer": "integer", "positiveInt": "integer", "unsignedInt": "integer",
          "decimal": "number"}


def _target(prop: dict[str, Any], inline: dict[tuple[str, str], str]) -> tuple[bool, str]:
    repeats = prop.get("type") == "array"
    item = prop.get("items", {}) if repeats else prop
    ref = item.get("$ref")
    if ref:
        return repeats, ref.rsplit("/", 1)[-1]
    if "enum" in item:
        return repeats, "code"  # an inline required-binding code
    if (item.get("type"), item.get("pattern")) in inline:  # a primitive spelt out in place (Extension.value[x])
        return repeats, inline[item["type"], item["pattern"]]
    if item.get("type") == "string":
        return repeats, "base64Binary"  # the one primitive whose definition has no pattern but whose uses do
    raise ValueError(f"unexpected property shape {prop}")


def element_table(schema: dict[str, Any]) -> dict[str, Any]:
    """The elements table of a FHIR JSON schema."""
    definitions: dict[str, Any] = schema["definitions"]
    primitives = {name: _KINDS.get(name, "string") for name, definition in definitions.items()
                  if "properties" not in definition and name != "ResourceList"}
    inline = {(definitions[name].get("type"), definitions[name].get("pattern")): name for name in sorted(primitives)}
    elements = {name: {prop: [int(repeats), kind] for prop, value in definition["properties"].items()
                       if "const" not in value for repeats, kind in [_target(value, inline)]}
                for name, definition in definitions.items() if "properties" in definition}
    return {"primitives": primitives, "elements": elements}


def summary_table(resource_types: list[str]) -> dict[str, list[str]]:
    """JSON names of the elements marked isSummary, per resource type (choice elements by each typed name)."""
    from fhir.resources.R4B import get_fhir_model_class

    out: dict[str, list[str]] = {}
    for kind in resource_types:
        names = {"resourceType", "id", "meta"}
        for name, info in get_fhir_model_class(kind).model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get("summary_element_property"):
                names.add(info.alias or name)
                names.add("_" + (info.alias or name))
        out[kind] = sorted(names)
    return out


def main() -> None:
    """Write both tables."""
    schema = orjson.loads((DATA / "fhir.schema.json").read_bytes())
    kinds = sorted(schema["discriminator"]["mapping"])
    (DATA / "elements.json").write_bytes(orjson.dumps(element_table(schema), option=orjson.OPT_SORT_KEYS))
    (DATA / "resource-types.json").write_bytes(orjson.dumps({"resourceTypes": kinds, "summary": summary_table(kinds)},
                                                           option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


if __name__ == "__main__":
    main()
