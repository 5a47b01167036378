"""``factoryctl jobs`` from per-job aggregates computed by the engine (telemetry only).

Each GPU metric is joined to the exporter's attribution on the engine
(``metric * on(node, gpu) group_right job_info``: a GPU shared by two jobs counts for
both, as in ``occupancy.job_occupancy``), then reduced ``by (job_id)``: mean, 10th
percentile (PromQL's ``quantile`` interpolates like ``occupancy.percentile``), idle count,
sums. Only the attribution itself comes back per GPU, for the allocations. With a
scheduler the allocation is not in Prometheus, so the per-GPU path is used instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from factoryctl.energy import joules_to_kwh
from factoryctl.model import Allocation, FactorySnapshot, Job, Node, NodeState
from factoryctl.occupancy import ACTIVE_THRESHOLD
from factoryctl.telemetry.job_energy import PARALLEL_QUERIES, dur
from factoryctl.telemetry.metrics import MetricSchema, node_name
from factoryctl.telemetry.prom_detect import gpu_key
from factoryctl.views import job_identity

if TYPE_CHECKING:
    from factoryctl.telemetry.prometheus_source import PrometheusSource

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


def job_rows(
    source: PrometheusSource, at: float | None = None
) -> tuple[FactorySnapshot, list[Row]] | None:
    """Snapshot (nodes and jobs, no GPUs) and one row per running job; None where this
    path does not apply (a scheduler is configured, or the schema has no attribution)."""
    t = source.clock() if at is None else at
    schema = source.schema(t)
    warnings: list[str] = []
    failures: list[str] = []
    if schema.job_info is None or source.scheduler_view(t, warnings, failures) is not None:
        return None
    plan = _plan(schema, source.window(t), source.options.inventory_window)
    client = source.client
    with ThreadPoolExecutor(max_workers=min(PARALLEL_QUERIES, len(plan))) as pool:
        futures = {k: pool.submit(client.query, q, t) for k, q in plan.items()}
        results = {k: f.result() for k, f in futures.items()}
    per_job: dict[str, dict[str, float]] = {
        k: {s.labels.get("job_id", ""): s.value for s in r.vector}
        for k, r in results.items()
        if k not in ("held", "nodes")
    }
    scale = schema.gauges["utilization"].scale if "utilization" in schema.gauges else 1.0
    for key in ("mean_utilization", "low_utilization"):
        per_job[key] = {j: v * scale for j, v in per_job.get(key, {}).items()}
    jobs = _jobs(schema, results["held"].vector)
    rows = [_row(job, per_job, t) for job in jobs]
    node_names = sorted(node_name(s.labels, schema.node_label) for s in results["nodes"].vector)
    warnings.extend(client.warnings)
    client.warnings.clear()
    snap = FactorySnapshot(
        time=t,
        # Names only (for --node HOSTLIST): the jobs view shows no node state.
        nodes=tuple(Node(name=n, state=NodeState.UNKNOWN) for n in node_names),
        jobs=tuple(jobs),
        source=f"prometheus:{schema.name}",
        warnings=tuple(dict.fromkeys(warnings)),
        scheduler_error="; ".join(failures),
    )
    return snap, rows


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


def _row(job: Job, per_job: Mapping[str, Mapping[str, float]], now: float) -> Row:
    def get(key: str) -> float | None:
        return per_job.get(key, {}).get(job.job_id)

    energy = get("energy_joules")
    return {
        **job_identity(job, now),
        "mean_utilization": get("mean_utilization"),
        "low_utilization": get("low_utilization"),
        # Like occupancy.job_occupancy: idle among reporting GPUs, 0 when none report.
        "idle_gpus": int(get("idle_gpus") or 0),
        "idle_seconds": get("idle_seconds"),
        "memory_used_bytes": get("memory_used_bytes"),
        "power_watts": get("power_watts"),
        "energy_joules": energy,
        "energy_kwh": None if energy is None else joules_to_kwh(energy),
    }
