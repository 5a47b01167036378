"""Node and job summaries from GPU objects: the rollups (issue 13), computed in Python.

A source holding the rollups fills ``FactorySnapshot.node_summaries``/``job_summaries``
from the engine; these functions compute the very same figures from a snapshot's GPUs,
so the demo, the simulator and the tests produce what a rollup-reading source produces,
and ``summarized`` turns any full snapshot into the summarized one the console gets at
scale (the summaries plus the problem GPUs only). Pure and stdlib-only.

There is one definition of each rollup: ``rollups.rollup``, which the exporter and the
lab's backfill call too. Here each node's GPUs go through it, and the (node, job) rows are
summed per job the way ``telemetry.job_summary.from_rollups`` sums the engine's: mean
utilization over the GPUs that report, idle = reporting - active, the longest idle spell,
the power summed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from factoryctl.model import GPU, FactorySnapshot, JobState, JobSummary, NodeState, NodeSummary
from factoryctl.occupancy import ACTIVE_THRESHOLD, Occupancy
from factoryctl.rollups import THROTTLE_REASONS, JobKey, JobRollup, NodeGpus, NodeRollup, rollup

# At or over this, a GPU is named in the Overview's problems (and fetched one by one).
HOT_CELSIUS = 85.0


@dataclass(frozen=True, slots=True)
class Rolled:
    """One node's rollups from its GPU objects, plus what the engine path reads beside
    them: per (node, job) the GPUs that report a utilization (the engine counts them per
    GPU on nodes that lost one), the XID counters' presence and the power limits."""

    node: NodeRollup
    jobs: tuple[JobRollup, ...]
    reporting: dict[str, int]  # job id -> its up GPUs here with a utilization
    xid_known: bool  # some GPU has an XID counter (dcgm sites may have none)
    power_limit_watts: float | None  # sum over up GPUs with a power reading


def rolled_nodes(
    snapshot: FactorySnapshot, threshold: float = ACTIVE_THRESHOLD
) -> dict[str, Rolled]:
    """Every node's rollups, by ``rollups.rollup`` over its GPUs' columns (sliced per
    node, as the exporter and the backfill hand it theirs: no GPU object is built)."""
    table = snapshot.columns()
    col = table.column
    holders = _holders(snapshot)
    spans: dict[str, list[tuple[int, int]]] = {}
    for name, lo, hi in table.layout.runs():
        spans.setdefault(name, []).append((lo, hi))
    up, util, power, limit = (
        col("up"),
        col("utilization"),
        col("power_watts"),
        col("power_limit_watts"),
    )
    index, xids = col("index"), col("xid_total")
    out = {}
    for name, parts in spans.items():

        def take(c: Sequence[Any], parts: list[tuple[int, int]] = parts) -> Sequence[Any]:
            if len(parts) == 1:
                return c[parts[0][0] : parts[0][1]]
            return [c[p] for lo, hi in parts for p in range(lo, hi)]  # in several runs

        jobs = [holders.get((name, i), ()) for i in take(index)]
        ups, utils, powers, node_xids = take(up), take(util), take(power), take(xids)
        gpus = NodeGpus(
            up=ups,
            utilization=utils,
            power_watts=powers,
            temperature_celsius=take(col("temperature_celsius")),
            throttled=[
                bool(r) and not THROTTLE_REASONS.isdisjoint(r)
                for r in take(col("throttle_reasons"))
            ],
            last_xid_time=take(col("last_xid_time")),
            xid_errors=[v or 0.0 for v in node_xids],
            energy_joules=take(col("energy_joules")),
            idle_seconds=take(col("idle_seconds")),
            jobs=jobs,
            memory_used_bytes=take(col("memory_used_bytes")),
        )
        node, held = rollup(gpus, snapshot.time, threshold)
        reporting: dict[str, int] = {}
        limits, node_limits = [], take(limit)
        for k, is_up in enumerate(ups):
            if not is_up:
                continue
            if utils[k] is not None:
                for job_id, _ in jobs[k]:
                    reporting[job_id] = reporting.get(job_id, 0) + 1
            if powers[k] is not None:
                limits.append(node_limits[k])
        out[name] = Rolled(
            node,
            held,
            reporting,
            xid_known=any(v is not None for v in node_xids),
            power_limit_watts=sum(limits) if limits and all(limits) else None,
        )
    return out


