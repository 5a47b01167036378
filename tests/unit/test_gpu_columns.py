"""GPUs held as columns (``GpuColumns``) are the GPUs an object-per-GPU build gives:
the simulator's columnar snapshot against a plain reference build, across job churn,
faults, drains and reboots, and lookups on layouts that are not one tidy run per node."""

from __future__ import annotations

from dataclasses import fields

import pytest

from factoryctl.gpu_columns import GPU_FIELDS, GpuColumns, GpuLayout
from factoryctl.model import GPU, Allocation, FactorySnapshot, Job
from factoryctl.sim import SimConfig, SimFactory
from factoryctl.sim.snapshot import SnapshotCache, build_snapshot
from factoryctl.sim.workload import THROTTLE_BITS


def reference_gpus(sim: SimFactory) -> tuple[GPU, ...]:
    """One ``GPU(...)`` per GPU, read straight from the simulator: what the columns
    must reproduce. Silent (down or rebooting node): identity only. Lost: XID and ECC
    counters only. Up: every reading."""
    spec, out = sim.config.spec, []
    for g in range(sim.gpu_count):
        node, k = sim.node_names[g // sim.gpn], g % sim.gpn
        admin = sim.admin[g // sim.gpn]
        if admin.down or admin.reboot_until is not None:
            out.append(GPU(node, k, sim.uuids[g], spec.model, False))
            continue
        xid = {
            "last_xid": sim.last_xid[g] or None,
            "last_xid_time": sim.last_xid_time[g] or None,
            "xid_total": sim.xid_total[g],
            "ecc_uncorrected_total": sim.ecc_uncorrected[g],
        }
        if not sim.up[g]:
            out.append(GPU(node, k, sim.uuids[g], spec.model, False, **xid))  # type: ignore[arg-type]
            continue
        bits = sim.throttle[g]
        owner = sim.owner[g]
        out.append(
            GPU(
                node,
                k,
                sim.uuids[g],
                spec.model,
                True,
                utilization=sim.utilization[g],
                memory_utilization=sim.memory_utilization[g],
                memory_used_bytes=sim.memory_used[g],
                memory_total_bytes=spec.memory_total_bytes,
                power_watts=sim.power[g],
                power_limit_watts=spec.power_limit_watts,
                energy_joules=sim.energy[g],
                temperature_celsius=sim.temperature[g],
                sm_clock_hz=sim.sm_clock[g],
                throttle_reasons=tuple(n for n, b in THROTTLE_BITS.items() if bits & b),
                job_ids=() if owner is None else (owner.job_id,),
                **xid,  # type: ignore[arg-type]
            )
        )
    return tuple(out)


def test_columnar_snapshot_equals_a_gpu_by_gpu_build_across_changes() -> None:
    sim = SimFactory(SimConfig(nodes=8, seed=11))
    cache = SnapshotCache()
    names = sim.node_names
    for step in range(6):
        sim.advance(900, 30)  # jobs start and finish: GPUs change owner
        if step == 1:
            sim.set_admin(names[1], drain=True, reason="bad fan")
            sim.fail_node(names[2])
            sim.inject_xid(names[3], 4, 79)  # lost GPU
            sim.inject_xid(names[3], 5, 48)  # ECC
            sim.inject_xid(names[5], 0, 13)  # application XID
            sim.inject_throttle(names[4], 0, next(iter(THROTTLE_BITS)), 3600)
            sim.reboot(names[6])
        if step == 3:
            sim.set_admin(names[2], down=False, reason="")  # back from the dead
        snap = build_snapshot(sim, cache=cache)
        assert isinstance(snap.gpus, GpuColumns)
        expected = reference_gpus(sim)
        assert snap.gpus == expected  # builds every GPU object from the columns
        assert [snap.gpus[i] for i in range(len(expected))] == list(expected)
        for name in fields(GPU):  # and each column alone, without GPU objects
            fresh = build_snapshot(sim, cache=cache).columns()
            assert list(fresh.column(name.name)) == [getattr(g, name.name) for g in expected]
        if step == 1:
            assert any(not g.up and g.xid_total for g in expected)  # the lost GPU
            assert any(not g.up and g.xid_total is None for g in expected)  # silent
            assert any(g.throttle_reasons for g in expected)
        running = [j for j in snap.jobs if not j.state.finished]
        assert running
        for job in snap.jobs:
            keys = [(a.node, i) for a in job.allocations for i in a.gpu_indices]
            by_key = {(g.node, g.index): g for g in expected}
            assert snap.gpus_of_job(job) == [by_key[k] for k in keys if k in by_key]
        for name in names:
            assert snap.gpus_of_node(name) == [g for g in expected if g.node == name]


def test_columns_of_gpu_objects_and_irregular_layouts() -> None:
    # n2's GPUs come in two runs and out of order; n3 has no GPU 0.
    gpus = (
        GPU("n1", 0, utilization=0.5, job_ids=("7",)),
        GPU("n2", 1, utilization=0.25),
        GPU("n1", 1, up=False),
        GPU("n2", 0, power_watts=300.0),
        GPU("n3", 1),
    )
    job = Job("7", "ada", allocations=(Allocation("n2", (0, 1)), Allocation("n3", (0, 1))))
    wrapped = GpuColumns.of(gpus)
    assert GpuColumns.of(wrapped) is wrapped
    assert wrapped.column("utilization") == [0.5, 0.25, None, None, None]
    assert wrapped.layout.runs() == (
        ("n1", 0, 1),
        ("n2", 1, 2),
        ("n1", 2, 3),
        ("n2", 3, 4),
        ("n3", 4, 5),
    )
    columnar = GpuColumns({f: wrapped.column(f) for f in GPU_FIELDS})
    for table in (wrapped, columnar):
        snap = FactorySnapshot(time=0.0, gpus=table, jobs=(job,))
        assert table == gpus and list(table) == list(gpus) and table[1:3] == gpus[1:3]
        assert snap.gpu("n2", 0) == gpus[3] and snap.gpu("n3", 0) is None
        assert snap.gpus_of_node("n2") == [gpus[1], gpus[3]]
        assert snap.gpus_of_node("nope") == []
        assert snap.gpus_of_job(job) == [gpus[3], gpus[1], gpus[4]]
        assert table.layout.position("n1", 1) == 2
    assert wrapped[3] is gpus[3]  # wrapping keeps the very objects


def test_missing_columns_take_the_field_default_and_bad_columns_are_refused() -> None:
    table = GpuColumns({"node": ["a", "a"], "index": [0, 1], "power_watts": [1.0, None]})
    assert list(table) == [GPU("a", 0, power_watts=1.0), GPU("a", 1)]
    assert table.column("job_ids") == [(), ()]
    with pytest.raises(ValueError, match="not GPU fields: watts"):
        GpuColumns({"node": ["a"], "index": [0], "watts": [1.0]})
    with pytest.raises(ValueError, match="'power_watts' has 1 values, not 2"):
        GpuColumns({"node": ["a", "b"], "index": [0, 0], "power_watts": [1.0]})
    with pytest.raises(ValueError):
        GpuLayout(["a"], [0, 1])
    with pytest.raises(IndexError):
        table[2]
    with pytest.raises(KeyError):
        table.column("watts")


def test_layout_sameness_ignores_the_sequence_type() -> None:
    a = GpuLayout(("n1", "n1"), (0, 1))
    assert a.same(GpuLayout(["n1", "n1"], [0, 1]))
    assert not a.same(GpuLayout(["n1", "n2"], [0, 0]))
    assert not a.same(GpuLayout(["n1"], [0]))


def test_no_gpus() -> None:
    table = GpuColumns.of(())
    snap = FactorySnapshot(time=0.0, gpus=table)
    assert len(table) == 0 and list(table) == [] and table.layout.runs() == ()
    assert snap.gpu("a", 0) is None and snap.gpus_of_node("a") == []


def test_job_positions_are_remembered_per_allocation_until_unused() -> None:
    layout = GpuLayout(("a", "a", "b", "b"), (0, 1, 0, 1))
    job = Job("1", "u", allocations=(Allocation("b", (1, 0)), Allocation("a", (0, 5))))
    first = layout.job_positions(job)
    assert first == (3, 2, 0)  # allocation order; a's GPU 5 does not exist
    assert layout.job_positions(job) is first  # remembered
    layout.next_generation()
    assert layout.job_positions(job) is first  # used by the last snapshot: kept
    layout.next_generation()
    layout.next_generation()
    again = layout.job_positions(job)
    assert again == first and again is not first  # a snapshot passed without it
    moved = Job("1", "u", allocations=(Allocation("a", (1,)),))
    assert layout.job_positions(moved) == (1,)  # new allocations, new positions
    assert layout.job_positions(Job("2", "u", allocations=(Allocation("c", (0,)),))) == ()
