"""The fast snapshot path (slot-filled GPUs, reused nodes and jobs) builds exactly what
a fresh, uncached build does, across steps, job churn and operator actions."""

from __future__ import annotations

from dataclasses import fields

from factoryctl.gpu_columns import make_gpu
from factoryctl.model import GPU, Allocation, FactorySnapshot
from factoryctl.sim import SimConfig, SimFactory
from factoryctl.sim.snapshot import SnapshotCache, build_snapshot
from factoryctl.sim.workload import THROTTLE_BITS, Workload


def test_make_gpu_builds_the_same_frozen_gpu_as_the_constructor() -> None:
    values = ("gpu01", 3, "GPU-1", "H100", True, 0.5, 0.25, 1e9, 8e10, 300.0, 700.0)
    values += (1e6, 61.0, 1.9e9, ("hw_slowdown",), 0.0, 2.0, 79, 12.5, ("42",), 30.0)
    made, built = make_gpu(*values), GPU(*values)
    assert made == built and hash(made) == hash(built)
    got = [getattr(made, f.name) for f in fields(GPU)]
    # Fields added after these 20 take their defaults, as GPU(...) gives them.
    assert got == [*values, *(f.default for f in fields(GPU)[len(values) :])]
    try:
        made.utilization = 0.0  # type: ignore[misc]
    except AttributeError:
        pass
    else:  # pragma: no cover - the point of the test
        raise AssertionError("GPU built by make_gpu is not frozen")


def _same(a: FactorySnapshot, b: FactorySnapshot) -> None:
    assert a.time == b.time
    assert a.gpus == b.gpus
    assert a.nodes == b.nodes
    assert a.jobs == b.jobs


def test_cached_snapshots_equal_fresh_ones_across_changes() -> None:
    sim = SimFactory(SimConfig(nodes=6, seed=5))
    sim.advance(3 * 3600, 60)  # jobs have started and finished
    cache = SnapshotCache()
    energy = {j.job_id: 1000.0 + k for k, j in enumerate(sim.all_jobs())}
    first = build_snapshot(sim, energy, cache=cache)
    _same(first, build_snapshot(sim, energy))
    assert any(j.state.finished for j in first.jobs) and sim.jobs

    sim.advance(1800, 30)  # jobs churn; nodes change allocation
    sim.set_admin(sim.node_names[1], drain=True, reason="bad fan")
    sim.fail_node(sim.node_names[2])
    sim.inject_xid(sim.node_names[3], 4, 79)
    sim.inject_throttle(sim.node_names[4], 0, next(iter(THROTTLE_BITS)), 600)
    energy = {j.job_id: 2000.0 + k for k, j in enumerate(sim.all_jobs())}
    second = build_snapshot(sim, energy, cache=cache)
    _same(second, build_snapshot(sim, energy))
    assert second.node(sim.node_names[1]).reason == "bad fan"  # type: ignore[union-attr]
    assert not any(g.up for g in second.gpus_of_node(sim.node_names[2]))
    gpu = second.gpu(sim.node_names[4], 0)
    assert gpu is not None and gpu.throttle_reasons

    # Unchanged nodes and finished jobs are the very same objects: that is the saving.
    third = build_snapshot(sim, energy, cache=cache)
    assert third.nodes[0] is second.nodes[0]
    done = [j for j in third.jobs if j.state.finished]
    assert done and all(
        j is k for j, k in zip(done, [j for j in second.jobs if j.state.finished], strict=True)
    )


def test_lazy_node_indexes() -> None:
    sim = SimFactory(SimConfig(nodes=3, seed=1))
    sim.advance(600, 60)
    snap = build_snapshot(sim)
    name = sim.node_names[0]
    assert [g.index for g in snap.gpus_of_node(name)] == list(range(sim.gpn))
    running = [j for j in snap.jobs if not j.state.finished and name in j.nodes]
    assert snap.jobs_on_node(name) == running
    assert snap.gpus_of_node("nope") == [] and snap.jobs_on_node("nope") == []


def test_allocations_group_a_jobs_slots_by_node_in_order() -> None:
    from factoryctl.sim.snapshot import _allocations

    sim = SimFactory(SimConfig(nodes=4, gpus_per_node=8, jobs=False))
    job = sim.assign("1", "ada", "gpu002", [5, 1, 2], Workload.TRAINING)
    assert _allocations(sim, job, SnapshotCache()) == (Allocation("gpu002", (5, 1, 2)),)
    job.slots = [8, 24, 25, 9]  # gpu002 met twice: one allocation, in first-seen order
    assert _allocations(sim, job, SnapshotCache()) == (
        Allocation("gpu002", (0, 1)),
        Allocation("gpu004", (0, 1)),
    )
