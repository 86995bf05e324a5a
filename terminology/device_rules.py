"""Device data quality from ObservationDefinitions: accepted UCUM units per code and interpretation from ranges.

The rules are data: one stored ObservationDefinition per code (shipped defaults, editable through the API),
with its unit, the permitted units (extension), the molar mass of the analyte (extension), the reference
range and the critical zones. https://hl7.org/fhir/R4B/observationdefinition.html
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from resources.errors import Unprocessable
from resources.store.protocol import Store, Write, every
from terminology import ucum

EXT = "http://careloop.health/fhir/StructureDefinition/"
PERMITTED_UNIT = EXT + "permitted-unit"
MOLAR_MASS = EXT + "molar-mass"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_DISPLAY = {"N": "Normal", "H": "High", "L": "Low", "HH": "Critical high", "LL": "Critical low"}
_SEVERITY = {"N": 0, "H": 1, "L": 1, "HH": 2, "LL": 2}
_MOLAR_PARAMS = ("value-quantity", "combo-value-quantity")


@dataclass(frozen=True)
class Zone:
    """An inclusive interval; a missing bound is open."""

    low: float | None
    high: float | None

    def holds(self, value: float) -> bool:
        """True when value lies in the interval."""
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


@dataclass(frozen=True)
class ReadingRule:
    """What one ObservationDefinition says about readings of its code."""

    definition_id: str
    system: str
    code: str
    display: str
    unit: str
    permitted: tuple[str, ...]
    normal: Zone | None
    critical: tuple[Zone, ...]
    molar_mass: float | None

    def interpret(self, value: float, unit: str) -> str | None:
        """N, H, L, HH or LL for a value in a permitted unit; None without a reference range."""
        try:
            converted = ucum.convert(value, unit, self.unit, self.molar_mass)
        except ucum.UcumError:
            return None
        for zone in self.critical:
            if zone.holds(converted):
                below = self.normal is not None and self.normal.low is not None and converted < self.normal.low
                return "LL" if below or (zone.low is None and zone.high is not None) else "HH"
        if self.normal is None:
            return None
        if self.normal.low is not None and converted < self.normal.low:
            return "L"
        if self.normal.high is not None and converted > self.normal.high:
            return "H"
        return "N"


def _value(quantity: Any) -> float | None:
    value = quantity.get("value") if isinstance(quantity, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def rule_of(definition_id: str, definition: dict[str, Any]) -> ReadingRule | None:
    """The rule of an ObservationDefinition with a coded Quantity reading, None for others."""
    coding = next((c for c in (definition.get("code") or {}).get("coding") or []
                   if isinstance(c, dict) and c.get("system") and c.get("code")), None)
    units = [c.get("code") for c in (definition.get("quantitativeDetails") or {}).get("unit", {}).get("coding", [])
             if isinstance(c, dict) and c.get("code")]
    if coding is None or not units:
        return None
    permitted = [e["valueCoding"]["code"] for e in definition.get("extension") or []
                 if e.get("url") == PERMITTED_UNIT and isinstance(e.get("valueCoding"), dict)
                 and e["valueCoding"].get("code")]
    molar = next((_value(e.get("valueQuantity")) for e in definition.get("extension") or []
                  if e.get("url") == MOLAR_MASS), None)
    normal: Zone | None = None
    critical: list[Zone] = []
    for interval in definition.get("qualifiedInterval") or []:
        bounds = interval.get("range") or {}
        zone = Zone(_value(bounds.get("low")), _value(bounds.get("high")))
        if interval.get("category") == "reference" and normal is None and not interval.get("appliesTo"):
            normal = zone
        elif interval.get("category") == "critical":
            critical.append(zone)
    return ReadingRule(definition_id, coding["system"], coding["code"], coding.get("display") or coding["code"],
                       units[0], tuple(dict.fromkeys(permitted or units)), normal, tuple(critical), molar)


class DeviceRules:
    """The reading rules by code, kept current from committed ObservationDefinition writes."""

    def __init__(self) -> None:
        self._by_id: dict[str, ReadingRule] = {}
        self._by_code: dict[tuple[str, str], ReadingRule] = {}

    async def load(self, store: Store) -> None:
        """Read every stored ObservationDefinition."""
        async for found in every(store, "ObservationDefinition"):
            self._put(found.id, orjson.loads(found.body or b"{}"))

    def on_commit(self, writes: list[Write]) -> None:
        """Follow created, changed and deleted ObservationDefinitions."""
        for write in writes:
            if write.type != "ObservationDefinition":
                continue
            if write.action == "delete" or write.body is None:
                self._drop(write.id)
            else:
                self._put(write.id, orjson.loads(write.body))

    def _put(self, id_: str, definition: dict[str, Any]) -> None:
        self._drop(id_)
        rule = rule_of(id_, definition)
        if rule is not None:
            self._by_id[id_] = rule
            self._by_code[(rule.system, rule.code)] = rule

    def _drop(self, id_: str) -> None:
        old = self._by_id.pop(id_, None)
        if old is not None and self._by_code.get((old.system, old.code)) is old:
            del self._by_code[(old.system, old.code)]

    def rule_for(self, concept: Any) -> ReadingRule | None:
        """The rule of the first coding of a CodeableConcept that has one."""
        for coding in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
            if isinstance(coding, dict):
                rule = self._by_code.get((coding.get("system"), coding.get("code")))
                if rule is not None:
                    return rule
        return None

    # -- the write hook --------------------------------------------------------------------------
    def check(self, resource_type: str, resource: dict[str, Any]) -> None:
        """Refuse readings in units their code does not accept (422); fill a missing interpretation."""
        if resource_type != "Observation" or not self._by_code:
            return
        worst: str | None = None
        components = resource.get("component")
        if isinstance(components, list):
            filled = []
            for index, component in enumerate(components):
                if isinstance(component, dict):
                    component = dict(component)
                    flag = self._reading(component, f"Observation.component[{index}]")
                    worst = _worse(worst, flag)
                filled.append(component)
            resource["component"] = filled
        flag = self._reading(resource, "Observation")
        if not resource.get("interpretation") and (flag or worst):
            code = flag or worst
            assert code is not None
            resource["interpretation"] = [_concept(code)]

    def _reading(self, element: dict[str, Any], path: str) -> str | None:
        rule = self.rule_for(element.get("code"))
        if rule is None:
            return None
        quantity = element.get("valueQuantity")
        others = [k for k in element if k.startswith("value") and k != "valueQuantity"]
        if quantity is None:
            if others:
                raise Unprocessable(f"{path}.code {rule.system}#{rule.code} ({rule.display}) takes a Quantity "
                                    f"value, not {others[0]}", code="business-rule",
                                    expression=(f"{path}.{others[0]}",))
            return None
        unit, system = quantity.get("code"), quantity.get("system")
        if system != ucum.UCUM_SYSTEM or unit not in rule.permitted:
            got = f"'{unit}'" if unit else "no unit code"
            raise Unprocessable(f"{path}.valueQuantity of {rule.system}#{rule.code} ({rule.display}) must carry one "
                                f"of the UCUM units {', '.join(rule.permitted)} (system {ucum.UCUM_SYSTEM}); got "
                                f"{got}{'' if system == ucum.UCUM_SYSTEM else ' with system ' + str(system)}",
                                code="business-rule", expression=(f"{path}.valueQuantity",))
        value = _value(quantity)
        flag = rule.interpret(value, unit) if value is not None else None
        if flag is not None and path != "Observation" and not element.get("interpretation"):
            element["interpretation"] = [_concept(flag)]
        return flag

    # -- unit-normalised search index --------------------------------------------------------------
    def canonical_quantities(self, resource_type: str, resource: dict[str, Any], param: str, system: str | None,
                             unit: str | None, value: float) -> list[tuple[str, float]]:
        """The quantity in its canonical UCUM unit, and for analytes with a molar mass in the other dimension."""
        if not unit or system not in (None, ucum.UCUM_SYSTEM):
            return []
        try:
            parsed = ucum.parse(unit)
        except ucum.UcumError:
            return []
        base = (value + parsed.offset) * parsed.factor
        out = [(ucum.canonical_unit(parsed.dim), base)]
        if resource_type == "Observation" and param in _MOLAR_PARAMS:
            rule = self.rule_for(resource.get("code"))
            if rule is not None and rule.molar_mass:
                dim = list(parsed.dim)
                grams, moles = dim[1], dim[4]
                if (grams, moles) == (1, 0):
                    dim[1], dim[4] = 0, 1
                    out.append((ucum.canonical_unit(tuple(dim)), base / rule.molar_mass))  # type: ignore[arg-type]
                elif (grams, moles) == (0, 1):
                    dim[1], dim[4] = 1, 0
                    out.append((ucum.canonical_unit(tuple(dim)), base * rule.molar_mass))  # type: ignore[arg-type]
        return out


def canonical_range(unit: str, low: float, high: float) -> tuple[str, float, float] | None:
    """A search range in a UCUM unit converted to the canonical unit of its dimension."""
    try:
        parsed = ucum.parse(unit)
    except ucum.UcumError:
        return None
    return (ucum.canonical_unit(parsed.dim), (low + parsed.offset) * parsed.factor,
            (high + parsed.offset) * parsed.factor)


def _worse(current: str | None, new: str | None) -> str | None:
    if new is None:
        return current
    if current is None or _SEVERITY[new] > _SEVERITY[current]:
        return new
    return current


def _concept(code: str) -> dict[str, Any]:
    return {"coding": [{"system": INTERPRETATION, "code": code, "display": _DISPLAY[code]}]}
