"""The scheduler's node view as series: states, reasons, partitions and expected GPUs."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from factoryctl.model import Allocation, Job, JobState, Node, NodeState
from factoryctl.telemetry import schema
from factoryctl.telemetry.scheduler_collector import JobAttributionCollector, SchedulerCollector

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


JOBS = [
    # Two nodes, GPUs 0-1 of gpu01 and 4 of gpu02.
    Job("10", "ada", "ml", state=JobState.RUNNING,
        allocations=(Allocation("gpu01", (0, 1)), Allocation("gpu02", (4,)))),
    # Slurm named gpu01's GPUs but not gpu02's (count only): gpu01 exported, job counted.
    Job("11", "ben", "hpc", state=JobState.RUNNING,
        allocations=(Allocation("gpu01", (2,)), Allocation("gpu02", (), gpus=2))),
    # No GPU at all: neither exported nor counted.
    Job("12", "chen", state=JobState.RUNNING, allocations=(Allocation("gpu03", ()),)),
    # Finished: Slurm still names the GPUs here, but the job holds nothing any more.
    Job("13", "dana", state=JobState.COMPLETED, allocations=(Allocation("gpu03", (0,)),)),
    Job("14", "eve", state=JobState.PENDING),
]  # fmt: skip


def _jobs_registry(jobs: list[Job]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(JobAttributionCollector(lambda: jobs))
    return registry


def test_one_series_per_node_gpu_and_running_job() -> None:
    reg = _jobs_registry(JOBS)
    held = {
        (s.labels["node"], s.labels["gpu"], s.labels["job_id"], s.labels["user"],
         s.labels["account"])
        for fam in reg.collect() if fam.name == schema.SLURM_GPU_JOB_INFO
        for s in fam.samples if s.value == 1
    }  # fmt: skip
    assert held == {
        ("gpu01", "0", "10", "ada", "ml"),
        ("gpu01", "1", "10", "ada", "ml"),
        ("gpu02", "4", "10", "ada", "ml"),
        ("gpu01", "2", "11", "ben", "hpc"),
    }
    assert reg.get_sample_value(schema.SLURM_JOBS_GPU_INDICES_UNKNOWN) == 1


def test_no_running_job_still_writes_the_unknown_count() -> None:
    """The always-present gauge is how the console detects a recorded allocation."""
    reg = _jobs_registry([])
    assert reg.get_sample_value(schema.SLURM_JOBS_GPU_INDICES_UNKNOWN) == 0


@pytest.mark.integration
def test_promtool_check_metrics_accepts_the_exposition() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(_registry(NODES)) + generate_latest(_jobs_registry(JOBS)),
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
