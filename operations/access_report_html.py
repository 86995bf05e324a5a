"""The $access-report as a printable HTML page: server-rendered, its own few styles, no script.

Every value comes from the audit trail, which keeps what clients sent (queries, reasons, identifiers), so
each one is escaped where it is written. https://html.spec.whatwg.org/multipage/syntax.html#escapingString
"""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body { font: 11pt/1.4 system-ui, sans-serif; margin: 2em; color: #111; }
h1 { font-size: 16pt; margin-bottom: 0.2em; }
h2 { font-size: 13pt; margin: 1.5em 0 0.3em; border-bottom: 1px solid #999; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.4em; text-align: left; vertical-align: top; }
th { background: #eee; }
tr.btg td { background: #fde8e8; }
.meta { color: #444; }
@media print { body { margin: 0; } h2 { break-after: avoid; } tr { break-inside: avoid; } }
"""
_COLUMNS = ("When", "Action", "Data", "Purpose", "Consent", "Decision", "Break-glass", "Outcome", "Request")


def _parts(parameter: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [p for p in parameter.get("part") or parameter.get("parameter") or [] if p.get("name") == name]


def _value(parameter: dict[str, Any] | None) -> Any:
    if parameter is None:
        return None
    return next((v for k, v in parameter.items() if k.startswith("value")), None)


def _one(parameter: dict[str, Any], name: str) -> Any:
    found = _parts(parameter, name)
    return _value(found[0]) if found else None


def _ref(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    ident = value.get("identifier") or {}
    return str(value.get("reference") or ident.get("value") or value.get("display") or "")


def _coding(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    return str(value.get("display") or value.get("code") or "")


def _cell(items: list[str]) -> str:
    return "<br>".join(escape(item) for item in items if item)


def _row(access: dict[str, Any]) -> str:
    action = " ".join(x for x in (_one(access, "action") or "", _coding(_one(access, "interaction"))) if x)
    data = [_ref(_value(p)) for p in _parts(access, "what")]
    query = _one(access, "query")
    if query:
        data.append(f"query: {query}")
    btg = bool(_one(access, "break-glass"))
    reason = _one(access, "reason") or ""
    cells = [_cell([_one(access, "when") or ""]), _cell([action]), _cell(data),
             _cell([_coding(_value(p)) for p in _parts(access, "purpose")]),
             _cell([_ref(_value(p)) for p in _parts(access, "consent")]), _cell([_one(access, "decision") or ""]),
             _cell(["yes: " + reason if btg else ""]),
             _cell([_outcome(_one(access, "outcome"), "" if btg else reason)]),
             _cell([_one(access, "request") or ""])]
    opening = '<tr class="btg">' if btg else "<tr>"
    return opening + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _outcome(code: Any, reason: str) -> str:
    label = {"0": "success", "4": "refused", "8": "failed", "12": "failed (major)"}.get(str(code), str(code or ""))
    return f"{label}: {reason}" if reason and label != "success" else label


def _section(accessor: dict[str, Any]) -> str:
    who = _ref(_one(accessor, "who"))
    clients = [str(_value(p)) for p in _parts(accessor, "client")]
    roles = [str(_value(p)) for p in _parts(accessor, "role")]
    details = "; ".join(x for x in (("via " + ", ".join(clients)) if clients else "",
                                    ("role " + ", ".join(roles)) if roles else "",
                                    f"{_one(accessor, 'count')} accesses") if x)
    head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
    rows = "".join(_row(a) for a in _parts(accessor, "access"))
    return (f"<section><h2>{escape(who)}</h2><p class=\"meta\">{escape(details)}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></section>")


def render(report: dict[str, Any]) -> str:
    """The page of one report (a Parameters resource made by access_report.run)."""
    patient = _ref(_one(report, "patient"))
    window = f"{_one(report, 'start') or 'the beginning'} to {_one(report, 'end') or 'now'}"
    accessors = _parts(report, "accessor")
    body = "".join(_section(a) for a in accessors) or "<p>No access to this patient's data was recorded.</p>"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Access report: {escape(patient)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>Access report for {escape(patient)}</h1>"
            f"<p class=\"meta\">From {escape(window)}. {escape(str(_one(report, 'events')))} audit events, "
            f"{len(accessors)} accessors. Generated {escape(str(_one(report, 'generated')))}.</p>"
            f"{body}</body></html>")
