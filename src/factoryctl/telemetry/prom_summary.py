"""The console's poll from the rollups: what the screen shows, not every GPU's series.

At 100,000 GPUs every per-GPU metric is a 100,000-sample vector to fetch and parse; the
Overview, Nodes and Jobs views need one figure per node and per job, and by name only
the few GPUs that are lost, hot or throttled (or show an XID). So one poll is:

* round 1: the node rollups (``factoryctl_node_*``), one series per node each; the
  (node, job) rollups, one series per node a job runs on; energy since midnight from
  the node energy counters (12,500 series, not 100,000). Each rollup is one query, all
  sent at once and parsed as columns (``prom_context.Rollups``); which rollups depends
  on the view shown (``poll_detail``: the Overview reads no job utilization or power);
* round 2, only where round 1 found any: the per-GPU series of the few nodes with a lost
  GPU, a GPU at or over 85 C or a throttled GPU (``factoryctl_node_gpus_throttled``: a
  hardware or thermal slowdown; a software power cap alone is normal under load and not
  listed), filtered to those nodes and to the matching values. A factory-wide filter
  (``gpu_up == 0`` over every GPU) cost the engine ~1 s per kind at 100,000 GPUs.

The inventory (``factoryctl_node_gpus`` over the 10-minute window: every GPU known, so a
dead exporter's node still counts its GPUs) changes when hardware does, yet reading 10
minutes of every node was the poll's dearest query. The poll keeps it in an
``InventoryCache`` and asks again every ``INVENTORY_EVERY`` seconds, or at once when a
node reports that the cached inventory does not hold (the node set changed). The GPU
counts shown can therefore be up to ``INVENTORY_EVERY`` old; every reading (up, power,
utilization, temperature, jobs) is of this poll. Nodes with a lost GPU (more GPUs known
than up) are found here from the same two vectors, not by a join on the engine. The
energy since local midnight (two reads of every node's counter and a join: ~0.1 s of the
engine's time at 100,000 GPUs) is a day's total: it is re-read on the same cadence, and
at once past midnight, so the figure shown is at most ``INVENTORY_EVERY`` seconds old.

The Overview's poll (``poll_detail.LEAN``) on an engine that evaluates the console's rules
(dashboards/prometheus/console.rules.yml, ``console_rules``) reads three factory-wide lists
recorded instead of read: the pairs holding idle GPUs (instead of the pairs' GPUs active,
~15,000 series at 100,000 GPUs) and the throttled and hot nodes (instead of the two
filtered node reads, 12,500 series each: the engine reads every series a filter tests).
The Nodes view's poll reads the first two so; it reads every node's hottest GPU anyway.
Views that show the jobs' figures read the pairs' GPUs active whole, and no rules.
What is older and what is not: the idle GPU counts are up to one evaluation old (and only
for pairs this poll reads as held now); the problem GPUs are confirmed on this poll's own
samples (round 2 reads the recorded nodes' per-GPU series filtered by value), so a list
one evaluation old can miss a GPU for one evaluation, never show one that recovered. A
heartbeat missing or older than ``console_rules.MAX_AGE`` reads the lists as without the
rules, in one more round, and warns: stopped rules never show as "no problems".

The caller (``PrometheusSource.snapshot``) joins the scheduler and job energy as for the
per-GPU snapshot and returns a summarized ``FactorySnapshot``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from factoryctl.energy import local_midnight
from factoryctl.model import GPU, Job, JobSummary, Node, NodeSummary
from factoryctl.summaries import HOT_CELSIUS
from factoryctl.telemetry import console_rules
from factoryctl.telemetry import schema as native
from factoryctl.telemetry.client import MATCHER_BUDGET, label_matcher
from factoryctl.telemetry.job_energy import dur
from factoryctl.telemetry.job_summary import (
    PAIR_LABELS,
    PAIR_ROLLUPS,
    ReusedJobs,
    from_rollups,
    reporting_from,
    reporting_query,
    rollup_jobs,
)
from factoryctl.telemetry.metrics import NATIVE, MetricSchema, node_name
from factoryctl.telemetry.node_summary import nodes_from_counts, rollup_queries
from factoryctl.telemetry.poll_detail import (
    FULL,
    LEAN_ENERGY_UNAVAILABLE,
    LEAN_JOBS_UNAVAILABLE,
    LEAN_NODES_UNAVAILABLE,
    LEAN_PAIR_ROLLUPS,
    Detail,
    PairKey,
    idle_held,
    lean_per_job,
)
from factoryctl.telemetry.prom_context import PromContext, Rollups, run_all, run_queries
from factoryctl.telemetry.prom_detect import GpuKey, gpu_key
from factoryctl.telemetry.results import QueryResult

# The node rollups the poll reads within the freshness window, by the key they fill.
NODE_ROLLUPS = {
    "gpus_up": native.NODE_GPUS_UP,  # 0 included: reporting (> 0) and lost GPUs told apart
    "gpus_allocated": native.NODE_GPUS_ALLOCATED,
    "utilization": native.NODE_UTILIZATION,
    "power_watts": native.NODE_POWER,
    "temperature_max_celsius": native.NODE_TEMPERATURE_MAX,
    "xid_total": native.NODE_XID_ERRORS,
    "gpus_active": native.NODE_GPUS_ACTIVE,
}


@dataclass
class Summaries:
    nodes: list[Node]  # from telemetry; the caller prefers the scheduler's
    node_summaries: dict[str, NodeSummary]
    jobs: list[Job]  # from the rollups' attribution (GPU counts per node)
    job_summaries: dict[str, JobSummary]
    problem_gpus: list[GPU]
    energy_today_joules: float | None = None
    job_energy: dict[str, float] = field(default_factory=dict)  # the job counters now
    unavailable: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)  # said beside the snapshot


# Seconds the inventory (GPUs known per node) is reused between polls.
INVENTORY_EVERY = 60.0


@dataclass
class InventoryCache:
    """The last inventory read and when (the poll's clock), and the last energy since
    midnight read, when and since which midnight; one per source. Also the nodes, node
    summaries and jobs the last poll built, reused where unchanged (``nodes_from_counts``,
    ``_node_summaries``, ``rollup_jobs``): each poll replaces them with its own, so they
    never hold a node or job no longer read."""

    at: float | None = None
    gpus: dict[str, float] = field(default_factory=dict)
    energy_at: float | None = None
    energy_midnight: float | None = None
    energy_today: float | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    summaries: ReusedSummaries = field(default_factory=dict)
    jobs: ReusedJobs = field(default_factory=dict)

    def fresh(self, t: float) -> bool:
        return self.at is not None and 0 <= t - self.at < INVENTORY_EVERY

    def energy_fresh(self, t: float) -> bool:
        return (
            self.energy_at is not None
            and 0 <= t - self.energy_at < INVENTORY_EVERY
            and self.energy_midnight == local_midnight(t)
        )


def plan(schema: MetricSchema, t: float, window: float, inventory: float) -> dict[str, str]:
    w = dur(window)
    per_node = rollup_queries(schema, window, inventory, True)
    out = {"node:gpus_total": per_node["gpus_total"]}
    if "attributed" in per_node:
        out["node:attributed"] = per_node["attributed"]
    if schema.last_xid_gauge is not None:  # dcgm-exporter: the last XID code, per GPU
        out["xid"] = f"last_over_time({schema.last_xid_gauge}[{w}]) > 0"
    if schema.job_energy is not None:
        out["job_energy"] = f"sum by (job_id) (last_over_time({schema.job_energy}[{w}]))"
    # Energy since local midnight from the node counters (each sums its GPUs' counters,
    # up or lost, so it never goes backwards while the exporter runs).
    ago = dur(max(0.001, t - local_midnight(t)))
    node_energy = f"last_over_time({native.NODE_ENERGY}[{w}])"
    out["energy_today"] = (
        f"sum(clamp_min({node_energy} - on (node) last_over_time({native.NODE_ENERGY}[{w}]"
        f" offset {ago}), 0))"
    )
    return out


# Past this many nodes a round-2 query filters by value only (the alternation would near
# VictoriaMetrics' 16 KiB query limit, and so many problem nodes are a factory-wide event).
FILTER_NODES = 300


def problem_plan(
    schema: MetricSchema,
    window: float,
    lost: list[str],
    hot: list[str],
    throttled: list[str],
) -> dict[str, str]:
    """Round 2: the problem GPUs, read only on the nodes whose rollups show them."""
    w = dur(window)

    def on(nodes: list[str]) -> str:
        if len(nodes) > FILTER_NODES:
            return ""
        return f'{{{schema.node_label}=~"{label_matcher(nodes)}"}}'

    out = {}
    temp = schema.gauges.get("temperature_celsius")
    if hot and temp is not None:
        limit = HOT_CELSIUS / temp.scale
        out["hot"] = f"last_over_time({temp.metric}{on(hot)}[{w}]) >= {limit:g}"
    if lost and schema is NATIVE:
        out["lost"] = f"last_over_time({native.GPU_UP}{on(lost)}[{w}]) == 0"
    if throttled and schema is NATIVE:
        out["throttled"] = f"last_over_time({native.GPU_CLOCK_EVENT}{on(throttled)}[{w}]) == 1"
    return out


def spells_query(window: str, job_ids: Collection[str]) -> str:
    """The idle spells under way (above 0) of ``job_ids``: the jobs with a pair holding an
    idle GPU, the only ones that can have a spell (a spell is an up GPU's, idle now).
    Filtered by job on the engine, ~15 ms for 860 jobs at 100,000 GPUs where reading every
    pair's spell (filtered by value only) took 60-180 ms; past ``MATCHER_BUDGET``
    characters of job ids, by value only."""
    spells = native.JOB_IDLE_SECONDS
    matcher = label_matcher(sorted(job_ids))
    if len(matcher) <= MATCHER_BUDGET:
        spells += f'{{job_id=~"{matcher}"}}'
    return f"last_over_time({spells}[{window}]) > 0"


def read(
    source: PromContext,
    t: float,
    cache: InventoryCache | None = None,
    detail: Detail = FULL,
) -> Summaries:
    """One poll of the rollups; ``detail``: what it reads beyond the Overview's figures
    (``poll_detail``)."""
    schema = source.schema(t)
    window = source.window(t)
    queries = plan(schema, t, window, source.options.inventory_window)
    inventory = queries["node:gpus_total"]
    if cache is not None and cache.fresh(t):
        del queries["node:gpus_total"]
    if cache is not None and cache.energy_fresh(t):
        del queries["energy_today"]
    if not detail.job_energy:
        queries.pop("job_energy", None)
    w = dur(window)
    node_rollups = dict(NODE_ROLLUPS)
    if not detail.node_columns:
        del node_rollups["xid_total"], node_rollups["temperature_max_celsius"]
    job_rollups = (
        PAIR_ROLLUPS if detail.job_figures else {k: PAIR_ROLLUPS[k] for k in LEAN_PAIR_ROLLUPS}
    )
    # A poll without the jobs' figures, with the console's rules: their lists instead of
    # the pairs' GPUs active whole and the filtered node reads (console_rules). The Nodes
    # view reads every node's hottest GPU anyway, so not the recorded hot nodes.
    with_rules = not detail.job_figures and source.console_rules(t)
    if with_rules:
        queries.update(console_rules.QUERIES)
        if detail.node_columns:
            del queries["rules:hot"]
        job_rollups = {k: v for k, v in job_rollups.items() if k != "active"}
    else:
        queries.update(_factory_wide(w, detail))
    rollups = {
        "nodes": Rollups(node_rollups, w),
        "jobs": Rollups(job_rollups, w, PAIR_LABELS, "user"),
    }
    results, columns = run_all(source.client, queries, rollups, t)
    values = _node_values(results)
    values.update(columns["nodes"].by_name)
    pairs = columns["jobs"]
    warnings: list[str] = []
    recorded = console_rules.recorded(results, t) if with_rules else None
    if recorded is not None and not recorded.fresh:
        # Rules that stopped: their lists are old or gone. Read what they record.
        warnings.append(recorded.warning())
        active = {"jobs": Rollups({"active": PAIR_ROLLUPS["active"]}, w, PAIR_LABELS)}
        raw, more = run_all(source.client, _factory_wide(w, detail), active, t)
        values.update(_node_values(raw))
        pairs.by_name.update(more["jobs"].by_name)
        recorded = None
    elif recorded is not None:
        values["gpus_throttled"] = recorded.throttled
        if not detail.node_columns:
            values["temperature_max_celsius"] = recorded.hot
    up = values.pop("gpus_up")
    values["reporting"] = {n: v for n, v in up.items() if v > 0}
    if "gpus_total" not in values:
        assert cache is not None
        if up.keys() <= cache.gpus.keys():
            values["gpus_total"] = cache.gpus
        else:  # a node the cached inventory does not know: the node set changed
            fetched = source.client.query(inventory, t).vector
            values["gpus_total"] = {node_name(s.labels, "node"): s.value for s in fetched}
            cache.at = None
    if cache is not None and not cache.fresh(t):
        cache.at, cache.gpus = t, values["gpus_total"]
    unavailable = {
        k
        for k in ("utilization", "power_watts", "temperature_max_celsius", "xid_total")
        if not values.get(k) and values["reporting"]
    }
    # Nodes with a lost GPU: their jobs' GPUs are not all reporting (few, or none).
    known = values["gpus_total"]
    degraded = sorted(n for n, v in up.items() if known.get(n, 0) > v)
    hot = [n for n, v in values.get("temperature_max_celsius", {}).items() if v >= HOT_CELSIUS]
    second = problem_plan(schema, window, degraded, hot, sorted(values["gpus_throttled"]))
    reporting = reporting_query(schema, degraded, window)
    if reporting is not None:
        second["reporting"] = reporting
    idle: dict[PairKey, float] = {}
    if recorded is not None:
        idle = recorded.idle_held(pairs.by_name["held"])
    elif not detail.job_figures:
        idle = idle_held(pairs.by_name["held"], pairs.by_name["active"])
    # factoryctl-exporter's idle spells; dcgm-exporter's recorded rollups have none.
    if schema is NATIVE and idle:
        second["idle_spells"] = spells_query(w, {job_id for _, job_id in idle})
    results.update(run_queries(source.client, second, t))
    blind = schema.job_info is None and not values.get("attributed")
    names = sorted(values["gpus_total"].keys() | values["reporting"].keys())
    nodes = nodes_from_counts(names, values, blind, cache.nodes if cache is not None else None)
    summaries = _node_summaries(names, values, cache.summaries if cache is not None else None)
    counted = reporting_from(schema, results["reporting"]) if "reporting" in results else {}
    if detail.job_figures:
        per_job = from_rollups(pairs.by_name, counted)
    else:
        spells = results.get("idle_spells", QueryResult("vector")) if schema is NATIVE else None
        per_job = lean_per_job(pairs.by_name["held"], idle, spells, counted)
        unavailable |= LEAN_JOBS_UNAVAILABLE
    if not detail.node_columns:
        unavailable |= LEAN_NODES_UNAVAILABLE
    if not detail.job_energy and schema.job_energy is not None:
        unavailable |= LEAN_ENERGY_UNAVAILABLE
    energy = results.get("job_energy")
    job_energy = {s.labels.get("job_id", ""): s.value for s in energy.vector} if energy else {}
    jobs = rollup_jobs(
        pairs.by_name["held"],
        pairs.carried,
        job_energy,
        cache.jobs if cache is not None else None,
    )
    job_summaries = _job_summaries([j.job_id for j in jobs], per_job)
    if "energy_today" in results:
        today = results["energy_today"].scalar()
        if cache is not None:
            cache.energy_at, cache.energy_today = t, today
            cache.energy_midnight = local_midnight(t)
    else:  # read less than INVENTORY_EVERY ago, since this same midnight
        assert cache is not None
        today = cache.energy_today
    return Summaries(
        nodes=nodes,
        node_summaries=summaries,
        jobs=jobs,
        job_summaries=job_summaries,
        problem_gpus=_problem_gpus(schema, results),
        energy_today_joules=today if values["reporting"] else None,
        job_energy=job_energy,
        unavailable=unavailable | ({"state", "gpus_allocated"} if blind else set()),
        warnings=warnings,
    )


def _factory_wide(w: str, detail: Detail) -> dict[str, str]:
    """Filtered on the engine: the few nodes with any throttled GPU (no view shows 0s),
    and unless the Nodes view is shown, the few with a hot GPU (poll_detail). The engine
    still reads every node's series for each (what the console's rules save)."""
    out = {"node:gpus_throttled": f"last_over_time({native.NODE_GPUS_THROTTLED}[{w}]) > 0"}
    if not detail.node_columns:
        out["node:temperature_max_celsius"] = (
            f"last_over_time({native.NODE_TEMPERATURE_MAX}[{w}]) >= {HOT_CELSIUS:g}"
        )
    return out


def _node_values(results: Mapping[str, QueryResult]) -> dict[str, dict[str, float]]:
    """The ``node:`` queries' answers, by node, under their key without the prefix."""
    return {
        k[5:]: {node_name(s.labels, "node"): s.value for s in r.vector}
        for k, r in results.items()
        if k.startswith("node:")
    }


# Each node's summary as the last poll built it, with the figures it was built from.
SummaryFields = tuple[int, int, int, int, float | None, float | None, float | None, float | None]
ReusedSummaries = dict[str, tuple[SummaryFields, NodeSummary]]


def _node_summaries(
    names: list[str],
    values: Mapping[str, Mapping[str, float]],
    reuse: ReusedSummaries | None = None,
) -> dict[str, NodeSummary]:
    """Each node's summary, one pass over the columns (12,500 nodes a poll at 100k GPUs:
    the columns are looked up once, not once per node and field). ``reuse``: the last
    poll's; a node whose figures are all as they were (polls within one scrape interval
    read the same samples) keeps that same (immutable, equal) summary. It is then
    replaced by this poll's."""
    empty: Mapping[str, float] = {}

    def column(key: str) -> Callable[[str], float | None]:
        return values.get(key, empty).get

    total, up_by = column("gpus_total"), column("reporting")
    allocated, active = column("gpus_allocated"), column("gpus_active")
    util, power = column("utilization"), column("power_watts")
    temp, xid = column("temperature_max_celsius"), column("xid_total")
    previous: Mapping[str, tuple[SummaryFields, NodeSummary]] = reuse or {}
    last = previous.get
    kept: ReusedSummaries = {}
    summary = NodeSummary  # built by position: ~1 us a node less than by keyword
    for name in names:
        up = int(up_by(name) or 0)
        # A node with no GPU up has no current readings: None, never 0.
        fields: SummaryFields = (
            int(total(name) or 0),  # gpus
            up,  # gpus_up
            int(allocated(name) or 0),  # gpus_allocated
            int(active(name) or 0),  # gpus_active
            util(name) if up else None,  # utilization
            power(name) if up else None,  # power_watts
            temp(name) if up else None,  # temperature_max_celsius
            xid(name),  # xid_total
        )
        before = last(name)
        if before is not None and before[0] == fields:
            kept[name] = before
        else:
            kept[name] = (fields, summary(*fields))
    if reuse is not None:
        reuse.clear()
        reuse.update(kept)
    return {name: made for name, (_, made) in kept.items()}


def _job_summaries(
    job_ids: Iterable[str], per_job: Mapping[str, Mapping[str, float]]
) -> dict[str, JobSummary]:
    """Each job's summary from the per-job columns. Equal summaries are one (immutable)
    object: on the lean poll most of ~6,800 jobs read alike (all GPUs reporting, none
    idle, no spell), and building a summary costs more than finding an equal one."""
    reporting, mean = per_job["reporting"].get, per_job["mean_utilization"].get
    idle, spell, power = (
        per_job["idle_gpus"].get,
        per_job["idle_seconds"].get,
        per_job["power_watts"].get,
    )
    made: dict[tuple[int, float | None, int, float | None, float | None], JobSummary] = {}
    out = {}
    for job_id in job_ids:
        fields = (
            int(reporting(job_id, 0)),
            mean(job_id),
            int(idle(job_id) or 0),
            spell(job_id),
            power(job_id),
        )
        summary = made.get(fields)
        if summary is None:
            summary = made[fields] = JobSummary(*fields)
        out[job_id] = summary
    return out


def _problem_gpus(schema: MetricSchema, results: Mapping[str, QueryResult]) -> list[GPU]:
    """GPU objects for the few GPUs the filtered queries matched, with what matched."""
    fields: dict[GpuKey, dict[str, object]] = {}

    def put(key: GpuKey | None, **kv: object) -> None:
        if key is not None:
            fields.setdefault(key, {}).update(kv)

    temp = schema.gauges.get("temperature_celsius")
    for s in results["hot"].vector if "hot" in results else ():
        put(gpu_key(schema, s.labels), temperature_celsius=s.value * (temp.scale if temp else 1))
    for s in results["lost"].vector if "lost" in results else ():
        put(gpu_key(schema, s.labels), up=False)
    for s in results["xid"].vector if "xid" in results else ():
        put(gpu_key(schema, s.labels), last_xid=int(s.value))
    reasons: dict[GpuKey, list[str]] = {}
    for s in results["throttled"].vector if "throttled" in results else ():
        key = gpu_key(schema, s.labels)
        if key is not None:
            reasons.setdefault(key, []).append(s.labels.get("reason", "?"))
    for key, names in reasons.items():
        put(key, throttle_reasons=tuple(sorted(names)))
    return [GPU(node=k[0], index=k[1], **kv) for k, kv in sorted(fields.items())]  # type: ignore[arg-type]
