"""Node and job summaries from GPU objects: the rollups (issue 13), computed in Python.

A source holding the rollups fills ``FactorySnapshot.node_summaries``/``job_summaries``
from the engine; these functions compute the very same figures from a snapshot's GPUs,
so the demo, the simulator and the tests produce what a rollup-reading source produces,
and ``summarized`` turns any full snapshot into the summarized one the console gets at
scale (the summaries plus the problem GPUs only). Pure and stdlib-only.

Definitions follow the exporter's rollups: up GPUs only for means, sums and maxima; XID
counters of every GPU, up or lost; a job's idle spell is the longest of its reporting GPUs.
"""

from __future__ import annotations

from dataclasses import replace

from factoryctl.model import GPU, FactorySnapshot, JobState, JobSummary, NodeSummary
from factoryctl.occupancy import ACTIVE_THRESHOLD, Occupancy

# At or over this, a GPU is named in the Overview's problems (and fetched one by one).
HOT_CELSIUS = 85.0


def node_summaries(
    snapshot: FactorySnapshot, threshold: float = ACTIVE_THRESHOLD
) -> dict[str, NodeSummary]:
    allocated = _allocated_keys(snapshot)
    by_node: dict[str, list[GPU]] = {}
    for g in snapshot.gpus:
        by_node.setdefault(g.node, []).append(g)
    out = {}
    for name, gpus in by_node.items():
        up = [g for g in gpus if g.up]
        utils = [g.utilization for g in up if g.utilization is not None]
        powers = [g.power_watts for g in up if g.power_watts is not None]
        temps = [g.temperature_celsius for g in up if g.temperature_celsius is not None]
        xids = [g.xid_total for g in gpus if g.xid_total is not None]
        out[name] = NodeSummary(
            gpus=len(gpus),
            gpus_up=len(up),
            gpus_allocated=sum(1 for g in gpus if g.job_ids or g.key in allocated),
            gpus_active=sum(1 for u in utils if u >= threshold),
            utilization=sum(utils) / len(utils) if utils else None,
            power_watts=sum(powers) if powers else None,
            temperature_max_celsius=max(temps) if temps else None,
            xid_total=sum(xids) if xids else None,
        )
    return out


def job_summaries(
    snapshot: FactorySnapshot, threshold: float = ACTIVE_THRESHOLD
) -> dict[str, JobSummary]:
    """Running jobs only: utilization and power describe the present."""
    out = {}
    for job in snapshot.jobs:
        if job.state is not JobState.RUNNING:
            continue
        gpus = [g for g in snapshot.gpus_of_job(job) if g.up and g.utilization is not None]
        utils = [g.utilization for g in gpus if g.utilization is not None]
        spells = [g.idle_seconds for g in gpus if g.idle_seconds is not None]
        powers = [g.power_watts for g in gpus if g.power_watts is not None]
        out[job.job_id] = JobSummary(
            reporting=len(utils),
            mean_utilization=sum(utils) / len(utils) if utils else None,
            idle_gpus=sum(1 for u in utils if u < threshold),
            idle_seconds=max(spells) if spells else None,
            power_watts=sum(powers) if powers else None,
        )
    return out


def is_problem(g: GPU) -> bool:
    """A GPU the Overview names one by one: lost, with an XID, hot or throttled."""
    if not g.up:
        return True
    hot = g.temperature_celsius is not None and g.temperature_celsius >= HOT_CELSIUS
    return bool(g.last_xid) or hot or bool(g.throttle_reasons)


def summarized(snapshot: FactorySnapshot) -> FactorySnapshot:
    """The snapshot a rollup-reading source gives for the same factory: summaries of
    every node and running job, and only the problem GPUs."""
    return replace(
        snapshot,
        gpus=tuple(g for g in snapshot.gpus if is_problem(g)),
        node_summaries=node_summaries(snapshot),
        job_summaries=job_summaries(snapshot),
    )


def summary_occupancy(snapshot: FactorySnapshot) -> Occupancy:
    """``occupancy.factory_occupancy`` from the summaries. Idle allocated GPUs are the
    running jobs' idle GPUs summed (a GPU shared by two jobs counts twice, where the
    per-GPU count takes it once); GPUs up without a utilization count as reporting."""
    out_nodes = {n.name for n in snapshot.nodes if n.state.out_of_service}
    total = allocated = active = oos = unreported = 0
    for name, s in snapshot.node_summaries.items():
        total += s.gpus
        allocated += s.gpus_allocated
        active += s.gpus_active
        unreported += s.gpus - s.gpus_up
        oos += s.gpus if name in out_nodes else s.gpus - s.gpus_up
    idle = sum(j.idle_gpus for j in snapshot.job_summaries.values())
    return Occupancy(total, allocated, active, idle, oos, unreported)


def _allocated_keys(snapshot: FactorySnapshot) -> set[tuple[str, int]]:
    return {
        (a.node, i)
        for job in snapshot.jobs
        if not job.state.finished
        for a in job.allocations
        for i in a.gpu_indices
    }
