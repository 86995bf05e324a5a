"""The crash trials' verdicts (bench/crash_checks.py) find each kind of fault they look for, and none in sound data.

https://hl7.org/fhir/R4B/http.html#transaction,
https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/notifications.html#event-numbering
"""

from __future__ import annotations

import pytest

from bench.crash_checks import bundle_faults, delivery_faults, escalation_faults, task_faults

WHOLE = ["Patient", "Encounter", "anchor"]


def begins(faults: list[str], expected: list[str]) -> bool:
    """The faults are the expected ones, in order (each sentence begins as expected; the rest lists examples)."""
    return len(faults) == len(expected) and all(f.startswith(e) for f, e in zip(faults, expected, strict=True))


@pytest.mark.parametrize(("sent", "acked", "found", "expected"), [
    (["a", "b"], {"a"}, {"a": WHOLE}, []),  # b was in flight and is absent: allowed
    (["a", "b"], {"a"}, {"a": WHOLE, "b": WHOLE}, []),  # b was in flight and committed: allowed
    (["a"], set(), {"a": ["Patient", "anchor"]}, ["bundle a is partly stored: 2 of 3"]),
    (["a"], {"a"}, {}, ["bundle a was acknowledged but nothing of it is stored"]),
    (["a"], {"a"}, {"a": [*WHOLE, "Patient"]}, ["bundle a is partly stored: 4 of 3"]),
])
def test_bundle_faults(sent: list[str], acked: set[str], found: dict[str, list[str]], expected: list[str]) -> None:
    assert begins(bundle_faults(sent, acked, found, size=3), expected)


@pytest.mark.parametrize(("committed", "acked", "notifications", "expected"), [
    (2, {"O/1", "O/2"}, [(1, "O/1", True), (2, "O/2", False), (2, "O/2", True)], []),
    (2, {"O/1"}, [(1, "O/1", True), (2, "O/2", True), (1, "O/1", True)], []),  # a resend after a crash: allowed
    (2, set(), [(1, "O/1", True), (2, "O/2", False)], ["1 committed events never accepted by the receiver: [2]"]),
    (2, set(), [(1, "O/1", True), (2, "O/2", True), (2, "O/3", True)],
     ["event number 2 was sent for different resources: ['O/2', 'O/3']"]),
    (1, set(), [(1, "O/1", True), (2, "O/2", True)],
     ["event numbers [2] were sent but the subscription has 1 events"]),
    (1, {"O/1", "O/9"}, [(1, "O/1", True)], ["1 acknowledged writes have no delivered event: ['O/9']"]),
])
def test_delivery_faults(committed: int, acked: set[str], notifications: list[tuple[int, str, bool]],
                         expected: list[str]) -> None:
    assert delivery_faults(committed, acked, notifications) == expected


@pytest.mark.parametrize(("observations", "acked", "tasks", "provenances", "expected"), [
    ({"O/1", "O/2"}, {"O/1"}, [("t1", "k1", "O/1"), ("t2", "k2", "O/2")], ["Task/t1", "Task/t2"], []),
    ({"O/1"}, {"O/1", "O/2"}, [("t1", "k1", "O/1")], ["Task/t1"], ["1 acknowledged triggers are not stored"]),
    ({"O/1"}, set(), [("t1", "k1", "O/1"), ("t2", "k1", "O/1")], ["Task/t1", "Task/t2"],
     ["1 pathway identifiers are held by more than one Task", "1 triggers have more than one Task"]),
    ({"O/1", "O/2"}, set(), [("t1", "k1", "O/1")], ["Task/t1"], ["1 triggers have no Task"]),
    ({"O/1"}, set(), [("t1", "k1", "O/1")], [], ["1 pathway Tasks have not exactly one Provenance"]),
    ({"O/1"}, set(), [("t1", "k1", "O/1")], ["Task/t1", "Task/t1"],
     ["1 pathway Tasks have not exactly one Provenance"]),
])
def test_task_faults(observations: set[str], acked: set[str], tasks: list[tuple[str, str, str]],
                     provenances: list[str], expected: list[str]) -> None:
    assert begins(task_faults(observations, acked, tasks, provenances), expected)


@pytest.mark.parametrize(("acked", "histories", "provenances", "expected"), [
    ({"t"}, {"t": [0, 1, 2, 2]}, {"t": [2, 3]}, []),  # two escalations, then marked exhausted
    ({"t", "u"}, {"t": [0, 1, 2, 2]}, {"t": [2, 3]}, ["1 acknowledged Tasks are not stored"]),
    (set(), {"t": [0, 1]}, {"t": [2]}, ["Task/t went through levels [0, 1], not 0 to 2 one at a time"]),
    (set(), {"t": [0, 2, 2]}, {"t": [2]}, ["Task/t went through levels [0, 2, 2], not 0 to 2 one at a time"]),
    (set(), {"t": [0, 1, 2, 3]}, {"t": [2, 3, 4]},
     ["Task/t went through levels [0, 1, 2, 3], not 0 to 2 one at a time"]),
    (set(), {"t": [0, 1, 2, 2]}, {"t": [2, 3, 3]}, ["Task/t: Provenances name versions [2, 3, 3]"]),
    (set(), {"t": [0, 1, 2, 2]}, {"t": [2]}, ["Task/t: Provenances name versions [2]"]),
])
def test_escalation_faults(acked: set[str], histories: dict[str, list[int]], provenances: dict[str, list[int]],
                           expected: list[str]) -> None:
    assert begins(escalation_faults(acked, histories, provenances, max_level=2), expected)
