"""Grafana dashboards: importable as they stand, wired to ${datasource}, every expression valid.

A typo in a panel's PromQL or metric name shows up in Grafana only as "No data"; here it
fails the suite. Expressions are parsed by the real promtool (as recording rules in a
temporary file) where it is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from factoryctl.lab import expressions as ex
from factoryctl.telemetry import schema

GRAFANA_DIR = ex.DASHBOARDS_DIR / "grafana"
BOARDS = sorted(GRAFANA_DIR.glob("*.json"))
DS = {"type": "prometheus", "uid": "${datasource}"}
NATIVE = {v for k, v in vars(schema).items() if k.isupper() and str(v).startswith("factoryctl_")}
METRIC = re.compile(r"\b(factoryctl_[a-z0-9_]+|[a-z_]+:factoryctl_[a-z0-9_]+:[a-z0-9_]+)\b")


def _load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def _recorded() -> set[str]:
    return {e.name for e in ex.rule_expressions() if e.kind == "record"}


def test_there_are_the_three_dashboards() -> None:
    uids = {_load(p)["uid"] for p in BOARDS}
    assert {"factoryctl-overview", "factoryctl-node", "factoryctl-job"} <= uids


def test_uids_and_titles_are_unique_and_the_json_is_importable() -> None:
    boards = [_load(p) for p in BOARDS]
    uids = [b["uid"] for b in boards]
    titles = [b["title"] for b in boards]
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)
    for board in boards:
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board["uid"])
        assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
        assert board.get("id") is None  # an id from another Grafana would clash on import
        assert "__inputs" not in board  # the datasource is a variable, not an import input


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_template_variables(path: Path) -> None:
    variables = {v["name"]: v for v in _load(path)["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("node", "job", "user"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"] == DS
        assert ex.variable_promql(ex.variable_query(var)).startswith("count by (")


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_panels_use_the_datasource_variable_and_have_unique_ids(path: Path) -> None:
    board = _load(path)
    ids = [p["id"] for p in ex.iter_panels(board)]
    assert len(set(ids)) == len(ids)
    for panel in ex.iter_panels(board):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DS, panel["title"]
            assert target["expr"].strip(), panel["title"]


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_every_variable_used_is_defined(path: Path) -> None:
    board = _load(path)
    defined = {v["name"] for v in board["templating"]["list"]}
    used: set[str] = set()
    for panel in ex.iter_panels(board):
        used |= ex.variable_references(panel.get("title", ""))
        for target in panel.get("targets", []):
            used |= ex.variable_references(target["expr"])
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            used |= ex.variable_references(ex.variable_query(var))
        assert var.get("datasource", DS) == DS
    assert used - defined == set()


def test_every_metric_named_exists() -> None:
    """Names in panels and rules are our exporter's (schema.py) or our recording rules'."""
    known = NATIVE | _recorded()
    named = set()
    for expression in ex.all_expressions():
        named |= set(METRIC.findall(expression.expr))
    assert named - known == set()
    assert len(named) > 30


def test_substitution_leaves_plain_promql() -> None:
    expr = 'increase(x{node=~"$node", job_id=~"${job}"}[$__rate_interval]) > $__range_s'
    assert ex.substitute(expr, {"job": "42"}) == 'increase(x{node=~".+", job_id=~"42"}[5m]) > 3600'
    assert ex.variable_references(expr) == {"node", "job"}


def _promtool_check(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    rules = [{"record": f"dashboard_check_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "panels.rules.json"  # JSON is YAML: no PyYAML needed to write it
    path.write_text(json.dumps({"groups": [{"name": "panels", "rules": rules}]}))
    return subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


def test_every_panel_and_variable_expression_parses(tmp_path: Path) -> None:
    exprs = [e.expr for e in ex.dashboard_expressions()]
    assert len(exprs) > 50
    proc = _promtool_check(exprs, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in proc.stdout


def test_the_parse_check_catches_a_typo(tmp_path: Path) -> None:
    proc = _promtool_check(["sum by (node (factoryctl_gpu_power_watts)"], tmp_path)
    assert proc.returncode != 0
