"""Turn the simulator's arrays into the domain snapshot (what any source produces)."""

from __future__ import annotations

from collections.abc import Mapping

from factoryctl.model import GPU, Allocation, FactorySnapshot, Job, Node, NodeState
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


def _job(sim: SimFactory, job: SimJob, energy: Mapping[str, float] | None) -> Job:
    by_node: dict[str, list[int]] = {}
    for g in job.slots:
        by_node.setdefault(sim.node_names[g // sim.gpn], []).append(g % sim.gpn)
    return Job(
        job_id=job.job_id,
        user=job.user,
        account=job.account,
        partition=job.partition,
        name=job.name,
        state=job.state,
        start_time=job.start_time,
        end_time=job.end_time,
        allocations=tuple(Allocation(n, tuple(ix)) for n, ix in by_node.items()),
        energy_joules=None if energy is None else energy.get(job.job_id),
    )


def build_snapshot(
    sim: SimFactory,
    energy: Mapping[str, float] | None = None,
    include_finished: bool = True,
) -> FactorySnapshot:
    """The factory now. ``energy`` is measured per-job energy (None: leave unknown)."""
    spec, gpn = sim.config.spec, sim.gpn
    reasons = {bit: name for name, bit in THROTTLE_BITS.items()}
    gpus: list[GPU] = []
    append = gpus.append
    down_nodes = {i for i, a in enumerate(sim.admin) if a.down or a.reboot_until is not None}
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
    for g in range(sim.gpu_count):
        i = g // gpn
        if i in down_nodes:
            # A down node's exporter is silent: no sample at all, not zeros.
            append(GPU(names[i], g % gpn, uuids[g], model, False))
            continue
        job = owner[g]
        if not up_arr[g]:
            append(
                GPU(
                    names[i],
                    g % gpn,
                    uuids[g],
                    model,
                    False,
                    last_xid=last_xid[g] or None,
                    last_xid_time=last_xid_t[g] or None,
                    xid_total=xids[g],
                    ecc_uncorrected_total=ecc[g],
                )
            )
            continue
        # Positional on purpose: keyword construction costs ~2x at 100,000 GPUs.
        append(
            GPU(
                names[i],
                g % gpn,
                uuids[g],
                model,
                True,
                util[g],
                mem_util[g],
                mem_used[g],
                mem_total,
                power[g],
                limit,
                counters[g],
                temp[g],
                clock[g],
                tuple(n for b, n in reasons.items() if throttle[g] & b) if throttle[g] else (),
                ecc[g],
                xids[g],
                last_xid[g] or None,
                last_xid_t[g] or None,
                (job.job_id,) if job is not None else (),
            )
        )
    nodes = tuple(
        Node(
            name=name,
            state=node_state(sim, i),
            reason=sim.admin[i].reason,
            reason_time=sim.admin[i].reason_time,
            partitions=(sim.config.partition,),
            gpu_count=gpn,
            gpus_allocated=gpn - sim.free[i],
        )
        for i, name in enumerate(sim.node_names)
    )
    jobs = [_job(sim, j, energy) for j in sim.jobs.values()]
    if include_finished:
        jobs.extend(_job(sim, j, energy) for j in sim.finished)
    return FactorySnapshot(
        time=sim.now, nodes=nodes, gpus=tuple(gpus), jobs=tuple(jobs), source="demo"
    )
