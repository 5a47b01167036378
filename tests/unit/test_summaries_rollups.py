"""One definition of each rollup: ``summaries`` (the console's summarized snapshot from
GPU objects) goes through ``rollups.rollup``, as the exporter and the lab's backfill do.

A simulated factory with faults (an XID, a throttled GPU, a node's GPUs all lost, one more GPU lost) is
rolled up twice: the exporter's way, from the simulator's arrays exactly as
``tests/integration/simexpo.py`` feeds ``rollup``, and the summaries' way, from the
snapshot's GPU objects. Both must agree field by field, and agree with the per-GPU
definitions the console used before (``occupancy.job_occupancy``, ``gpuscan``). Cost: one
24-node simulator, well under a second.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from factoryctl.model import FactorySnapshot, JobState
from factoryctl.occupancy import job_occupancy
from factoryctl.rollups import rollup
from factoryctl.sim.rollup_input import node_gpus
from factoryctl.summaries import job_summaries, node_summaries, rolled_nodes
from factoryctl.telemetry.demo import DemoSource
from factoryctl.tui.gpuscan import scan_gpus

NOW = 1_780_000_000.0


@pytest.fixture(scope="module")
def source() -> DemoSource:
    src = DemoSource.create(nodes=24, gpus_per_node=8, seed=5, now=NOW, warmup=1800)
    sim = src.sim
    sim.inject_xid(sim.node_names[3], 2, 79)
    sim.inject_throttle(sim.node_names[5], 1, "hw_thermal_slowdown", 600)
    for g in range(sim.gpn):  # every GPU of a node lost: counts, but no readings
        sim.up[sim.gpu_slot(sim.node_names[7], g)] = 0
    sim.up[sim.gpu_slot(sim.node_names[9], 4)] = 0
    return src


@pytest.fixture(scope="module")
def snap(source: DemoSource) -> FactorySnapshot:
    return source.snapshot()


def exporter_rollups(source: DemoSource, snap: FactorySnapshot) -> dict[str, tuple]:
    """What the simulated exporter (simexpo) exports: the simulator's arrays, per node."""
    sim = source.sim
    spells = list(snap.columns().column("idle_seconds"))
    out = {}
    for k, node in enumerate(sim.node_names):
        gpus = node_gpus(sim, k, spells)
        out[node] = rollup(gpus, sim.now)
    return out


def test_summaries_roll_up_as_the_exporter_does(source: DemoSource, snap: FactorySnapshot) -> None:
    want = exporter_rollups(source, snap)
    got = rolled_nodes(snap)
    assert got.keys() == want.keys()
    for node, (n, jobs) in want.items():
        if n.gpus_up < n.gpus:
            # A lost GPU's energy counter is still in the exporter's memory; a snapshot
            # holds no reading of it (the node summary carries no energy, so no view
            # differs).
            n = replace(n, energy_joules=got[node].node.energy_joules)
        assert got[node].node == pytest.approx(n), node
        assert got[node].jobs == pytest.approx(jobs), node
    # The faults are in there: a throttled GPU, a recent XID, a lost GPU, a silent node.
    nodes = [r.node for r in got.values()]
    assert sum(n.gpus_throttled for n in nodes) >= 1
    assert sum(n.gpus_xid_recent for n in nodes) >= 1
    assert any(0 < n.gpus_up < n.gpus for n in nodes)
    assert any(n.gpus_up == 0 and n.power_watts is None for n in nodes)


def test_summaries_agree_with_the_per_gpu_definitions(snap: FactorySnapshot) -> None:
    scan = scan_gpus(snap)
    summaries = node_summaries(snap)
    for name, agg in scan.nodes.items():
        s = summaries[name]
        assert s.gpus - s.gpus_up == agg.down_gpus
        if agg.util_n:
            assert s.utilization == pytest.approx(agg.util_sum / agg.util_n)
        else:
            assert s.utilization is None
        assert s.power_watts == (pytest.approx(agg.power) if agg.power_n else None)
        assert s.temperature_max_celsius == agg.temp_max
    jobs = job_summaries(snap)
    running = [j for j in snap.jobs if j.state is JobState.RUNNING]
    assert jobs.keys() == {j.job_id for j in running} and running
    for job in running:
        occ = job_occupancy(job, snap.gpus_of_job(job), now=snap.time)
        s = jobs[job.job_id]
        assert s.reporting == occ.reporting, job.job_id
        assert s.idle_gpus == occ.idle_gpus, job.job_id
        if occ.reporting:
            assert s.mean_utilization == pytest.approx(occ.mean_utilization), job.job_id
