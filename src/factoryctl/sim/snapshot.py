"""Turn the simulator's arrays into the domain snapshot (what any source produces).

At 100,000 GPUs this runs on every poll of the console, so it is written for speed:
the GPUs are handed over as columns (``GpuColumns``: copies of the simulator's arrays,
GPU objects built only when someone reads them), and what does not change between
polls (the GPU layout, a node's Node, a job's allocations, a finished Job) is reused
from a ``SnapshotCache`` the caller keeps. Reusing immutable objects is safe: nobody
can mutate them, and an equal object is rebuilt whenever any of its inputs changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import not_
from typing import Any

from factoryctl.gpu_columns import GpuColumns, GpuLayout
from factoryctl.model import Allocation, FactorySnapshot, Job, Node, NodeState
from factoryctl.sim.factory import SimFactory
from factoryctl.sim.jobs import SimJob
from factoryctl.sim.workload import THROTTLE_BITS


def node_state(sim: SimFactory, i: int) -> NodeState:
    admin = sim.admin[i]
    busy = sim.gpn - sim.free[i]
    if admin.reboot_until is not None:
        return NodeState.REBOOTING
    if admin.down:
        return NodeState.DOWN
    if admin.drain:
        return NodeState.DRAINING if busy else NodeState.DRAINED
    if admin.maint:
        return NodeState.MAINT
    if busy == 0:
        return NodeState.IDLE
    return NodeState.ALLOCATED if busy == sim.gpn else NodeState.MIXED


@dataclass
class SnapshotCache:
    """What one source reuses between its snapshots (keep one per simulator)."""

    nodes: dict[int, tuple[tuple[Any, ...], Node]] = field(default_factory=dict)
    allocations: dict[str, tuple[tuple[int, ...], tuple[Allocation, ...]]] = field(
        default_factory=dict
    )
    finished: dict[str, tuple[tuple[Any, ...], Job]] = field(default_factory=dict)
    throttle: dict[int, tuple[str, ...]] = field(default_factory=dict)
    layout: GpuLayout | None = None


def _allocations(sim: SimFactory, job: SimJob, cache: SnapshotCache) -> tuple[Allocation, ...]:
    slots = tuple(job.slots)
    hit = cache.allocations.get(job.job_id)
    if hit is not None and hit[0] == slots:
        return hit[1]
    by_node: dict[str, list[int]] = {}
    for g in slots:
        by_node.setdefault(sim.node_names[g // sim.gpn], []).append(g % sim.gpn)
    allocations = tuple(Allocation(n, tuple(ix)) for n, ix in by_node.items())
    cache.allocations[job.job_id] = (slots, allocations)
    return allocations


def _job(
    sim: SimFactory, job: SimJob, energy: Mapping[str, float] | None, cache: SnapshotCache
) -> Job:
    joules = None if energy is None else energy.get(job.job_id)
    allocations = _allocations(sim, job, cache)
    # Positional (Job's field order): keyword construction costs more at 6,000 jobs.
    return Job(
        job.job_id,
        job.user,
        job.account,
        job.partition,
        job.name,
        job.state,
        job.start_time,
        job.end_time,
        allocations,
        joules,
    )


def _finished_job(
    sim: SimFactory, job: SimJob, energy: Mapping[str, float] | None, cache: SnapshotCache
) -> Job:
    joules = None if energy is None else energy.get(job.job_id)
    key = (job.state, job.end_time, joules, tuple(job.slots))
    hit = cache.finished.get(job.job_id)
    if hit is not None and hit[0] == key:
        return hit[1]
    built = _job(sim, job, energy, cache)
    cache.finished[job.job_id] = (key, built)
    return built


def _nodes(sim: SimFactory, cache: SnapshotCache) -> tuple[Node, ...]:
    gpn, partitions = sim.gpn, (sim.config.partition,)
    out = []
    for i, name in enumerate(sim.node_names):
        admin = sim.admin[i]
        state = node_state(sim, i)
        key = (state, admin.reason, admin.reason_time, sim.free[i])
        hit = cache.nodes.get(i)
        if hit is not None and hit[0] == key and hit[1].name == name:
            out.append(hit[1])
            continue
        node = Node(
            name, state, admin.reason, admin.reason_time, partitions, gpn, gpn - sim.free[i]
        )
        cache.nodes[i] = (key, node)
        out.append(node)
    return tuple(out)


def _layout(sim: SimFactory, cache: SnapshotCache) -> GpuLayout:
    # The simulator's GPUs never move: one layout (and its lookups) serves every poll.
    layout = cache.layout
    n = sim.gpu_count
    if layout is None or len(layout) != n or layout.nodes[:: sim.gpn] != tuple(sim.node_names):
        nodes = tuple(name for name in sim.node_names for _ in range(sim.gpn))
        layout = cache.layout = GpuLayout(nodes, tuple(range(sim.gpn)) * len(sim.node_names))
    layout.next_generation()
    return layout


def _gpu_columns(
    sim: SimFactory, cache: SnapshotCache, idle_seconds: Sequence[float | None] | None = None
) -> GpuColumns:
    """The GPU columns: what ``GPU(...)`` per GPU would hold, field by field.

    A GPU of a down or rebooting node is silent (its exporter sends nothing: identity
    only, every reading None); a lost GPU (XID 79) keeps its XID and ECC counters but
    reports nothing else. Both are rare, so each column is a copy of the simulator's
    array with those few positions patched, not a Python expression per GPU.
    """
    n, gpn, spec = sim.gpu_count, sim.gpn, sim.config.spec
    silent_nodes = [i for i, a in enumerate(sim.admin) if a.silent]
    silent = [g for i in silent_nodes for g in range(i * gpn, (i + 1) * gpn)]
    lost = list(compress(range(n), map(not_, sim.up)))
    quiet = sorted({*silent, *lost})  # no readings

    def readings(values: Sequence[Any], blank: Sequence[int] = quiet) -> list[Any]:
        col = list(values)
        for g in blank:
            col[g] = None
        return col

    up = [True] * n
    for g in quiet:
        up[g] = False
    throttle: list[tuple[str, ...]] = [()] * n
    for g in compress(range(n), sim.throttle):
        if up[g]:
            throttle[g] = _throttle_reasons(sim.throttle[g], cache)
    last_xid: list[int | None] = [None] * n
    for g in compress(range(n), sim.last_xid):
        last_xid[g] = sim.last_xid[g]
    last_xid_time: list[float | None] = [None] * n
    for g in compress(range(n), sim.last_xid_time):
        last_xid_time[g] = sim.last_xid_time[g]
    ids: dict[SimJob | None, tuple[str, ...]] = {
        j: (j.job_id,) for j in dict.fromkeys(sim.owner) if j is not None
    }
    ids[None] = ()
    job_ids = list(map(ids.__getitem__, sim.owner))
    for g in quiet:
        job_ids[g] = ()
    columns: dict[str, Sequence[Any]] = {
        "uuid": sim.uuids,  # computed when read (names.GpuUuids); it never changes
        "model": [spec.model] * n,
        "up": up,
        "utilization": readings(sim.utilization.tolist()),
        "memory_utilization": readings(sim.memory_utilization.tolist()),
        "memory_used_bytes": readings(sim.memory_used.tolist()),
        "memory_total_bytes": readings([spec.memory_total_bytes] * n),
        "power_watts": readings(sim.power.tolist()),
        "power_limit_watts": readings([spec.power_limit_watts] * n),
        "energy_joules": readings(sim.energy.tolist()),
        "temperature_celsius": readings(sim.temperature.tolist()),
        "sm_clock_hz": readings(sim.sm_clock.tolist()),
        "throttle_reasons": throttle,
        "ecc_uncorrected_total": readings(sim.ecc_uncorrected.tolist(), silent),
        "xid_total": readings(sim.xid_total.tolist(), silent),
        "last_xid": readings(last_xid, silent),
        "last_xid_time": readings(last_xid_time, silent),
        "job_ids": job_ids,
    }
    if idle_seconds is not None:
        columns["idle_seconds"] = readings(idle_seconds)
    return GpuColumns(columns, _layout(sim, cache))


def _throttle_reasons(bits: int, cache: SnapshotCache) -> tuple[str, ...]:
    reasons = cache.throttle.get(bits)
    if reasons is None:
        reasons = cache.throttle[bits] = tuple(n for n, b in THROTTLE_BITS.items() if bits & b)
    return reasons


def build_snapshot(
    sim: SimFactory,
    energy: Mapping[str, float] | None = None,
    include_finished: bool = True,
    cache: SnapshotCache | None = None,
    idle_seconds: Sequence[float | None] | None = None,
    energy_today: tuple[float, float] | None = None,
) -> FactorySnapshot:
    """The factory now. ``energy`` is measured per-job energy (None: leave unknown);
    ``idle_seconds``, each GPU's idle spell as an observer saw it
    (``occupancy.IdleStreaks.seconds``; None: leave idle time unknown); ``energy_today``, the
    factory's (joules, since) as an observer counted them (``energy.DayEnergy``).

    ``cache``: pass the same one on every call for the same simulator to reuse what did
    not change; without one, everything is built afresh (same result).
    """
    cache = SnapshotCache() if cache is None else cache
    gpus = _gpu_columns(sim, cache, idle_seconds)
    jobs = [_job(sim, j, energy, cache) for j in sim.jobs.values()]
    if include_finished:
        jobs.extend(_finished_job(sim, j, energy, cache) for j in sim.finished)
    live = {j.job_id for j in jobs}
    for stale in [k for k in cache.allocations if k not in live]:
        del cache.allocations[stale]
    for stale in [k for k in cache.finished if k not in live]:
        del cache.finished[stale]
    return FactorySnapshot(
        time=sim.now,
        nodes=_nodes(sim, cache),
        gpus=gpus,
        jobs=tuple(jobs),
        source="demo",
        energy_today_joules=None if energy_today is None else energy_today[0],
        energy_today_since=None if energy_today is None else energy_today[1],
    )
