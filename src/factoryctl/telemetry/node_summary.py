"""``factoryctl nodes`` from per-node aggregates computed by the engine.

The nodes view shows no GPU, so it never fetches per-GPU vectors: counts, sums, means and
maxima ``by (node)`` come back as one small vector each (12,500 samples at 100k GPUs
instead of 100,000 per metric). Rows have exactly the keys of ``views.node_rows``; every
"latest value" is ``last_over_time(...[source.window()])`` (2 scrape intervals + search delay), so backfilled data without
staleness markers reads the same as live data.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from factoryctl.model import FactorySnapshot, Node, NodeState
from factoryctl.telemetry import schema as native
from factoryctl.telemetry.job_energy import PARALLEL_QUERIES, dur
from factoryctl.telemetry.metrics import (
    NATIVE,
    MetricSchema,
    no_gpus_warning,
    node_name,
    recorded_query,
)

if TYPE_CHECKING:
    from factoryctl.telemetry.prometheus_source import PrometheusSource

Row = dict[str, Any]


def _queries(
    schema: MetricSchema, window: float, inventory: float, telemetry_jobs: bool
) -> dict[str, str]:
    by = f"by ({schema.node_label})"
    # One value per GPU: dcgm-exporter's job mapping copies a GPU's series per job
    # (``hpc_job``), and a job change starts new series; a GPU counts once, never per copy.
    per_gpu = f"by ({schema.node_label}, {schema.gpu_label})"
    w = dur(window)

    def latest(field: str) -> str | None:
        f = schema.gauges.get(field)
        return None if f is None else f"max {per_gpu} (last_over_time({f.metric}[{w}]))"

    marker = f"max {per_gpu} (last_over_time({schema.marker}[{w}]))"
    inventory_q = f"group {per_gpu} (last_over_time({schema.inventory}[{dur(inventory)}]))"
    plan = {
        "gpus_total": f"count {by} ({inventory_q})",
        "reporting": f"count {by} ({marker} > 0)" if schema is NATIVE else f"count {by} ({marker})",
    }
    for key, field, agg in (
        ("utilization", "utilization", "avg"),
        ("power_watts", "power_watts", "sum"),
        ("temperature_max_celsius", "temperature_celsius", "max"),
    ):
        expr = latest(field)
        if expr is not None:
            plan[key] = f"{agg} {by} ({expr})"
    if schema is NATIVE:
        plan["xid_total"] = f"sum {by} (last_over_time({native.GPU_XID_ERRORS}[{w}]))"
    if telemetry_jobs and schema.job_info is not None:
        plan["gpus_allocated"] = (
            f"count {by} (count by ({schema.node_label}, {schema.gpu_label}) "
            f"(last_over_time({schema.job_info}[{w}])))"
        )
    elif telemetry_jobs and schema.attribution is not None:
        mapped = f'{schema.attribution}{{{schema.attribution_label}!=""}}'

        def held(window: str) -> str:
            expr = f"last_over_time({mapped}[{window}])"
            if schema.attribution_node == schema.node_label:
                return expr
            # The scheduler-exporter names the node ``node``; the rows key on the schema's.
            return f'label_replace({expr}, "{schema.node_label}", "$1", "{schema.attribution_node}", "(.*)")'

        plan["gpus_allocated"] = f"count {by} (count {per_gpu} ({held(w)}))"
        # Recorded at all (a scheduler-exporter: its gauge, with no job running too).
        plan["attributed"] = recorded_query(schema, dur(inventory))
    return plan


def node_rows(
    source: PrometheusSource, at: float | None = None
) -> tuple[FactorySnapshot, list[Row]]:
    """The nodes view: a snapshot holding nodes only, and one row per node."""
    t = source.clock() if at is None else at
    schema = source.schema(t)
    window = source.window(t)
    warnings: list[str] = []
    failures: list[str] = []
    sched = source.scheduler_view(t, warnings, failures)
    plan = _queries(schema, window, source.options.inventory_window, sched is None)
    client = source.client
    with ThreadPoolExecutor(max_workers=min(PARALLEL_QUERIES, len(plan))) as pool:
        futures = {k: pool.submit(client.query, q, t) for k, q in plan.items()}
        values: dict[str, dict[str, float]] = {
            k: {node_name(s.labels, schema.node_label): s.value for s in f.result().vector}
            for k, f in futures.items()
        }
    if values.get("xid_total"):
        # As in the per-GPU path: where XIDs are counted at all, a reporting node without
        # any XID series has had none (0), not an unknown number.
        for name in values["reporting"]:
            values["xid_total"].setdefault(name, 0.0)
    util_scale = schema.gauges["utilization"].scale if "utilization" in schema.gauges else 1.0
    values["utilization"] = {n: v * util_scale for n, v in values.get("utilization", {}).items()}
    # No scheduler and no attribution (dcgm-exporter without job mapping): who holds a
    # GPU, and so a node's state, is unknown.
    blind = sched is None and schema.job_info is None and not values.get("attributed")
    if sched is not None:
        nodes = sched[0]
    else:
        nodes = [
            _node_from_counts(n, values, blind)
            for n in sorted(values["gpus_total"].keys() | values["reporting"].keys())
        ]
    rows = [_row(node, values, blind) for node in nodes]
    if not values["gpus_total"] and not values["reporting"]:
        warnings.append(no_gpus_warning(schema))
    warnings.extend(client.warnings)
    client.warnings.clear()
    unavailable = {
        k
        for k in ("xid_total", "utilization", "power_watts", "temperature_max_celsius")
        if k not in plan
    }
    if blind:
        unavailable.update(("state", "gpus_allocated"))
    snap = FactorySnapshot(
        time=t,
        nodes=tuple(nodes),
        source=f"prometheus:{schema.name}",
        unavailable=frozenset(unavailable),
        warnings=tuple(dict.fromkeys(warnings)),
        scheduler_error="; ".join(failures),
    )
    return snap, rows


def _node_from_counts(
    name: str, values: Mapping[str, Mapping[str, float]], blind: bool = False
) -> Node:
    total = int(values["gpus_total"].get(name, 0))
    held = int(values.get("gpus_allocated", {}).get(name, 0))
    reporting = int(values["reporting"].get(name, 0))
    if reporting == 0:
        state, reason = NodeState.DOWN, "no telemetry (exporter not reporting)"
    elif blind:
        state, reason = NodeState.UNKNOWN, ""
    elif held == 0:
        state, reason = NodeState.IDLE, ""
    elif held >= total:
        state, reason = NodeState.ALLOCATED, ""
    else:
        state, reason = NodeState.MIXED, ""
    return Node(name=name, state=state, reason=reason, gpu_count=total, gpus_allocated=held)


def _row(node: Node, values: Mapping[str, Mapping[str, float]], blind: bool = False) -> Row:
    def get(key: str) -> float | None:
        return values.get(key, {}).get(node.name)

    xid = get("xid_total")
    reporting = get("reporting")
    return {
        "name": node.name,
        "state": None if blind and node.state is NodeState.UNKNOWN else node.state.value,
        "reason": node.reason,
        "reason_time": node.reason_time,
        "partitions": ",".join(node.partitions),
        "gpus_total": node.gpu_count or int(get("gpus_total") or 0),
        "gpus_allocated": None if blind else node.gpus_allocated,
        # A node with no reporting GPU has no current readings: None, never 0.
        "utilization": get("utilization") if reporting else None,
        "power_watts": get("power_watts") if reporting else None,
        "temperature_max_celsius": get("temperature_max_celsius") if reporting else None,
        "xid_total": int(xid) if xid is not None and reporting else None,
    }
