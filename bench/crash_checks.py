"""The verdicts of the crash trials (bench/crash_trials.py), as pure functions of what a client read back.

Each returns the faults it finds, one sentence each; an empty list is a sound trial.
https://hl7.org/fhir/R4B/http.html#transaction,
https://build.fhir.org/ig/HL7/fhir-subscription-backport-ig/notifications.html#event-numbering
"""

from __future__ import annotations

from collections import Counter


def bundle_faults(sent: list[str], acked: set[str], found: dict[str, list[str]], size: int) -> list[str]:
    """Transaction bundles are all or nothing: each sent bundle has all `size` resources stored or none, and an
    acknowledged one all of them (`found`: bundle code -> the resources found carrying it)."""
    faults = []
    for code in sent:
        present = len(found.get(code, []))
        if present not in (0, size):
            faults.append(f"bundle {code} is partly stored: {present} of {size} ({sorted(found[code])})")
        elif code in acked and present == 0:
            faults.append(f"bundle {code} was acknowledged but nothing of it is stored")
    return faults


def delivery_faults(committed: int, acked: set[str], notifications: list[tuple[int, str, bool]]) -> list[str]:
    """Every committed event (numbers 1..committed) was accepted by the receiver at least once, one number always
    names the same event, no number beyond the committed count was sent, and every acknowledged write was the
    focus of an accepted event (`notifications`: event number, focus, accepted by the receiver)."""
    faults = []
    by_number: dict[int, set[str]] = {}
    for number, focus, _ in notifications:
        by_number.setdefault(number, set()).add(focus)
    faults.extend(f"event number {n} was sent for different resources: {sorted(f)}"
                  for n, f in sorted(by_number.items()) if len(f) > 1)
    beyond = sorted(n for n in by_number if n > committed)
    if beyond:
        faults.append(f"event numbers {beyond[:10]} were sent but the subscription has {committed} events")
    accepted = {n for n, _, ok in notifications if ok}
    missing = sorted(set(range(1, committed + 1)) - accepted)
    if missing:
        faults.append(f"{len(missing)} committed events never accepted by the receiver: {missing[:10]}")
    delivered = {focus for _, focus, ok in notifications if ok}
    unsent = sorted(acked - delivered)
    if unsent:
        faults.append(f"{len(unsent)} acknowledged writes have no delivered event: {unsent[:5]}")
    return faults


def task_faults(observations: set[str], acked: set[str], tasks: list[tuple[str, str, str]],
                provenances: list[str]) -> list[str]:
    """Every acknowledged trigger is stored; every stored trigger has exactly one pathway Task; no identifier is
    held by two Tasks; each Task has one Provenance (`tasks`: id, identifier, focus; `provenances`: their targets
    as Task/id)."""
    faults = []
    lost = sorted(acked - observations)
    if lost:
        faults.append(f"{len(lost)} acknowledged triggers are not stored: {lost[:5]}")
    twice = sorted(i for i, n in Counter(identifier for _, identifier, _ in tasks).items() if n > 1)
    if twice:
        faults.append(f"{len(twice)} pathway identifiers are held by more than one Task: {twice[:5]}")
    per_focus = Counter(focus for _, _, focus in tasks)
    missed = sorted(o for o in observations if per_focus[o] == 0)
    if missed:
        faults.append(f"{len(missed)} triggers have no Task: {missed[:5]}")
    doubled = sorted(o for o in observations if per_focus[o] > 1)
    if doubled:
        faults.append(f"{len(doubled)} triggers have more than one Task: {doubled[:5]}")
    made = Counter(provenances)
    wrong = sorted(f"Task/{t}: {made[f'Task/{t}']}" for t, _, _ in tasks if made[f"Task/{t}"] != 1)
    if wrong:
        faults.append(f"{len(wrong)} pathway Tasks have not exactly one Provenance: {wrong[:5]}")
    return faults


def escalation_faults(acked: set[str], histories: dict[str, list[int]], provenances: dict[str, list[int]],
                      max_level: int) -> list[str]:
    """Every acknowledged Task is stored and was escalated once per level up to `max_level`, none skipped and none
    repeated, with one Provenance naming each escalated version (`histories`: Task id -> the escalation level of
    each version, oldest first; `provenances`: Task id -> the versions the Provenances name)."""
    faults = []
    lost = sorted(acked - set(histories))
    if lost:
        faults.append(f"{len(lost)} acknowledged Tasks are not stored: {lost[:5]}")
    for task, levels in sorted(histories.items()):
        raised = [v + 1 for v in range(1, len(levels)) if levels[v] != levels[v - 1]]
        steps = [levels[v] - levels[v - 1] for v in range(1, len(levels)) if levels[v] != levels[v - 1]]
        if not levels or levels[0] != 0 or any(s != 1 for s in steps) or levels[-1] != max_level:
            faults.append(f"Task/{task} went through levels {levels}, not 0 to {max_level} one at a time")
        named = provenances.get(task, [])
        if sorted(named) != raised:
            faults.append(f"Task/{task}: Provenances name versions {sorted(named)}, escalations made {raised}")
    return faults
