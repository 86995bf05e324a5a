"""UCUM unit expressions: parsing, dimensions, conversion and one canonical form per dimension.

Covers the units clinics and devices send (metric prefixes, mass, volume, substance, pressure, time,
temperature, length, percent, counts, annotations) with UCUM's own grammar: `.` and `/` terms,
integer exponents, `10*n` factors, `{annotations}` and the special temperature units.
https://ucum.org/ucum (The Unified Code for Units of Measure)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

UCUM_SYSTEM = "http://unitsofmeasure.org"

# base dimensions: length, mass, time, temperature, amount of substance, luminous intensity, charge,
# and international units (arbitrary: only convertible to themselves)
BASES = ("m", "g", "s", "K", "mol", "cd", "C", "[iU]")
Dim = tuple[int, int, int, int, int, int, int, int]
_NONE: Dim = (0, 0, 0, 0, 0, 0, 0, 0)


@dataclass(frozen=True)
class Unit:
    """A parsed unit: a factor to the base units and a dimension vector; offsets for special units."""

    factor: float
    dim: Dim
    offset: float = 0.0  # only the temperature scales: base = (value + offset) * factor

    def times(self, other: Unit, power: int = 1) -> Unit:
        """This unit multiplied by another raised to a power."""
        dim = tuple(a + b * power for a, b in zip(self.dim, other.dim, strict=True))
        return Unit(self.factor * other.factor ** power, dim)  # type: ignore[arg-type]


def _d(**exps: int) -> Dim:
    vec = [0] * len(BASES)
    for name, exp in exps.items():
        vec[BASES.index({"mol": "mol", "iU": "[iU]"}.get(name, name))] = exp
    return tuple(vec)  # type: ignore[return-value]


PREFIXES = {"Y": 1e24, "Z": 1e21, "E": 1e18, "P": 1e15, "T": 1e12, "G": 1e9, "M": 1e6, "k": 1e3, "h": 1e2,
            "da": 1e1, "d": 1e-1, "c": 1e-2, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15,
            "a": 1e-18, "z": 1e-21, "y": 1e-24}

_PASCAL = Unit(1000.0, _d(m=-1, g=1, s=-2))  # kg/(m.s2) in grams

# atom -> (unit, metric: may take a prefix)
ATOMS: dict[str, tuple[Unit, bool]] = {
    "1": (Unit(1.0, _NONE), False),
    "m": (Unit(1.0, _d(m=1)), True),
    "g": (Unit(1.0, _d(g=1)), True),
    "s": (Unit(1.0, _d(s=1)), True),
    "K": (Unit(1.0, _d(K=1)), True),
    "mol": (Unit(1.0, _d(mol=1)), True),
    "cd": (Unit(1.0, _d(cd=1)), True),
    "C": (Unit(1.0, _d(C=1)), True),
    "[iU]": (Unit(1.0, _d(iU=1)), True),
    "[IU]": (Unit(1.0, _d(iU=1)), True),
    "L": (Unit(1e-3, _d(m=3)), True),
    "l": (Unit(1e-3, _d(m=3)), True),
    "min": (Unit(60.0, _d(s=1)), False),
    "h": (Unit(3600.0, _d(s=1)), False),
    "d": (Unit(86400.0, _d(s=1)), False),
    "wk": (Unit(604800.0, _d(s=1)), False),
    "mo": (Unit(2629800.0, _d(s=1)), False),
    "a": (Unit(31557600.0, _d(s=1)), False),
    "Pa": (_PASCAL, True),
    "bar": (Unit(1e8, _d(m=-1, g=1, s=-2)), True),
    "m[Hg]": (Unit(133322.0 * 1000.0, _d(m=-1, g=1, s=-2)), True),
    "m[H2O]": (Unit(9806.65 * 1000.0, _d(m=-1, g=1, s=-2)), True),
    "N": (Unit(1000.0, _d(m=1, g=1, s=-2)), True),
    "J": (Unit(1000.0, _d(m=2, g=1, s=-2)), True),
    "W": (Unit(1000.0, _d(m=2, g=1, s=-3)), True),
    "cal": (Unit(4184.0, _d(m=2, g=1, s=-2)), True),
    "[Cal]": (Unit(4184000.0, _d(m=2, g=1, s=-2)), False),
    "Hz": (Unit(1.0, _d(s=-1)), True),
    "U": (Unit(1e-6 / 60.0, _d(mol=1, s=-1)), True),
    "kat": (Unit(1.0, _d(mol=1, s=-1)), True),
    "eq": (Unit(1.0, _d(mol=1)), True),
    "osm": (Unit(1.0, _d(mol=1)), True),
    "%": (Unit(0.01, _NONE), False),
    "[ppm]": (Unit(1e-6, _NONE), False),
    "[in_i]": (Unit(0.0254, _d(m=1)), False),
    "[ft_i]": (Unit(0.3048, _d(m=1)), False),
    "[yd_i]": (Unit(0.9144, _d(m=1)), False),
    "[mi_i]": (Unit(1609.344, _d(m=1)), False),
    "[lb_av]": (Unit(453.59237, _d(g=1)), False),
    "[oz_av]": (Unit(28.349523125, _d(g=1)), False),
    "[stone_av]": (Unit(6350.29318, _d(g=1)), False),
    "[gal_us]": (Unit(3.785411784e-3, _d(m=3)), False),
    "[foz_us]": (Unit(2.95735295625e-5, _d(m=3)), False),
    "10*": (Unit(10.0, _NONE), False),
    "10^": (Unit(10.0, _NONE), False),
    "[pi]": (Unit(math.pi, _NONE), False),
}

# special units on an interval scale: only alone, never inside a term
SPECIAL: dict[str, Unit] = {
    "Cel": Unit(1.0, _d(K=1), offset=273.15),
    "[degF]": Unit(5.0 / 9.0, _d(K=1), offset=459.67),
}

_TOKEN = re.compile(r"\{[^{}]*\}|\(|\)|[./]|[^./(){}]+(?:\{[^{}]*\})?")
_EXPONENT = re.compile(r"^(.*?)([+-]?\d+)$")


class UcumError(ValueError):
    """A unit expression that is not valid UCUM (or uses a unit this table does not know)."""


@lru_cache(maxsize=4096)
def parse(expression: str) -> Unit:
    """The unit of a UCUM expression; UcumError when it cannot be parsed."""
    text = expression.strip()
    if not text:
        raise UcumError("empty unit")
    if text in SPECIAL:
        return SPECIAL[text]
    tokens = _TOKEN.findall(text)
    if "".join(tokens) != text:
        raise UcumError(f"'{expression}' is not a UCUM expression")
    unit, rest = _term(tokens, 0)
    if rest != len(tokens):
        raise UcumError(f"'{expression}' is not a UCUM expression")
    return unit


def _term(tokens: list[str], pos: int) -> tuple[Unit, int]:
    unit = Unit(1.0, _NONE)
    power = 1
    if pos < len(tokens) and tokens[pos] == "/":  # a leading '/': "/min"
        power, pos = -1, pos + 1
    while pos < len(tokens):
        token = tokens[pos]
        if token == "(":
            inner, pos = _term(tokens, pos + 1)
            if pos >= len(tokens) or tokens[pos] != ")":
                raise UcumError("unbalanced parentheses")
            pos += 1
            component = inner
        elif token in (".", "/", ")"):
            raise UcumError(f"unexpected '{token}'")
        else:
            component, pos = _component(token), pos + 1
        unit = unit.times(component, power)
        if pos < len(tokens) and tokens[pos] in (".", "/"):
            power = 1 if tokens[pos] == "." else -1
            pos += 1
            if pos >= len(tokens):
                raise UcumError("a term ends with an operator")
            continue
        break
    return unit, pos


def _component(token: str) -> Unit:
    body = re.sub(r"\{[^{}]*\}$", "", token)
    if not body:  # an annotation alone stands for 1
        return Unit(1.0, _NONE)
    if body.isdigit():
        return Unit(float(body), _NONE)
    exponent = 1
    found = _atom(body)
    if found is None:
        match = _EXPONENT.match(body)
        if match and match.group(1):
            found, exponent = _atom(match.group(1)), int(match.group(2))
    if found is None:
        raise UcumError(f"unknown unit '{body}'")
    return Unit(1.0, _NONE).times(found, exponent)


def _atom(text: str) -> Unit | None:
    if text in ATOMS:
        return ATOMS[text][0]
    for size in (2, 1):
        prefix, atom = text[:size], text[size:]
        if prefix in PREFIXES and atom in ATOMS and ATOMS[atom][1]:
            base = ATOMS[atom][0]
            return Unit(base.factor * PREFIXES[prefix], base.dim)
    return None


def is_valid(expression: str) -> bool:
    """True when the expression parses."""
    try:
        parse(expression)
    except UcumError:
        return False
    return True


def canonical_unit(dim: Dim) -> str:
    """A deterministic name of a dimension in base units ('g.m-3', 'K', '1')."""
    parts = [f"{base}{exp if exp != 1 else ''}" for base, exp in zip(BASES, dim, strict=True) if exp]
    return ".".join(parts) or "1"


def to_canonical(value: float, expression: str) -> tuple[float, str]:
    """The value in base units and the canonical unit name."""
    unit = parse(expression)
    return (value + unit.offset) * unit.factor, canonical_unit(unit.dim)


_MASS_PER_MOL: Dim = _d(g=1, mol=-1)


def convert(value: float, source: str, target: str, molar_mass: float | None = None) -> float:
    """Convert between commensurable units; mass and substance amounts convert through a molar mass (g/mol)."""
    a, b = parse(source), parse(target)
    base = (value + a.offset) * a.factor
    if a.dim != b.dim:
        shift = _molar_shift(a.dim, b.dim)
        if shift is None or molar_mass is None:
            raise UcumError(f"'{source}' cannot be converted to '{target}'")
        base *= molar_mass ** shift
    return base / b.factor - b.offset


def _molar_shift(source: Dim, target: Dim) -> int | None:
    """k such that target = source + k * (g - mol): the power of the molar mass between the two."""
    diff = [t - s for s, t in zip(source, target, strict=True)]
    k = diff[1]
    expected = [0] * len(BASES)
    expected[1], expected[4] = k, -k
    return k if k and diff == expected else None


def commensurable(source: str, target: str) -> bool:
    """True when the two units measure the same dimension."""
    try:
        return parse(source).dim == parse(target).dim
    except UcumError:
        return False
