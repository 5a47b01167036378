"""Turn the simulator's arrays into the domain snapshot (what any source produces).

At 100,000 GPUs this runs on every poll of the console, so it is written for speed:
GPU objects are filled through their slots (``_gpu_maker``), and what does not change
between polls (a node's Node, a job's allocations, a finished Job) is reused from a
``SnapshotCache`` the caller keeps. Reusing frozen objects is safe: nobody can mutate
them, and an equal object is rebuilt whenever any of its inputs changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from factoryctl.model import GPU, Allocation, FactorySnapshot, Job, Node, NodeState
from factoryctl.occupancy import ACTIVE_THRESHOLD
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


def _gpu_maker() -> Callable[..., GPU]:
    """``GPU(*all 21 fields)`` without the frozen dataclass ``__init__``.

    That ``__init__`` goes through ``object.__setattr__`` once per field (frozen), which
    is most of the cost of 100,000 GPUs per poll. Writing the slots through their member
    descriptors builds an identical object (``test_snapshot_cache`` compares them) in
    about half the time. GPU has no ``__post_init__`` to skip; if it ever gains one, the
    assertion below fails at import instead of silently bypassing it.
    """
    assert not hasattr(GPU, "__post_init__")
    names = [f.name for f in fields(GPU)]
    setters = [GPU.__dict__[n].__set__ for n in names]
    params = ", ".join(names)
    body = "\n".join(f"    _s{k}(o, {n})" for k, n in enumerate(names))
    src = f"def make({params}):\n    o = _new(_GPU)\n{body}\n    return o\n"
    scope: dict[str, Any] = {"_new": object.__new__, "_GPU": GPU}
    scope.update({f"_s{k}": s for k, s in enumerate(setters)})
    exec(src, scope)
    maker: Callable[..., GPU] = scope["make"]
    return maker


make_gpu = _gpu_maker()


@dataclass
class SnapshotCache:
    """What one source reuses between its snapshots (keep one per simulator)."""

    nodes: dict[int, tuple[tuple[Any, ...], Node]] = field(default_factory=dict)
    allocations: dict[str, tuple[tuple[int, ...], tuple[Allocation, ...]]] = field(
        default_factory=dict
    )
    finished: dict[str, tuple[tuple[Any, ...], Job]] = field(default_factory=dict)
    throttle: dict[int, tuple[str, ...]] = field(default_factory=dict)


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


def build_snapshot(
    sim: SimFactory,
    energy: Mapping[str, float] | None = None,
    include_finished: bool = True,
    cache: SnapshotCache | None = None,
    idle_since: Sequence[float | None] | None = None,
    energy_today: tuple[float, float] | None = None,
) -> FactorySnapshot:
    """The factory now. ``energy`` is measured per-job energy (None: leave unknown);
    ``idle_since``, when each GPU's idle spell began as an observer saw it
    (``occupancy.IdleStreaks``; None: leave idle time unknown); ``energy_today``, the
    factory's (joules, since) as an observer counted them (``energy.DayEnergy``).

    ``cache``: pass the same one on every call for the same simulator to reuse what did
    not change; without one, everything is built afresh (same result).
    """
    cache = SnapshotCache() if cache is None else cache
    spec, gpn = sim.config.spec, sim.gpn
    bits = [(bit, name) for name, bit in THROTTLE_BITS.items()]
    throttle_cache = cache.throttle
    gpus: list[GPU] = []
    append = gpus.append
    make = make_gpu
    model, mem_total, limit = spec.model, spec.memory_total_bytes, spec.power_limit_watts
    names, uuids, owner, up_arr = sim.node_names, sim.uuids, sim.owner, sim.up
    util, mem_util, mem_used = sim.utilization, sim.memory_utilization, sim.memory_used
    power, counters, temp, clock = sim.power, sim.energy, sim.temperature, sim.sm_clock
    throttle, ecc, xids, last_xid, last_xid_t = (
        sim.throttle,
        sim.ecc_uncorrected,
        sim.xid_total,
        sim.last_xid,
        sim.last_xid_time,
    )
    node_down = [a.down or a.reboot_until is not None for a in sim.admin]
    now, threshold = sim.now, ACTIVE_THRESHOLD
    starts: Sequence[float | None] = [None] * sim.gpu_count if idle_since is None else idle_since
    # One zip over the per-GPU arrays (GPUs are stored node by node): indexing 15 arrays
    # per GPU was a third of the cost at 100,000 GPUs.
    per_gpu = zip(
        uuids, up_arr, util, mem_util, mem_used, power, counters, temp, clock, throttle,
        ecc, xids, last_xid, last_xid_t, owner, starts, strict=True,
    )  # fmt: skip
    i, k, name, silent = -1, gpn, "", False
    known_idle = idle_since is not None
    for uuid, up, u, mu, mused, p, e, t, c, th, ec, x, lx, lxt, job, since in per_gpu:
        if k == gpn:
            i, k = i + 1, 0
            name, silent = names[i], node_down[i]
        if silent:
            # A down node's exporter is silent: no sample at all, not zeros.
            append(GPU(name, k, uuid, model, False))
        elif not up:
            append(
                GPU(
                    name,
                    k,
                    uuid,
                    model,
                    False,
                    last_xid=lx or None,
                    last_xid_time=lxt or None,
                    xid_total=x,
                    ecc_uncorrected_total=ec,
                )
            )
        else:
            reasons: tuple[str, ...] = ()
            if th:
                reasons = throttle_cache.get(th, ())
                if not reasons:
                    reasons = throttle_cache[th] = tuple(n for b, n in bits if th & b)
            append(
                make(
                    name,
                    k,
                    uuid,
                    model,
                    True,
                    u,
                    mu,
                    mused,
                    mem_total,
                    p,
                    limit,
                    e,
                    t,
                    c,
                    reasons,
                    ec,
                    x,
                    lx or None,
                    lxt or None,
                    (job.job_id,) if job is not None else (),
                    (0.0 if u >= threshold else None if since is None else now - since)
                    if known_idle
                    else None,
                )
            )
        k += 1
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
        gpus=tuple(gpus),
        jobs=tuple(jobs),
        source="demo",
        energy_today_joules=None if energy_today is None else energy_today[0],
        energy_today_since=None if energy_today is None else energy_today[1],
    )
