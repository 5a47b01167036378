"""Triage merges an alert and the snapshot finding for the same fault into one problem.

The alert names are read from the shipped rules, so a renamed alert that no longer maps to
its finding fails here instead of doubling every problem on the on-call page.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from factoryctl.model import GPU, FactorySnapshot, Node, NodeState
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.sim.snapshot import build_snapshot
from factoryctl.telemetry.scheduler_view import jobs_from_attribution, nodes_from_gpus
from factoryctl.triage import ALERT_FAMILIES, SNAPSHOT_FAMILIES, Alert, Severity, triage

RULES = Path(__file__).resolve().parents[2] / "dashboards" / "prometheus" / "alerts.rules.yml"


def _rules() -> dict[str, dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def _alert(name: str, **labels: str) -> Alert:
    rule = _rules()[name]
    severity = rule["labels"]["severity"]  # type: ignore[index]
    runbook = labels.pop("runbook", "")
    return Alert(
        name, severity, {"alertname": name, "severity": severity, **labels}, {"runbook": runbook}
    )


def test_every_mapped_alert_exists_in_the_rules_and_maps_to_a_finding() -> None:
    names = set(_rules())
    assert set(ALERT_FAMILIES) <= names, set(ALERT_FAMILIES) - names
    assert set(ALERT_FAMILIES.values()) <= set(SNAPSHOT_FAMILIES.values())
    # Every per-GPU hardware alert that suggests a drain is a GPU-fault finding too.
    drains = {n for n, r in _rules().items() if r["labels"]["action"] == "drain"}  # type: ignore[index]
    assert {n for n in drains if n != "FactoryctlGPUMissing"} <= set(ALERT_FAMILIES)


def _factory() -> SimFactory:
    sim = SimFactory(SimConfig(nodes=3, gpus_per_node=4, jobs=False))
    sim.assign("601", "ada", "gpu001", [2], Workload.TRAINING)
    sim.assign("602", "bob", "gpu002", [0, 1], Workload.IDLE)
    sim.assign("603", "cy", "gpu002", [2], Workload.IDLE)
    sim.advance(30, 1)
    return sim


def test_xid_79_alert_and_lost_gpu_finding_are_one_problem() -> None:
    sim = _factory()
    sim.inject_xid("gpu001", 2, 79)
    snap = build_snapshot(sim)
    alone = [p for p in triage(snap) if p.node == "gpu001" and p.gpu == 2]
    assert [p.kind for p in alone] == ["gpu_lost"]
    alerts = [
        _alert(
            "FactoryctlGPULost",
            node="gpu001",
            gpu="2",
            job_id="601",
            user="ada",
            runbook='factoryctl drain gpu001 --reason "GPU 2 lost"',
        ),
        _alert(
            "FactoryctlGPUXid79FallenOffBus",
            node="gpu001",
            gpu="2",
            job_id="601",
            user="ada",
            runbook='factoryctl drain gpu001 --reason "XID 79 on GPU 2"',
        ),
    ]
    merged = [p for p in triage(snap, alerts) if p.node == "gpu001" and p.gpu == 2]
    assert len(merged) == 1
    (one,) = merged
    assert one.source == "alert" and one.severity is Severity.CRITICAL
    assert one.jobs == (("601", "ada"),)
    assert one.action.startswith("factoryctl drain gpu001 --reason")


def test_idle_alert_absorbs_its_jobs_finding_but_not_another_jobs() -> None:
    snap = build_snapshot(_factory())
    kinds = sorted(p.kind for p in triage(snap))
    assert kinds == ["idle_allocated", "idle_allocated"]
    alert = _alert(
        "FactoryctlGPUIdleAllocated",
        node="gpu002",
        gpu="0",
        job_id="602",
        user="bob",
        runbook="factoryctl job 602  # tell bob: GPU 0 on gpu002 idle for 30m",
    )
    problems = triage(snap, [alert])
    assert sorted((p.kind, p.jobs) for p in problems) == [
        ("alert:FactoryctlGPUIdleAllocated", (("602", "bob"),)),
        ("idle_allocated", (("603", "cy"),)),  # job 603 on the same node is another problem
    ]


def test_exporter_down_alert_and_silent_node_are_one_problem_that_says_check_the_exporter() -> None:
    # Telemetry alone (no scheduler): the node's GPUs stopped reporting.
    gpus = [GPU(node="gpu003", index=i, up=False) for i in range(4)]
    gpus += [GPU(node="gpu001", index=0, utilization=0.9, job_ids=("601",))]
    snap = FactorySnapshot(
        time=1000.0,
        nodes=nodes_from_gpus(gpus),
        gpus=tuple(gpus),
        jobs=jobs_from_attribution(gpus, {"601": "ada"}),
    )
    assert next(n for n in snap.nodes if n.name == "gpu003").state is NodeState.DOWN
    (alone,) = triage(snap)
    assert alone.kind == "exporter_silent" and alone.node == "gpu003"
    assert alone.action.startswith("check factoryctl-exporter on gpu003")
    alert = _alert(
        "FactoryctlExporterDown",
        node="gpu003",
        instance="10.0.0.3:9835",
        runbook="factoryctl node gpu003",
    )
    not_reporting = _alert(
        "FactoryctlNodeNotReporting", node="gpu003", runbook="factoryctl node gpu003"
    )
    (one,) = triage(snap, [not_reporting, alert])  # the more specific alert is kept
    assert one.kind == "alert:FactoryctlExporterDown"
    assert one.action == (
        "check factoryctl-exporter on gpu003: systemctl status factoryctl-exporter; "
        "then factoryctl node gpu003"
    )


def test_a_node_really_down_is_not_an_exporter_problem() -> None:
    node = Node("gpu003", NodeState.DOWN, "Not responding", gpu_count=4)
    snap = FactorySnapshot(time=0.0, nodes=(node,), gpus=(), jobs=())
    (problem,) = triage(snap)
    assert problem.kind == "node_down" and problem.severity is Severity.CRITICAL
