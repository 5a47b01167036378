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
    # The same GPUs as dcgm-exporter with HPC job mapping (hpc_job) shows them.
    dcgm = SimTargets(sim, "dcgm", lock=targets.lock, hpc_jobs=True).start()
    release = slurm.release.codename
    engines = (f"prometheus@{release}", f"victoriametrics@{release}")
    addresses = [*targets.addresses.values(), *dcgm.addresses.values()]
    stack = Stack(tmp_path / "stack", addresses, engines, "1s")
    try:
        stack.start()
        stack.wait_scraped(timeout=60)
        yield targets, stack
    finally:
        stack.stop()
        targets.stop()
        dcgm.stop()


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
        assigned = time.time()
    time.sleep(12)
    slurm.run(["scancel", job_id], check=True)
    with targets.lock:
        targets.sync()
        sim.release(job_id)
        targets.observe(sim)
        truth = sim.true_energy(job_id)
    end = time.time()
    for engine in stack.running.values():
        client = PromClient(PromConfig(engine.url))
        for metric in (
            "factoryctl_job_energy_joules_total",
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        ):
            wait_until(
                lambda c=client, m=metric: (
                    (c.query(f"max(timestamp({m}))", time.time()).scalar() or 0) > end + 1.5
                ),
                30,
                f"{engine.name} to scrape {metric} past the job's end",
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
        # The site: dcgm-exporter, and Slurm no longer naming the ended job's GPUs
        # (gres_detail: []); they come from the hpc_job history, the count from its TRES.
        dcgm_src = PrometheusSource(client, scheduler, SourceOptions("dcgm", scrape_interval=1.0))
        ended = dcgm_src.snapshot().job(job_id)
        assert ended is not None and ended.gpu_count == 2, ended
        assert ended.energy_joules is not None, ended
        # Slurm's start and end are whole seconds (floored), and the simulator begins the
        # job's work only after Slurm started it: on this 12 s job the GPU counters over
        # Slurm's [start, end] may differ from the truth by up to the two GPUs' full power
        # over that lag plus a second at the end (on hour-long jobs, a few 0.01 %).
        assert job.start_time is not None
        slack = 2 * sim.config.spec.power_limit_watts * (assigned - job.start_time + 1.0)
        diff = ended.energy_joules - truth
        print(
            f"slurm {slurm.release.codename} {engine.name} dcgm+hpc_job: {diff:+.0f} J of"
            f" {truth:.0f} J ({diff / truth:+.2%}); bound {slack:.0f} J"
        )
        assert abs(diff) <= slack, (engine.name, ended, truth)


def test_unreachable_scheduler_degrades_to_telemetry_only(
    slurm: SlurmCluster, telemetry_for: tuple[SimTargets, Stack], tmp_path: Path
) -> None:
    _, stack = telemetry_for
    broken = SlurmCLI(env={**slurm.env, "SLURM_CONF": str(tmp_path / "missing.conf")})
    url = next(iter(stack.running.values())).url
    src = PrometheusSource(PromClient(PromConfig(url)), broken, SourceOptions())
    snap = src.snapshot()
    (warning,) = [w for w in snap.warnings if "scheduler unreachable" in w]
    # The missing file is named at once: Slurm itself would wait up to 60 s for it to
    # appear, and the operator would wait out the 30 s timeout ("did not answer").
    assert "missing.conf is not a file" in warning and "did not answer" not in warning, warning
    assert len(snap.gpus) == 8 * len(slurm.live_nodes)
