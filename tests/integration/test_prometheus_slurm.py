"""Telemetry from Prometheus joined with a real Slurm cluster's jobs and nodes, on every
Slurm generation, each with the Prometheus and VictoriaMetrics of its own Debian release.

Slurm runs the job and decides which GPUs it gets; the simulator plays those GPUs
(same node names, same indices) and both engines scrape them. The snapshot must take the
allocation from Slurm, the numbers from Prometheus, and get the job's energy right.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factoryctl.lab.procs import wait_until
from factoryctl.lab.slurm import SlurmCluster
from factoryctl.lab.stack import Stack
from factoryctl.model import JobState, NodeState
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions
from tests.integration.simexpo import SimTargets

pytestmark = pytest.mark.integration


@pytest.fixture
def telemetry_for(slurm: SlurmCluster, tmp_path: Path) -> Iterator[tuple[SimTargets, Stack]]:
    nodes = tuple(slurm.live_nodes)
    sim = SimFactory(
        SimConfig(node_names=nodes, gpus_per_node=8, jobs=False, start_time=time.time())
    )
    targets = SimTargets(sim).start()
    release = slurm.release.codename
    engines = (f"prometheus@{release}", f"victoriametrics@{release}")
    stack = Stack(tmp_path / "stack", list(targets.addresses.values()), engines, "1s")
    try:
        stack.start()
        stack.wait_scraped(timeout=60)
        yield targets, stack
    finally:
        stack.stop()
        targets.stop()


def test_slurm_allocation_prometheus_numbers_exact_energy(
    slurm: SlurmCluster, telemetry_for: tuple[SimTargets, Stack]
) -> None:
    targets, stack = telemetry_for
    sim = targets.sim
    scheduler = SlurmCLI(env=slurm.env)
    job_id = slurm.sbatch("-w", "gpu02", "--gres=gpu:2", "-J", "pretrain", script="sleep 300")
    slurm.wait_job_running(job_id)
    (job,) = [j for j in scheduler.jobs() if j.job_id == job_id]
    (alloc,) = job.allocations
    assert alloc.node == "gpu02" and len(alloc.gpu_indices) == 2
    with targets.lock:  # the simulator plays the GPUs Slurm gave the job
        targets.sync()
        sim.assign(job_id, job.user, alloc.node, list(alloc.gpu_indices), Workload.TRAINING)
        targets.observe(sim)
    time.sleep(6)
    slurm.run(["scancel", job_id], check=True)
    with targets.lock:
        targets.sync()
        sim.release(job_id)
        targets.observe(sim)
        truth = sim.true_energy(job_id)
    end = time.time()
    for engine in stack.running.values():
        client = PromClient(PromConfig(engine.url))
        wait_until(
            lambda c=client: (
                (c.query("max(timestamp(factoryctl_gpu_up))", time.time()).scalar() or 0)
                > end + 1.5
            ),
            30,
            f"{engine.name} to scrape past the job's end",
            interval=0.25,
        )
        src = PrometheusSource(client, scheduler, SourceOptions(scrape_interval=1.0))
        snap = src.snapshot()
        found = snap.job(job_id)
        assert found is not None, engine.name
        assert found.state in (JobState.CANCELLED, JobState.COMPLETED), found.state
        assert found.name == "pretrain"
        assert found.energy_joules is not None
        assert abs(found.energy_joules - truth) / truth <= 0.005, (engine.name, found, truth)
        # Nodes come from Slurm (all four, with Slurm's state), GPUs from telemetry.
        assert sorted(n.name for n in snap.nodes) == sorted(slurm.live_nodes)
        assert all(n.state is not NodeState.UNKNOWN for n in snap.nodes)
        assert len(snap.gpus) == 8 * len(slurm.live_nodes)
        assert all(g.up and g.power_watts is not None for g in snap.gpus)


def test_unreachable_scheduler_degrades_to_telemetry_only(
    slurm: SlurmCluster, telemetry_for: tuple[SimTargets, Stack], tmp_path: Path
) -> None:
    _, stack = telemetry_for
    broken = SlurmCLI(env={**slurm.env, "SLURM_CONF": str(tmp_path / "missing.conf")})
    url = next(iter(stack.running.values())).url
    src = PrometheusSource(PromClient(PromConfig(url)), broken, SourceOptions())
    snap = src.snapshot()
    assert any("scheduler unreachable" in w for w in snap.warnings), snap.warnings
    assert len(snap.gpus) == 8 * len(slurm.live_nodes)
