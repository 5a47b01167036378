"""The frame's column-by-column scan and occupancy give what a GPU-by-GPU loop gives,
on snapshots with every kind of gap (silent nodes, lost GPUs, missing readings, no
power limit, a node split over two runs) and on the simulator's columnar snapshots."""

from __future__ import annotations

import math
from typing import Any

import pytest

from factoryctl.gpu_columns import GPU_FIELDS, GpuColumns
from factoryctl.model import GPU, Allocation, FactorySnapshot, Job, JobState, Node, NodeState
from factoryctl.occupancy import factory_occupancy
from factoryctl.sim import SimConfig, SimFactory
from factoryctl.sim.snapshot import build_snapshot
from factoryctl.tui.gpuscan import HOT_CELSIUS, scan_gpus


def reference_scan(gpus: tuple[GPU, ...]) -> dict[str, Any]:
    """The definitions, one GPU at a time."""
    nodes: dict[str, list[Any]] = {}
    out: dict[str, Any] = {"power": 0.0, "power_known": 0, "down": [], "xid": [], "hot": []}
    out |= {"throttled": [], "util": [], "ratio": [], "hist_u": [], "hist_p": []}
    for g in gpus:
        a = nodes.setdefault(g.node, [0.0, 0, 0.0, 0, None, 0.0, 0])
        u, p, t = g.utilization, g.power_watts, g.temperature_celsius
        if u is not None:
            a[0] += u
            a[1] += 1
        if p is not None:
            a[2] += p
            a[3] += 1
        if t is not None and (a[4] is None or t > a[4]):
            a[4] = t
        a[5] += g.xid_total or 0.0
        out["hist_u"].append(math.nan if u is None else u)
        out["hist_p"].append(math.nan if p is None else p)
        if not g.up:
            a[6] += 1
            out["down"].append(g)
            out["util"].append(None)
            out["ratio"].append(None)
            continue
        out["util"].append(u)
        limit = g.power_limit_watts
        out["ratio"].append(p / limit if p is not None and limit else None)
        if p is not None:
            out["power"] += p
            out["power_known"] += 1
        if g.last_xid:
            out["xid"].append(g)
        if t is not None and t >= HOT_CELSIUS:
            out["hot"].append(g)
        if g.throttle_reasons:
            out["throttled"].append(g)
    out["nodes"] = nodes
    return out


def check_scan(snapshot: FactorySnapshot) -> None:
    gpus = tuple(snapshot.gpus)
    want, scan = reference_scan(gpus), scan_gpus(snapshot)
    got_nodes = {
        k: [a.util_sum, a.util_n, a.power, a.power_n, a.temp_max, a.xids, a.down_gpus]
        for k, a in scan.nodes.items()
    }
    # Sums of floats agree to rounding, not bit for bit: Python 3.12+'s sum() compensates
    # (Debian 13), a plain loop does not.
    assert got_nodes.keys() == want["nodes"].keys()
    for node, values in got_nodes.items():
        assert [pytest.approx(v, rel=1e-12, abs=1e-9) for v in want["nodes"][node]] == values, node
    assert scan.power == pytest.approx(want["power"], rel=1e-12)
    assert scan.power_known == want["power_known"]
    assert (scan.down, scan.xid, scan.hot) == (want["down"], want["xid"], want["hot"])
    assert scan.throttled == want["throttled"]
    assert list(scan.utilization) == want["util"] and list(scan.power_ratio) == want["ratio"]
    for got, expected in ((scan.history_utilization, want["hist_u"]),):
        assert len(got) == len(expected)
        assert all(
            (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-6
            for a, b in zip(got, expected, strict=True)
        )
    # occupancy: the columnar count against the GPU-object count
    assert factory_occupancy(snapshot) == factory_occupancy(snapshot, gpus=gpus)


def gappy_snapshot() -> FactorySnapshot:
    gpus = (
        GPU("a", 0, up=True, utilization=0.9, power_watts=600.0, power_limit_watts=700.0),
        GPU("a", 1, utilization=None, power_watts=None, temperature_celsius=90.0, xid_total=2.0),
        GPU("b", 0, up=False, utilization=0.3, power_watts=50.0, last_xid=79, xid_total=1.0),
        GPU("b", 1, up=False),  # silent
        GPU("a", 2, utilization=0.01, power_watts=80.0, power_limit_watts=0.0, last_xid=13),
        GPU("c", 0, utilization=0.5, power_watts=200.0, throttle_reasons=("sw_power_cap",)),
        GPU("c", 1, utilization=0.0, temperature_celsius=HOT_CELSIUS, job_ids=("9",)),
    )
    nodes = (Node("a", NodeState.MIXED, gpu_count=3), Node("b", NodeState.DRAINED, gpu_count=2))
    jobs = (
        Job("8", "ada", allocations=(Allocation("a", (0, 1, 2)), Allocation("b", (0, 5)))),
        Job("9", "bob", state=JobState.COMPLETED, allocations=(Allocation("c", (0,)),)),
    )
    return FactorySnapshot(time=1.0, nodes=nodes, gpus=gpus, jobs=jobs)


def test_scan_of_gpu_objects_and_of_columns_matches_the_gpu_by_gpu_definitions() -> None:
    snap = gappy_snapshot()
    check_scan(snap)
    table = GpuColumns.of(snap.gpus)
    columnar = GpuColumns({f: table.column(f) for f in GPU_FIELDS})
    check_scan(FactorySnapshot(time=1.0, nodes=snap.nodes, gpus=columnar, jobs=snap.jobs))
    occ = factory_occupancy(snap)
    # a0-a2 and b0 by job 8's allocation, c1 by its attribution (job 9 is finished)
    assert (occ.total, occ.allocated, occ.active, occ.idle_allocated) == (7, 5, 2, 2)
    assert (occ.out_of_service, occ.unreported) == (2, 3)  # b0 and b1 (b is drained)


def test_scan_of_simulated_snapshots_with_faults() -> None:
    sim = SimFactory(SimConfig(nodes=6, seed=2))
    sim.advance(1200, 30)
    sim.fail_node(sim.node_names[0])
    sim.inject_xid(sim.node_names[1], 3, 79)
    sim.inject_xid(sim.node_names[2], 1, 31)
    sim.inject_throttle(sim.node_names[3], 2, "hw_thermal_slowdown", 600)
    sim.set_admin(sim.node_names[4], maint=True, reason="swap PSU")
    sim.advance(60, 30)
    snap = build_snapshot(sim)
    scan = scan_gpus(snap)
    assert scan.down and scan.xid and scan.throttled and scan.hot
    check_scan(snap)
