"""``factoryctl nodes`` from per-node aggregates.

The nodes view shows no GPU, so it never fetches per-GPU vectors. Where the engine holds
the node rollups (``factoryctl_node_*``, issue 13) each column is one rollup read as it
stands: no aggregation on the query path at all. Elsewhere counts, sums, means and maxima
``by (node)`` are computed by the engine from every GPU's series and come back as one
small vector each (12,500 samples at 100k GPUs instead of 100,000 per metric), with a
one-line hint to install the rules. Rows have exactly the keys of ``views.node_rows``; every
"latest value" is ``last_over_time(...[source.window()])`` (2 scrape intervals + search delay), so backfilled data without
staleness markers reads the same as live data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from factoryctl.model import FactorySnapshot, Node, NodeState
from factoryctl.telemetry import schema as native
from factoryctl.telemetry.job_energy import dur
from factoryctl.telemetry.metrics import (
    NATIVE,
    MetricSchema,
    no_gpus_warning,
    node_name,
    recorded_query,
)
from factoryctl.telemetry.prom_context import PromContext, Rollups, run_all
from factoryctl.telemetry.prom_detect import NO_ROLLUPS

Row = dict[str, Any]

# Each column's rollup; rollups are in base units (ratios, watts) already.
ROLLUP_COLUMNS = {
    "reporting": native.NODE_GPUS_UP,
    "gpus_allocated": native.NODE_GPUS_ALLOCATED,
    "utilization": native.NODE_UTILIZATION,
    "power_watts": native.NODE_POWER,
    "temperature_max_celsius": native.NODE_TEMPERATURE_MAX,
    "xid_total": native.NODE_XID_ERRORS,
}
# Read as "not measured here" when no node has the series (dcgm-exporter has no XID
# counter to sum, so its recorded rollups may lack it).
OPTIONAL_ROLLUPS = ("xid_total", "utilization", "power_watts", "temperature_max_celsius")


def rollup_queries(
    schema: MetricSchema, window: float, inventory: float, telemetry_jobs: bool
) -> dict[str, str]:
    """One rollup per column, its latest value within the freshness window (the GPUs
    known: within the inventory window, so a dead exporter's node still counts them)."""
    w = dur(window)
    plan = {"gpus_total": f"last_over_time({native.NODE_GPUS}[{dur(inventory)}])"}
    for key, metric in ROLLUP_COLUMNS.items():
        if key == "gpus_allocated" and not telemetry_jobs:
            continue  # the scheduler says who holds what
        plan[key] = f"last_over_time({metric}[{w}])"
    # Rollups report a node's GPUs up; a node whose GPUs are all lost is not reporting.
    plan["reporting"] = f"{plan['reporting']} > 0"
    if telemetry_jobs and schema.job_info is None and schema.attribution is not None:
        # dcgm-exporter: whether its job mapping labels anything at all (else "unknown").
        mapped = f'{schema.attribution}{{{schema.attribution_label}!=""}}'
        by = f"by ({schema.node_label})"
        plan["attributed"] = f"count {by} (last_over_time({mapped}[{dur(inventory)}]))"
    return plan


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


def node_rows(source: PromContext, at: float | None = None) -> tuple[FactorySnapshot, list[Row]]:
    """The nodes view: a snapshot holding nodes only, and one row per node."""
    t = source.clock() if at is None else at
    schema = source.schema(t)
    window = source.window(t)
    warnings: list[str] = []
    failures: list[str] = []
    sched = source.scheduler_view(t, warnings, failures)
    inventory = source.options.inventory_window
    rollups = source.rollups(t)
    if rollups:
        plan = rollup_queries(schema, window, inventory, sched is None)
    else:
        plan = _queries(schema, window, inventory, sched is None)
        if source.options.rollups == "auto":
            warnings.append(NO_ROLLUPS)
    client = source.client
    # Rollups name the node ``node`` whatever the schema (the recording rules relabel).
    label = "node" if rollups else schema.node_label
    queries = dict(plan)
    reads = {}
    if rollups:
        # The columns read within the freshness window: one query each, as columns.
        columns = {k: ROLLUP_COLUMNS[k] for k in plan if k in ROLLUP_COLUMNS}
        for key in columns:
            del queries[key]
        reads["columns"] = Rollups(columns, dur(window))
        # The GPUs known, as a column too (over the inventory window): no Sample and no
        # label dict per node.
        del queries["gpus_total"]
        reads["inventory"] = Rollups({"gpus_total": native.NODE_GPUS}, dur(inventory))
    results, read = run_all(client, queries, reads, t)
    values: dict[str, dict[str, float]] = {
        k: {node_name(s.labels, label): s.value for s in r.vector} for k, r in results.items()
    }
    if rollups:
        values.update(read["columns"].by_name)
        values.update(read["inventory"].by_name)
        # Rollups report a node's GPUs up; one whose GPUs are all lost is not reporting.
        values["reporting"] = {n: v for n, v in values["reporting"].items() if v > 0}
        util_scale = 1.0
        for key in OPTIONAL_ROLLUPS:
            if key in plan and not values[key] and values["reporting"]:
                del plan[key]  # no node has it: not measured here, never 0
    else:
        util_scale = schema.gauges["utilization"].scale if "utilization" in schema.gauges else 1.0
    if values.get("xid_total"):
        # As in the per-GPU path: where XIDs are counted at all, a reporting node without
        # any XID series has had none (0), not an unknown number.
        for name in values["reporting"]:
            values["xid_total"].setdefault(name, 0.0)
    values["utilization"] = {n: v * util_scale for n, v in values.get("utilization", {}).items()}
    # No scheduler and no attribution (dcgm-exporter without job mapping): who holds a
    # GPU, and so a node's state, is unknown.
    blind = sched is None and schema.job_info is None and not values.get("attributed")
    if sched is not None:
        nodes = sched[0]
    else:
        names = sorted(values["gpus_total"].keys() | values["reporting"].keys())
        nodes = nodes_from_counts(names, values, blind)
    rows = _rows(nodes, values, blind)
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


def node_state(total: int, held: int, reporting: int, blind: bool) -> tuple[NodeState, str]:
    """A node's state and reason from its GPUs known, held and reporting."""
    if reporting == 0:
        return NodeState.DOWN, "no telemetry (exporter not reporting)"
    if blind:
        return NodeState.UNKNOWN, ""
    if held == 0:
        return NodeState.IDLE, ""
    if held >= total:
        return NodeState.ALLOCATED, ""
    return NodeState.MIXED, ""


def node_from_counts(
    name: str, values: Mapping[str, Mapping[str, float]], blind: bool = False
) -> Node:
    total = int(values["gpus_total"].get(name, 0))
    held = int(values.get("gpus_allocated", {}).get(name, 0))
    reporting = int(values["reporting"].get(name, 0))
    state, reason = node_state(total, held, reporting, blind)
    return Node(name=name, state=state, reason=reason, gpu_count=total, gpus_allocated=held)


def nodes_from_counts(
    names: Sequence[str],
    values: Mapping[str, Mapping[str, float]],
    blind: bool = False,
    reuse: dict[str, Node] | None = None,
) -> list[Node]:
    """``node_from_counts`` of each of ``names``, in one pass. ``reuse``: the nodes the
    last poll built, by name; a node whose state and counts did not change is that same
    (immutable, equal) object, not a new one: at 100,000 GPUs building 12,500 nodes cost
    ~50 ms a poll, and a node's state changes far less often than every poll. ``reuse``
    is then replaced by this poll's nodes, so it never holds a node no longer named."""
    empty: Mapping[str, float] = {}
    totals, reporting_by = values["gpus_total"].get, values["reporting"].get
    held_by = values.get("gpus_allocated", empty).get
    previous: Mapping[str, Node] = reuse if reuse is not None else {}
    last = previous.get
    state_of = node_state
    out: list[Node] = []
    append = out.append
    for name in names:
        total = int(totals(name, 0))
        held = int(held_by(name, 0))
        state, reason = state_of(total, held, int(reporting_by(name, 0)), blind)
        node = last(name)
        if (
            node is None
            or node.state is not state
            or node.gpu_count != total
            or node.gpus_allocated != held
            or node.reason != reason
        ):
            node = Node(name=name, state=state, reason=reason, gpu_count=total, gpus_allocated=held)
        append(node)
    if reuse is not None:
        reuse.clear()
        reuse.update(zip(names, out, strict=True))
    return out


def _rows(
    nodes: Sequence[Node], values: Mapping[str, Mapping[str, float]], blind: bool
) -> list[Row]:
    """One row per node (at 100,000 GPUs 12,500: each column's dict looked up once, not
    once per row and column)."""
    empty: Mapping[str, float] = {}
    totals = values["gpus_total"].get
    reporting_of = values.get("reporting", empty).get
    util, power = values.get("utilization", empty).get, values.get("power_watts", empty).get
    temp, xids = (
        values.get("temperature_max_celsius", empty).get,
        values.get("xid_total", empty).get,
    )
    unknown = NodeState.UNKNOWN
    rows: list[Row] = []
    append = rows.append
    for node in nodes:
        name = node.name
        # A node with no reporting GPU has no current readings: None, never 0.
        reporting = reporting_of(name)
        xid = xids(name) if reporting else None
        append(
            {
                "name": name,
                "state": None if blind and node.state is unknown else node.state.value,
                "reason": node.reason,
                "reason_time": node.reason_time,
                "partitions": ",".join(node.partitions),
                "gpus_total": node.gpu_count or int(totals(name) or 0),
                "gpus_allocated": None if blind else node.gpus_allocated,
                "utilization": util(name) if reporting else None,
                "power_watts": power(name) if reporting else None,
                "temperature_max_celsius": temp(name) if reporting else None,
                "xid_total": None if xid is None else int(xid),
            }
        )
    return rows
