"""quick_init: frozen dataclasses built faster behave exactly as dataclasses builds them."""

from __future__ import annotations

import dataclasses
from dataclasses import FrozenInstanceError, dataclass, field

import pytest

from resources.records import quick_init
from resources.search.query import Filter, SearchQuery, TokenValue


@dataclass(frozen=True)
class _Plain:
    code: str
    values: tuple[int, ...]
    missing: bool | None = None
    chain: tuple[str, ...] = ()


@quick_init
@dataclass(frozen=True)
class _Quick:
    code: str
    values: tuple[int, ...]
    missing: bool | None = None
    chain: tuple[str, ...] = ()


def test_fields_defaults_and_keywords_are_dataclasses_own() -> None:
    for args, kwargs in [(("a", (1,)), {}), (("a",), {"values": (2,), "chain": ("x",)}), ((), {"code": "b",
                                                                                              "values": ()})]:
        quick, plain = _Quick(*args, **kwargs), _Plain(*args, **kwargs)
        assert dataclasses.astuple(quick) == dataclasses.astuple(plain)
        assert repr(quick).replace("_Quick", "_Plain") == repr(plain)


def test_equality_hashing_and_replace_still_work() -> None:
    one, two = _Quick("a", (1,)), _Quick("a", (1,))
    assert one == two and hash(one) == hash(two) and len({one, two}) == 1
    assert one != _Quick("a", (1,), missing=True)
    changed = dataclasses.replace(one, missing=False)
    assert changed.missing is False and one.missing is None


def test_instances_stay_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        _Quick("a", (1,)).code = "b"  # type: ignore[misc]


def test_missing_or_unknown_arguments_are_refused_like_dataclasses() -> None:
    with pytest.raises(TypeError):
        _Quick("a")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Quick("a", (), nope=1)  # type: ignore[call-arg]


def test_classes_it_cannot_build_faithfully_are_refused() -> None:
    with pytest.raises(TypeError):
        quick_init(dataclass(type("Open", (), {"__annotations__": {"a": "int"}})))
    with pytest.raises(TypeError):
        quick_init(dataclass(frozen=True)(type("Factory", (), {"__annotations__": {"a": "list[int]"},
                                                                  "a": field(default_factory=list)})))


def test_the_search_model_uses_it() -> None:
    query = SearchQuery("Observation", (Filter("code", "token", None, (TokenValue("2339-0"),)),))
    assert query == SearchQuery("Observation", (Filter("code", "token", None, (TokenValue("2339-0", None, True),)),),
                                count=50)
    assert query.filters[0].values[0].any_system is True and query.count == 50 and query.is_system is False
