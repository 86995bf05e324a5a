"""Two of fhir_core's per-element model checks, in equivalent forms that remember what each class needs.

fhir_core 1.1 runs `reject_null_complex_elements` before every model and every nested element is validated,
and each run asks of every field of the class whether it is a list of a complex type: a quarter of the time
of validating a Synthea resource (0.75 ms on a slow spell of this machine). The answer never changes for a
class, so this form keeps it per class and tests only those fields; its errors are built exactly as
fhir_core builds them. Likewise its after-construction check runs two tests (required primitives, one value per
choice element) that return at once for a class that has neither, as most elements (Coding, Reference,
Period...) have not: here such a class skips the calls (a fifth of validating a resource). A test compares
both forms with fhir_core's own on every element of every shipped example. Pydantic binds a model's
validators when the class is created, so both must be in place before the R4B models are imported.
https://hl7.org/fhir/R4B/json.html#null
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.utils import is_list_type, is_primitive_type
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

NAME = "reject_null_complex_elements"
AFTER = "validate_after_model_construction"
# the fhir_core releases whose check this one reproduces (fhirabstractmodel.py); any other keeps its own
KNOWN = "1.1."
ORIGINAL: Any = FHIRAbstractModel.__dict__.get(NAME)  # fhir_core's own, kept for comparison
ORIGINAL_AFTER: Any = FHIRAbstractModel.__dict__.get(AFTER)
_lists: dict[type, tuple[tuple[str, str | None], ...]] = {}
_after: dict[type, tuple[bool, bool]] = {}


def _complex_lists(cls: Any) -> tuple[tuple[str, str | None], ...]:
    found = _lists.get(cls)
    if found is None:  # fhir_core's own tests, asked once per class
        found = tuple((name, field.alias) for name, field in cls.model_fields.items()
                      if is_list_type(field) and not is_primitive_type(field) and not name.endswith("__ext"))
        _lists[cls] = found
    return found


def reject_null_complex_elements(cls: Any, data: Any) -> Any:
    """Refuse a null inside a list of a complex type, as fhir_core does; primitive lists keep their nulls."""
    if not isinstance(data, dict):
        return data
    errors: list[InitErrorDetails] = []
    for name, alias in _complex_lists(cls):
        key = alias if alias and alias in data else name
        value = data.get(key)
        # `None in value` (C, identity first) finds no null in nearly every list; the exact test confirms one
        if isinstance(value, list) and None in value and any(item is None for item in value):
            errors.append({"type": PydanticCustomError("list_type", "None is not allowed as an element of {field}",
                                                       {"field": key}),
                           "loc": (key,), "input": value})
    if errors:
        raise ValidationError.from_exception_data(cls.__name__, errors)
    return data


def validate_after_model_construction(self: Any) -> Any:
    """fhir_core's checks of a built element (required primitives, then choices), made where the class has any."""
    needs = _after.get(self.__class__)
    if needs is None:  # the generated classes answer both with constants
        needs = (bool(self.get_required_fields()), bool(self.get_one_of_many_fields()))
        _after[self.__class__] = needs
    if needs[0]:
        self._validate_required_primitive_elements()
    if needs[1]:
        self._validate_one_of_many()
    return self


def install() -> bool:
    """Put both checks in place of fhir_core's, before the R4B models exist; False where they do not apply."""
    current, after = FHIRAbstractModel.__dict__.get(NAME), FHIRAbstractModel.__dict__.get(AFTER)
    if getattr(current, "__func__", None) is reject_null_complex_elements:
        return True
    try:
        known = version("fhir-core").startswith(KNOWN)
    except PackageNotFoundError:
        known = False
    if not known or not isinstance(current, classmethod) or not callable(after):
        return False  # another fhir_core: its own checks stay
    setattr(FHIRAbstractModel, NAME, classmethod(reject_null_complex_elements))
    setattr(FHIRAbstractModel, AFTER, validate_after_model_construction)
    return True
