"""UCUM conversions checked by hand, and expressions that are not UCUM.

https://ucum.org/ucum
"""

from __future__ import annotations

import pytest

from terminology import ucum

GLUCOSE = 180.156  # g/mol


@pytest.mark.parametrize(("value", "source", "target", "expected", "molar"), [
    (100, "mg/dL", "mmol/L", 5.5508, GLUCOSE),  # 100 mg/dL = 1 g/L = 1/180.156 mol/L = 5.5508 mmol/L
    (7, "mmol/L", "mg/dL", 126.109, GLUCOSE),  # 7e-3 mol/L * 180.156 g/mol = 1.26109 g/L = 126.109 mg/dL
    (11, "mmol/L", "mg/dL", 198.172, GLUCOSE),
    (120, "mm[Hg]", "kPa", 15.99864, None),  # 1 mmHg = 133.322 Pa
    (1, "[lb_av]", "kg", 0.45359237, None),
    (154, "[lb_av]", "kg", 69.853225, None),
    (70, "kg", "[lb_av]", 154.3236, None),
    (37, "Cel", "[degF]", 98.6, None),  # F = C * 9/5 + 32
    (98.6, "[degF]", "Cel", 37.0, None),
    (0, "Cel", "K", 273.15, None),
    (95, "%", "1", 0.95, None),
    (180, "cm", "[in_i]", 70.8661, None),
    (72, "/min", "/h", 4320, None),
    (5, "10*9/L", "10*6/mL", 5, None),  # 5e9 per L = 5e6 per mL
    (1.5, "g/dL", "mg/mL", 15, None),
    (88, "umol/L", "mg/dL", 0.99546, 113.12),  # creatinine: 88e-6 mol/L * 113.12 g/mol = 9.95 mg/L
])
def test_conversion(value: float, source: str, target: str, expected: float, molar: float | None) -> None:
    assert ucum.convert(value, source, target, molar) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("expression", ["mg/dL", "mm[Hg]", "kg/m2", "{score}", "/min", "{beats}/min", "10*3/uL",
                                        "mmol/mol", "m2", "s-1", "%", "Cel", "[degF]", "ug/(kg.h)", "1", "[iU]/L"])
def test_valid_expressions(expression: str) -> None:
    assert ucum.is_valid(expression)


@pytest.mark.parametrize("expression", ["", "mmHg", "kilogram", "mg//dL", "(mg", "kg/", "Cel/s", "lbs", "mg dL"])
def test_invalid_expressions(expression: str) -> None:
    assert not ucum.is_valid(expression)


def test_mass_and_substance_need_a_molar_mass() -> None:
    with pytest.raises(ucum.UcumError):
        ucum.convert(100, "mg/dL", "mmol/L")
    with pytest.raises(ucum.UcumError):
        ucum.convert(1, "kg", "m")


def test_canonical_form_is_shared_by_commensurable_units() -> None:
    assert ucum.to_canonical(1, "kg")[1] == ucum.to_canonical(2.2, "[lb_av]")[1] == "g"
    value, unit = ucum.to_canonical(126, "mg/dL")
    assert (unit, value) == ("m-3.g", pytest.approx(1260.0))  # 126 mg/dL = 1.26 g/L = 1260 g/m3
    value, unit = ucum.to_canonical(37, "Cel")
    assert (unit, value) == ("K", pytest.approx(310.15))
    assert ucum.to_canonical(7, "mmol/L") == (pytest.approx(7.0), "m-3.mol")
