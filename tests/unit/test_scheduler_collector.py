"""The scheduler's node view as series: states, reasons, partitions and expected GPUs."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from factoryctl.model import Node, NodeState
from factoryctl.telemetry import schema
from factoryctl.telemetry.scheduler_collector import SchedulerCollector

NODES = [
    Node("gpu01", NodeState.MIXED, partitions=("gpu", "debug"), gpu_count=8),
    Node("gpu02", NodeState.DRAINED, 'fan "3" dead', 1_767_000_000.0, ("gpu",), 8),
]


def _registry(nodes: list[Node]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SchedulerCollector(lambda: nodes))
    return registry


def test_series_per_node() -> None:
    reg = _registry(NODES)
    get = reg.get_sample_value
    assert get(schema.NODE_STATE_INFO, {"node": "gpu01", "state": "mixed", "reason": ""}) == 1
    drained = {"node": "gpu02", "state": "drained", "reason": 'fan "3" dead'}
    assert get(schema.NODE_STATE_INFO, drained) == 1
    assert get(schema.NODE_STATE_SINCE, {"node": "gpu02"}) == 1_767_000_000.0
    assert get(schema.NODE_STATE_SINCE, {"node": "gpu01"}) is None  # unknown, not 0
    assert get(schema.NODE_PARTITION_INFO, {"node": "gpu01", "partition": "debug"}) == 1
    assert get(schema.NODE_PARTITION_INFO, {"node": "gpu02", "partition": "debug"}) is None
    assert get(schema.NODE_GPUS_EXPECTED, {"node": "gpu02"}) == 8


def test_each_scrape_reads_the_current_nodes() -> None:
    nodes = list(NODES)
    reg = _registry(nodes)
    nodes[1] = Node("gpu02", NodeState.IDLE, partitions=("gpu",), gpu_count=8)
    assert reg.get_sample_value(
        schema.NODE_STATE_INFO, {"node": "gpu02", "state": "idle", "reason": ""}
    )


@pytest.mark.integration
def test_promtool_check_metrics_accepts_the_exposition() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(_registry(NODES)),
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
