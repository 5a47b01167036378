"""``factoryctl jobs`` from per-job aggregates computed by the engine (telemetry only).

Each GPU metric is joined to the exporter's attribution on the engine
(``metric * on(node, gpu) group_right job_info``: a GPU shared by two jobs counts for
both, as in ``occupancy.job_occupancy``), then reduced ``by (job_id)``: mean, 10th
percentile (PromQL's ``quantile`` interpolates like ``occupancy.percentile``), idle count,
sums. Only the attribution itself comes back per GPU, for the allocations. With a
scheduler the allocation is not in Prometheus, so the per-GPU path is used instead.

Where the engine holds the (node, job) rollups (issue 13) every column comes from them
(one series per node a job runs on, reduced ``by (job_id)`` on the engine or summed here):
allocations, GPU counts, mean utilization, idle GPUs, idle spell, power, memory in use
and the least busy GPU (``min_utilization``: the minimum of the per-node minima, exact).
No per-GPU series is joined. The 10th percentile (``low_utilization``) cannot be built
from per-node figures, so on this path it is null and listed in ``unavailable``; the
per-GPU path gives both. A node that lost a GPU is read per GPU for its jobs' reporting
counts, so the means stay those of the GPUs that report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from factoryctl.energy import joules_to_kwh
from factoryctl.model import Allocation, FactorySnapshot, Job, Node, NodeState
from factoryctl.occupancy import ACTIVE_THRESHOLD
from factoryctl.telemetry import schema as native
from factoryctl.telemetry.client import label_matcher
from factoryctl.telemetry.job_energy import dur
from factoryctl.telemetry.metrics import MetricSchema, node_name
from factoryctl.telemetry.prom_context import PromContext, Rollups, run_all
from factoryctl.telemetry.prom_detect import NO_ROLLUPS, gpu_key
from factoryctl.telemetry.results import QueryResult
from factoryctl.views import job_identity

Row = dict[str, Any]


def _plan(schema: MetricSchema, window: float, inventory: float) -> dict[str, str]:
    assert schema.job_info is not None
    w = dur(window)
    held = f"last_over_time({schema.job_info}[{w}])"
    on = f"on ({schema.node_label}, {schema.gpu_label}) group_right"

    def joined(field: str) -> str | None:
        f = schema.gauges.get(field)
        return None if f is None else f"(last_over_time({f.metric}[{w}]) * {on} {held})"

    plan = {
        "held": f"group by (job_id, user, {schema.node_label}, {schema.gpu_label}) ({held})",
        "nodes": f"count by ({schema.node_label}) "
        f"(last_over_time({schema.inventory}[{dur(inventory)}]))",
    }
    util = joined("utilization")
    if util is not None:
        scale = schema.gauges["utilization"].scale
        plan["mean_utilization"] = f"avg by (job_id) ({util})"
        plan["low_utilization"] = f"quantile by (job_id) (0.1, {util})"
        plan["min_utilization"] = f"min by (job_id) ({util})"
        plan["reporting"] = f"count by (job_id) ({util})"
        plan["idle_gpus"] = f"count by (job_id) ({util} < {ACTIVE_THRESHOLD / scale:g})"
    for key, field in (("memory_used_bytes", "memory_used_bytes"), ("power_watts", "power_watts")):
        expr = joined(field)
        if expr is not None:
            plan[key] = f"sum by (job_id) ({expr})"
    idle = joined("idle_seconds")
    if idle is not None:
        # Active GPUs report 0: the longest spell is 0 for a job with no idle GPU.
        plan["idle_seconds"] = f"max by (job_id) ({idle})"
    if schema.job_energy is not None:
        plan["energy_joules"] = f"sum by (job_id) (last_over_time({schema.job_energy}[{w}]))"
    return plan


# The labels that key a (node, job) rollup, as ``PairKey``.
PAIR_LABELS = ("node", "job_id")
# The (node, job) rollups summed here, per pair: read as columns (``prom_context.Rollups``).
PAIR_ROLLUPS = {
    "held": native.JOB_GPUS,
    "active": native.JOB_GPUS_ACTIVE,
    "util_sum": native.JOB_UTILIZATION_SUM,
    "power_watts": native.JOB_POWER,
    "idle_seconds": native.JOB_IDLE_SECONDS,
}
# What ``factoryctl jobs`` reads per pair: the GPUs held (the allocations, and each pair's
# user) and the utilization sum (which pairs report: the means' denominators). Its other
# pair rollups come reduced ``by (job_id)`` (``rollup_plan``): the same figures, summed on
# the engine, in answers of ~6,800 series with one label instead of ~15,000 with four
# (at 100,000 GPUs about 4.4 of the ~11 MB of JSON the command parsed).
CLI_PAIR_ROLLUPS = {k: PAIR_ROLLUPS[k] for k in ("held", "util_sum")}


def rollup_plan(schema: MetricSchema, window: float, inventory: float) -> dict[str, str]:
    """The (node, job) rollups: as they stand where a job's nodes are summed here (the
    counts need the pairs), reduced by job on the engine where one figure per job will do."""
    w = dur(window)
    plan = {}  # the pairs themselves: read as columns in job_rows
    # Nodes with a lost GPU: their jobs' GPUs are not all reporting (few, or none).
    plan["degraded"] = (
        f"last_over_time({native.NODE_GPUS}[{w}])"
        f" > on (node) last_over_time({native.NODE_GPUS_UP}[{w}])"
    )
    plan["nodes"] = f"last_over_time({native.NODE_GPUS}[{dur(inventory)}])"
    plan["min_utilization"] = f"min by (job_id) (last_over_time({native.JOB_UTILIZATION_MIN}[{w}]))"
    plan["memory_used_bytes"] = f"sum by (job_id) (last_over_time({native.JOB_MEMORY_USED}[{w}]))"
    # A pair with no utilization sum has no GPU up and known: none active, so the sum over
    # every pair is the sum over the reporting ones that ``from_rollups`` would take.
    plan["active_gpus"] = f"sum by (job_id) (last_over_time({native.JOB_GPUS_ACTIVE}[{w}]))"
    plan["power_watts"] = f"sum by (job_id) (last_over_time({native.JOB_POWER}[{w}]))"
    plan["idle_seconds"] = f"max by (job_id) (last_over_time({native.JOB_IDLE_SECONDS}[{w}]))"
    if schema.job_energy is not None:
        plan["energy_joules"] = f"sum by (job_id) (last_over_time({schema.job_energy}[{w}]))"
    return plan


# What the rollup path cannot give (a percentile of a job's GPUs from per-node figures).
ROLLUP_UNAVAILABLE = frozenset({"low_utilization"})


def job_rows(
    source: PromContext, at: float | None = None, node_names: bool = True
) -> tuple[FactorySnapshot, list[Row]] | None:
    """Snapshot (nodes and jobs, no GPUs) and one row per running job; None where this
    path does not apply (a scheduler is configured, or the schema has no attribution).
    ``node_names=False``: the snapshot names no node, and the node inventory (every
    node's GPUs over the inventory window, ~0.15 s of the engine's time at 100,000 GPUs)
    is not read; only ``--node`` needs it, to tell an unknown node from a node without
    jobs."""
    t = source.clock() if at is None else at
    schema = source.schema(t)
    warnings: list[str] = []
    failures: list[str] = []
    if schema.job_info is None or source.scheduler_view(t, warnings, failures) is not None:
        return None
    client = source.client
    window = source.window(t)
    rollups = source.rollups(t)
    if rollups:
        plan = rollup_plan(schema, window, source.options.inventory_window)
    else:
        plan = _plan(schema, window, source.options.inventory_window)
        if source.options.rollups == "auto":
            warnings.append(NO_ROLLUPS)
    if not node_names:
        del plan["nodes"]
    reads = {}
    if rollups:
        reads["pairs"] = Rollups(CLI_PAIR_ROLLUPS, dur(window), PAIR_LABELS, "user")
    results, columns = run_all(client, plan, reads, t)
    per_job: dict[str, dict[str, float]] = {
        k: {s.labels.get("job_id", ""): s.value for s in r.vector}
        for k, r in results.items()
        if k in PER_JOB
    }
    scale = schema.gauges["utilization"].scale if "utilization" in schema.gauges else 1.0
    for key in ("mean_utilization", "low_utilization", "min_utilization"):
        per_job[key] = {j: v * scale for j, v in per_job.get(key, {}).items()}
    if rollups:
        degraded = [s.labels.get("node", "") for s in results["degraded"].vector]
        reporting = reporting_on(source, schema, degraded, window, t)
        pairs = columns["pairs"]
        per_job.update(from_rollups(pairs.by_name, reporting, per_job.pop("active_gpus", {})))
        jobs = rollup_jobs(pairs.by_name["held"], pairs.carried)
        label = "node"
    else:
        jobs = _jobs(schema, results["held"].vector)
        label = schema.node_label
    rows = _rows(jobs, per_job, t)
    names = (
        sorted(node_name(s.labels, label) for s in results["nodes"].vector) if node_names else []
    )
    warnings.extend(client.warnings)
    client.warnings.clear()
    snap = FactorySnapshot(
        time=t,
        # Names only (for --node HOSTLIST): the jobs view shows no node state.
        nodes=tuple(Node(name=n, state=NodeState.UNKNOWN) for n in names),
        jobs=tuple(jobs),
        source=f"prometheus:{schema.name}",
        unavailable=ROLLUP_UNAVAILABLE if rollups else frozenset(),
        warnings=tuple(dict.fromkeys(warnings)),
        scheduler_error="; ".join(failures),
    )
    return snap, rows


# Results already reduced ``by (job_id)`` on the engine.
PER_JOB = frozenset(
    {"mean_utilization", "low_utilization", "min_utilization", "reporting", "idle_gpus"}
    | {"memory_used_bytes"}
    | {"power_watts", "idle_seconds", "energy_joules", "active_gpus"}
)
PairKey = tuple[str, str]  # (node, job_id)


def reporting_query(schema: MetricSchema, nodes: list[str], window: float) -> str | None:
    """Reporting GPUs per (node, job) on the nodes that lost a GPU, counted per GPU: a
    small, filtered join (None, no query at all, on a healthy factory)."""
    util = schema.gauges.get("utilization")
    if not nodes or util is None or schema.job_info is None:
        return None
    w = dur(window)
    sel = f'{{{schema.node_label}=~"{label_matcher(nodes)}"}}'
    on = f"on ({schema.node_label}, {schema.gpu_label}) group_right"
    return (
        f"count by ({schema.node_label}, job_id) (last_over_time({util.metric}{sel}[{w}])"
        f" * {on} last_over_time({schema.job_info}{sel}[{w}]))"
    )


def reporting_from(schema: MetricSchema, result: QueryResult) -> dict[PairKey, float]:
    return {
        (node_name(s.labels, schema.node_label), s.labels.get("job_id", "")): s.value
        for s in result.vector
    }


def reporting_on(
    source: PromContext, schema: MetricSchema, nodes: list[str], window: float, t: float
) -> dict[PairKey, float]:
    q = reporting_query(schema, nodes, window)
    return {} if q is None else reporting_from(schema, source.client.query(q, t))


Pairs = Mapping[PairKey, float]


def from_rollups(
    pairs: Mapping[str, Pairs], reporting: Pairs, active_by_job: Mapping[str, float] | None = None
) -> dict[str, dict[str, float]]:
    """The per-job columns from (node, job) rollups (``pairs``: each rollup's values by
    (node, job id)), summed over the job's nodes.

    Mean utilization is over reporting GPUs, as ``occupancy.job_occupancy``: a node's
    utilization sum divided by its GPUs, except on nodes with a lost GPU where the
    reporting count was read per GPU. Idle GPUs are reporting minus active: ``active_by_job``
    where the engine summed the active GPUs by job, else the pairs' ``active``. Power and
    the idle spell only where ``pairs`` holds them (else the engine reduced them by job)."""
    held, active = pairs["held"], pairs.get("active", {})
    sums: dict[str, list[float]] = {}  # job -> [utilization sum, reporting, active]
    for pair, total in pairs["util_sum"].items():
        acc = sums.get(pair[1])
        if acc is None:
            acc = sums[pair[1]] = [0.0, 0.0, 0.0]
        acc[0] += total
        acc[1] += reporting.get(pair, held.get(pair, 0.0))
        acc[2] += active.get(pair, 0.0)
    busy_of = None if active_by_job is None else active_by_job.get
    mean: dict[str, float] = {}
    idle: dict[str, float] = {}
    counted_by_job: dict[str, float] = {}
    for job_id, (total, counted, busy) in sums.items():
        if counted > 0:
            mean[job_id] = total / counted
            idle[job_id] = counted - (busy if busy_of is None else busy_of(job_id, 0.0))
            counted_by_job[job_id] = counted
    out = {"mean_utilization": mean, "idle_gpus": idle, "reporting": counted_by_job}
    if "power_watts" in pairs:
        power: dict[str, float] = {}
        for (_, job_id), watts in pairs["power_watts"].items():
            power[job_id] = power.get(job_id, 0.0) + watts
        out["power_watts"] = power
    if "idle_seconds" in pairs:
        spell: dict[str, float] = {}
        for (_, job_id), seconds in pairs["idle_seconds"].items():
            spell[job_id] = max(spell.get(job_id, 0.0), seconds)
        out["idle_seconds"] = spell
    return out


# Each job as the last poll built it, with the GPUs per node it was built from.
ReusedJobs = dict[str, tuple[dict[str, int], Job]]


def rollup_jobs(
    held: Pairs,
    users: Mapping[PairKey, str],
    energy: Mapping[str, float] | None = None,
    reuse: ReusedJobs | None = None,
) -> list[Job]:
    """Jobs from ``factoryctl_job_gpus`` (by (node, job id), with each pair's user): per
    node how many GPUs, not which (the jobs view shows counts and node lists, never
    indices). ``energy``: each job's measured joules, where known.

    ``reuse``: each job as the last poll built it. A job holding the same GPUs per node
    keeps that same (immutable, equal) allocations tuple, and where its user and energy
    did not change either (polls within one scrape interval read the same samples), the
    same job: at 100,000 GPUs ~15,000 ``Allocation`` and ~6,800 ``Job`` objects cost
    ~50 ms a poll to build. ``reuse`` is then replaced by this poll's jobs, so a finished
    job leaves it."""
    alloc: dict[str, dict[str, int]] = {}
    get = alloc.get
    for (node, job_id), n in held.items():
        if job_id and node:
            by_node = get(job_id)
            if by_node is None:
                by_node = alloc[job_id] = {}
            by_node[node] = int(n)
    user_of = {job_id: users.get(pair, "") for pair in held if (job_id := pair[1])}
    energy_of = (energy or {}).get
    previous: Mapping[str, tuple[dict[str, int], Job]] = reuse if reuse is not None else {}
    last = previous.get
    kept: ReusedJobs = {}
    for job_id, by_node in sorted(alloc.items()):
        user, joules = user_of[job_id], energy_of(job_id)
        before = last(job_id)
        if before is not None and before[0] == by_node:
            job = before[1]
            if job.user != user or job.energy_joules != joules:
                job = Job(
                    job_id=job_id, user=user, allocations=job.allocations, energy_joules=joules
                )
        else:
            if len(by_node) == 1:  # most jobs: one node, no sort and no generator
                ((node, n),) = by_node.items()
                allocations: tuple[Allocation, ...] = (Allocation(node, (), n),)
            else:
                allocations = tuple(
                    [Allocation(node, (), n) for node, n in sorted(by_node.items())]
                )
            job = Job(job_id, user, allocations=allocations, energy_joules=joules)
        kept[job_id] = (by_node, job)
    if reuse is not None:
        reuse.clear()
        reuse.update(kept)
    return [job for _, job in kept.values()]


def _jobs(schema: MetricSchema, held: Any) -> list[Job]:
    users: dict[str, str] = {}
    alloc: dict[str, dict[str, set[int]]] = {}
    for s in held:
        key = gpu_key(schema, s.labels)
        job_id = s.labels.get("job_id", "")
        if key is None or not job_id:
            continue
        users[job_id] = s.labels.get("user", "")
        alloc.setdefault(job_id, {}).setdefault(key[0], set()).add(key[1])
    return [
        Job(
            job_id=job_id,
            user=users[job_id],
            allocations=tuple(
                Allocation(node, tuple(sorted(idx))) for node, idx in sorted(by_node.items())
            ),
        )
        for job_id, by_node in sorted(alloc.items())
    ]


def _rows(jobs: Sequence[Job], per_job: Mapping[str, Mapping[str, float]], now: float) -> list[Row]:
    """One row per job: ``views.job_identity`` and the per-job columns (at 100,000 GPUs
    6,800 jobs: each column's dict looked up once, not once per row and column)."""
    empty: Mapping[str, float] = {}

    def column(key: str) -> Callable[[str], float | None]:
        return per_job.get(key, empty).get

    mean, low, least = (
        column("mean_utilization"),
        column("low_utilization"),
        column("min_utilization"),
    )
    idle, spell, memory = column("idle_gpus"), column("idle_seconds"), column("memory_used_bytes")
    power, energy_of = column("power_watts"), column("energy_joules")
    rows: list[Row] = []
    append = rows.append
    for job in jobs:
        job_id = job.job_id
        energy = energy_of(job_id)
        row = job_identity(job, now)
        row["mean_utilization"] = mean(job_id)
        row["low_utilization"] = low(job_id)
        row["min_utilization"] = least(job_id)
        # Like occupancy.job_occupancy: idle among reporting GPUs, 0 when none report.
        row["idle_gpus"] = int(idle(job_id) or 0)
        row["idle_seconds"] = spell(job_id)
        row["memory_used_bytes"] = memory(job_id)
        row["power_watts"] = power(job_id)
        row["energy_joules"] = energy
        row["energy_kwh"] = None if energy is None else joules_to_kwh(energy)
        # The only energy this path reads is the exporter's per-job counter.
        row["energy_source"] = "none" if energy is None else "job-counter"
        append(row)
    return rows
