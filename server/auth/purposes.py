"""Purpose of use in tokens: `__pou/<code>` scopes of v3-ActReason, a client's registered purposes, break-glass.

https://terminology.hl7.org/ValueSet-v3-PurposeOfUse.html, https://profiles.ihe.net/ITI/IUA/index.html
"""

from __future__ import annotations

from collections.abc import Iterable

PREFIX = "__pou/"
SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
BREAK_GLASS = "BTG"
DEFAULT = ("TREAT",)  # what a client registered without --purpose may ask for and gets by default
REASON_MAX = 500
# the v3 PurposeOfUse value set (descendants of _PurposeOfUse in v3-ActReason)
KNOWN = frozenset({
    "BTG", "CLINTRL", "COC", "ERTREAT", "ETREAT", "POPHLTH", "TREAT",
    "CAREMGT", "DONAT", "FRAUD", "GOV", "HACCRED", "HCOMPL", "HDECD", "HDIRECT", "HDM", "HLEGAL", "HOPERAT",
    "HOUTCOMS", "HPRGRP", "HQUALIMP", "HSYSADMIN", "HTEST", "LABELING", "MEMADMIN", "METAMGT", "MILCDM",
    "PATADMIN", "PATSFTY", "PERFMSR", "RECORDMGT", "SYSDEV", "TRAIN",
    "CLMATTCH", "COVAUTH", "COVERAGE", "ELIGDTRM", "ELIGVER", "ENROLLM", "HPAYMT", "MILDCRG", "REMITADV",
    "BIORCH", "CLINTRCH", "CLINTRCHNPC", "CLINTRCHPC", "DSRCH", "HRESCH", "POARCH", "PRECLINTRCH", "TRANSRCH",
    "HMARKT", "FAMRQT", "PATRQT", "PWATRNY", "SUPNWK", "DISASTER", "PUBHLTH", "THREAT",
})


class PurposeError(ValueError):
    """A purpose the request may not have: unknown, or not registered for the client (answered invalid_scope)."""


def split(scope: str) -> tuple[list[str], list[str]]:
    """The scope's other items and the purpose codes its `__pou/` items ask for, each in request order."""
    rest: list[str] = []
    codes: list[str] = []
    for item in scope.split():
        if item.startswith(PREFIX):
            codes.append(item[len(PREFIX):])
        else:
            rest.append(item)
    return rest, list(dict.fromkeys(codes))


def check_registration(codes: Iterable[str]) -> tuple[str, ...]:
    """Purposes a client or `clients add --purpose` may register: known codes, BTG only through --break-glass."""
    out = tuple(dict.fromkeys(codes))
    for code in out:
        if code not in KNOWN:
            raise PurposeError(f"'{code}' is not a v3-ActReason purpose of use")
        if code == BREAK_GLASS:
            raise PurposeError("break-glass (BTG) is not a default purpose: register the client with --break-glass")
    return out


def choose(requested: Iterable[str], registered: Iterable[str], break_glass: bool) -> tuple[str, ...]:
    """The purposes a token gets: those requested, each allowed to the client; none requested: the registered."""
    asked = tuple(dict.fromkeys(requested))
    allowed = set(registered) | ({BREAK_GLASS} if break_glass else set())
    for code in asked:
        if code not in KNOWN:
            raise PurposeError(f"'{PREFIX}{code}' is not a v3-ActReason purpose of use")
        if code not in allowed:
            raise PurposeError(f"This client is not registered for the purpose '{PREFIX}{code}'")
    return asked or tuple(registered)


def check_reason(reason: str | None) -> str:
    """A break-glass reason: required, 1 to 500 characters after trimming (ValueError otherwise)."""
    text = (reason or "").strip()
    if not text:
        raise ValueError("Break-glass (__pou/BTG) needs a 'btg_reason' parameter saying why")
    if len(text) > REASON_MAX:
        raise ValueError(f"'btg_reason' may be at most {REASON_MAX} characters")
    return text


def iua_extension(purposes: tuple[str, ...]) -> dict[str, object]:
    """The IHE IUA JWT extension carrying the (first) purpose of use as a Coding."""
    if not purposes:
        return {}
    return {"ihe_iua": {"purpose_of_use": {"system": SYSTEM, "code": purposes[0]}}}