def node_summary(r: Rolled) -> NodeSummary:
    n = r.node
    return NodeSummary(
        gpus=n.gpus,
        gpus_up=n.gpus_up,
        gpus_allocated=n.gpus_allocated,
        gpus_active=n.gpus_active,
        utilization=n.utilization,
        power_watts=n.power_watts,
        temperature_max_celsius=n.temperature_max_celsius,
        xid_total=n.xid_errors if r.xid_known else None,
        power_limit_watts=r.power_limit_watts,
    )


def node_summaries(
    snapshot: FactorySnapshot, threshold: float = ACTIVE_THRESHOLD
) -> dict[str, NodeSummary]:
    return {k: node_summary(r) for k, r in rolled_nodes(snapshot, threshold).items()}


def job_summaries(
    snapshot: FactorySnapshot,
    threshold: float = ACTIVE_THRESHOLD,
    rolled: dict[str, Rolled] | None = None,
) -> dict[str, JobSummary]:
    """Running jobs only: utilization and power describe the present. The (node, job)
    rollups summed per job, as the engine path sums them."""
    if rolled is None:
        rolled = rolled_nodes(snapshot, threshold)
    acc: dict[str, list[float]] = {}  # job -> [util sum, reporting, active]
    power: dict[str, float] = {}
    spell: dict[str, float] = {}
    for r in rolled.values():
        for j in r.jobs:
            if j.utilization_sum is not None:
                a = acc.setdefault(j.job_id, [0.0, 0.0, 0.0])
                a[0] += j.utilization_sum
                a[1] += r.reporting.get(j.job_id, 0)
                a[2] += j.gpus_active
            if j.power_watts is not None:
                power[j.job_id] = power.get(j.job_id, 0.0) + j.power_watts
            if j.idle_seconds is not None:
                spell[j.job_id] = max(spell.get(j.job_id, 0.0), j.idle_seconds)
    out = {}
    for job in snapshot.jobs:
        if job.state is not JobState.RUNNING:
            continue
        total, counted, busy = acc.get(job.job_id, (0.0, 0.0, 0.0))
        out[job.job_id] = JobSummary(
            reporting=int(counted),
            mean_utilization=total / counted if counted else None,
            idle_gpus=int(counted - busy) if counted else 0,
            idle_seconds=spell.get(job.job_id),
            power_watts=power.get(job.job_id),
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
    rolled = rolled_nodes(snapshot)
    return replace(
        snapshot,
        gpus=tuple(g for g in snapshot.gpus if is_problem(g)),
        node_summaries={k: node_summary(r) for k, r in rolled.items()},
        job_summaries=job_summaries(snapshot, rolled=rolled),
    )


# ``NodeState.out_of_service`` once per state, not once per node (12,500 a poll).
_OUT_OF_SERVICE = frozenset(s for s in NodeState if s.out_of_service)


def summary_occupancy(snapshot: FactorySnapshot) -> Occupancy:
    """``occupancy.factory_occupancy`` from the summaries. Idle allocated GPUs are the
    running jobs' idle GPUs summed (a GPU shared by two jobs counts twice, where the
    per-GPU count takes it once); GPUs up without a utilization count as reporting."""
    out_nodes = {n.name for n in snapshot.nodes if n.state in _OUT_OF_SERVICE}
    total = allocated = active = oos = unreported = 0
    for name, s in snapshot.node_summaries.items():
        gpus, lost = s.gpus, s.gpus - s.gpus_up
        total += gpus
        allocated += s.gpus_allocated
        active += s.gpus_active
        unreported += lost
        oos += gpus if name in out_nodes else lost
    idle = sum(j.idle_gpus for j in snapshot.job_summaries.values())
    return Occupancy(total, allocated, active, idle, oos, unreported)


def _holders(snapshot: FactorySnapshot) -> dict[tuple[str, int], tuple[JobKey, ...]]:
    """Each GPU's jobs: those it names (the exporter's attribution) and those whose
    unfinished allocation holds it (the scheduler's), as the rollups' (job id, user)."""
    users = {j.job_id: j.user for j in snapshot.jobs}
    out: dict[tuple[str, int], dict[JobKey, None]] = {}
    table = snapshot.columns()
    for node, i, ids in zip(
        table.layout.nodes, table.column("index"), table.column("job_ids"), strict=True
    ):
        if ids:
            out[(node, i)] = {(j, users.get(j, "")): None for j in ids}
    for job in snapshot.jobs:
        if not job.state.finished:
            for a in job.allocations:
                for i in a.gpu_indices:
                    out.setdefault((a.node, i), {})[(job.job_id, job.user)] = None
    return {k: tuple(v) for k, v in out.items()}
