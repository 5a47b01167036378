"""Every PromQL expression we ship: rules and dashboard panels, ready to run in the lab.

A panel that silently shows "No data" is a bug nobody reports. The lab runs each of these
against the real Prometheus (and VictoriaMetrics) and checks it returns data; the unit
tests check each one parses. Grafana variables are replaced by values that match
everything (or by the values a caller passes), and Grafana's interval macros by fixed
durations, so the expressions are plain PromQL.

Dev tooling: reads the files under ``dashboards/`` in a source checkout and needs PyYAML
(the ``dev`` extra).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

DASHBOARDS_DIR = Path(__file__).resolve().parents[3] / "dashboards"

# Grafana's built-in interval macros, as fixed durations the lab's data can cover.
MACROS: Mapping[str, str] = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__interval_ms": "60000",
}
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")

_LABEL_VALUES = re.compile(r"label_values\((.+),\s*(\w+)\s*\)")

Kind = Literal["record", "alert", "panel", "variable"]


@dataclass(frozen=True, slots=True)
class Expression:
    kind: Kind
    source: str  # file name, relative to dashboards/
    name: str  # rule name, or "<panel title> [refId]", or the variable's name
    expr: str  # plain PromQL (variables substituted for panels)


def substitute(expr: str, values: Mapping[str, str] | None = None) -> str:
    """Replace ``$var``/``${var}`` with ``values[var]`` (default ``.+``) and the macros."""
    given = values or {}

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in given:
            return given[name]
        if name in MACROS:
            return MACROS[name]
        return ".+"

    return _VARIABLE.sub(one, expr)


def variable_references(text: str) -> set[str]:
    """Names of the Grafana variables ``text`` uses (macros excluded)."""
    return {m.group(1) or m.group(2) for m in _VARIABLE.finditer(text)} - set(MACROS)


def rule_expressions(rules_dir: Path | None = None) -> list[Expression]:
    import yaml  # dev extra; only the lab and tests call this

    base = rules_dir or DASHBOARDS_DIR / "prometheus"
    out: list[Expression] = []
    for path in sorted(base.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                kind: Kind = "record" if "record" in rule else "alert"
                out.append(Expression(kind, _relative(path), rule[kind], rule["expr"].strip()))
    return out


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(
    grafana_dir: Path | None = None, values: Mapping[str, str] | None = None
) -> list[Expression]:
    base = grafana_dir or DASHBOARDS_DIR / "grafana"
    out: list[Expression] = []
    for path in sorted(base.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in iter_panels(board):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    name = f"{panel['title']} [{target['refId']}]"
                    expr = substitute(target["expr"], values)
                    out.append(Expression("panel", _relative(path), name, expr))
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                expr = substitute(variable_promql(variable_query(var)), values)
                out.append(Expression("variable", _relative(path), var["name"], expr))
    return out


def variable_promql(query: str) -> str:
    """``label_values(selector, label)`` as the PromQL that yields the same values."""
    match = _LABEL_VALUES.fullmatch(query.strip())
    if match is None:
        return query
    selector, label = match.groups()
    return f"count by ({label}) ({selector})"


def all_expressions(values: Mapping[str, str] | None = None) -> list[Expression]:
    return rule_expressions() + dashboard_expressions(values=values)


def variable_query(var: Mapping[str, Any]) -> str:
    query = var["query"]
    return str(query["query"] if isinstance(query, Mapping) else query)


def _relative(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"
