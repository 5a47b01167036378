"""Prometheus rules: valid for promtool and vmalert, unit-tested, every alert both ways.

The rule unit tests themselves live beside the rules (dashboards/prometheus/tests/*.yml)
in promtool's format, so `promtool test rules` runs them without Python; this module runs
them in the suite and checks that they cover every alert and every recording rule.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from factoryctl.telemetry import schema

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "dashboards" / "prometheus"
RULE_FILES = [
    RULES_DIR / "recording.rules.yml",
    RULES_DIR / "alerts.rules.yml",
    RULES_DIR / "rollups.rules.yml",
    RULES_DIR / "console.rules.yml",
]
TEST_FILES = sorted((RULES_DIR / "tests").glob("*.yml"))
# level:metric:operations, https://prometheus.io/docs/practices/rules/
RECORD_NAME = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z0-9_]+$")


def _tool(name: str) -> str:
    path = shutil.which(name)  # on PATH, never a fixed path
    if path is None:
        pytest.skip(f"{name} is not on PATH")
    return path


def _rules(kind: str) -> list[dict[str, Any]]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(rule for rule in group["rules"] if kind in rule)
    return out


def _tests() -> list[dict[str, Any]]:
    return [case for path in TEST_FILES for case in yaml.safe_load(path.read_text())["tests"]]


def test_promtool_check_rules() -> None:
    proc = subprocess.run(
        [_tool("promtool"), "check", "rules", *map(str, RULE_FILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(RULE_FILES)


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_rule_unit_tests(test_file: Path) -> None:
    proc = subprocess.run(
        [_tool("promtool"), "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_vmalert_accepts_the_rules() -> None:
    """VictoriaMetrics' rule engine parses every expression (MetricsQL) and template."""
    proc = subprocess.run(
        [_tool("vmalert"), "-dryRun", *(f"-rule={p}" for p in RULE_FILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in _tests():
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in _rules("alert")}
    assert len(alerts) >= 15
    assert alerts - firing == set(), "alerts with no firing test case"
    assert alerts - silent == set(), "alerts with no not-firing test case"
    assert (firing | silent) - alerts == set(), "test cases for alerts that do not exist"


def test_every_recording_rule_has_a_tested_value() -> None:
    tested = set()
    for case in _tests():
        for check in case.get("promql_expr_test", []):
            for sample in check.get("exp_samples") or []:
                tested.add(re.split(r"[{\s]", sample["labels"], maxsplit=1)[0])
    records = {rule["record"] for rule in _rules("record")}
    assert records - tested == set()


# factoryctl-exporter's rollups (schema.py, "Rollups (issue 13)").
ROLLUPS = {
    schema.NODE_GPUS,
    schema.NODE_GPUS_UP,
    schema.NODE_GPUS_ALLOCATED,
    schema.NODE_GPUS_ACTIVE,
    schema.NODE_GPUS_THROTTLED,
    schema.NODE_GPUS_XID_RECENT,
    schema.NODE_POWER,
    schema.NODE_UTILIZATION,
    schema.NODE_TEMPERATURE_MAX,
    schema.NODE_XID_ERRORS,
    schema.NODE_ENERGY,
    schema.JOB_GPUS,
    schema.JOB_GPUS_ACTIVE,
    schema.JOB_UTILIZATION_SUM,
    schema.JOB_POWER,
    schema.JOB_IDLE_SECONDS,
    schema.JOB_UTILIZATION_MIN,
    schema.JOB_MEMORY_USED,
}
# What dcgm-exporter cannot give: no XID count (only the last code), no idle spell.
NOT_ON_DCGM = {schema.NODE_XID_ERRORS, schema.JOB_IDLE_SECONDS}


def test_recording_rule_names_follow_the_convention() -> None:
    """Except the dcgm rollups, which record factoryctl-exporter's own names."""
    bad = [
        r["record"]
        for r in _rules("record")
        if not RECORD_NAME.match(r["record"]) and r["record"] not in ROLLUPS
    ]
    assert bad == []


def test_the_dcgm_rollups_record_the_exporters_names() -> None:
    """Every rollup the exporter writes is recorded for dcgm sites but those dcgm-exporter
    cannot give, which the rules file names and explains, and nothing else is."""
    path = RULES_DIR / "rollups.rules.yml"
    doc = yaml.safe_load(path.read_text())
    recorded = {r["record"] for g in doc["groups"] for r in g["rules"] if ":" not in r["record"]}
    assert recorded == ROLLUPS - NOT_ON_DCGM
    text = path.read_text()
    for name in NOT_ON_DCGM:
        assert name in text, f"{name}: say why it is not recorded"


def test_every_alert_says_how_bad_what_and_what_to_do() -> None:
    for rule in _rules("alert"):
        name = rule["alert"]
        labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
        assert name.startswith("Factoryctl"), name
        assert labels.get("severity") in {"critical", "warning", "info"}, name
        assert labels.get("class") and labels.get("action"), name
        assert {"summary", "description", "runbook"} <= annotations.keys(), name
        assert annotations["runbook"].startswith(("factoryctl ", "{{ if")), name
        # Alerts joined onto job info must name the node, the GPU, the job and its user.
        if "group_left (job_id, user)" in rule["expr"]:
            for label in ("$labels.node", "$labels.gpu", "$labels.job_id", "$labels.user"):
                assert label in annotations["description"], (name, label)


def test_hardware_alerts_suggest_a_drain_and_application_alerts_the_user() -> None:
    drain = "factoryctl drain {{ $labels.node }} --reason "
    for rule in _rules("alert"):
        name, runbook = rule["alert"], rule["annotations"]["runbook"]
        if rule["labels"]["action"] == "drain":
            assert runbook.startswith(drain), name
        if rule["labels"]["class"] == "application":
            assert "drain" not in runbook and "tell" in runbook, name
