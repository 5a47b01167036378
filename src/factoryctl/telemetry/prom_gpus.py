"""The per-GPU snapshot's queries and their assembly into ``GPU`` objects.

``PrometheusSource.snapshot`` (and a detail view's ``gpus_of_nodes``) plans its instant
queries here (``snapshot_plan``), runs them, then builds one ``GPU`` per key seen
(``gpus_from``) with its holders from the scheduler (``held_by``) or the exporters'
attribution (``attribution``). Takes a ``PromContext``, never the source itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from factoryctl.energy import local_midnight
from factoryctl.model import GPU, Job
from factoryctl.telemetry import schema as native
from factoryctl.telemetry.client import label_matcher
from factoryctl.telemetry.gpu_fields import MULTI_SERIES, native_multi
from factoryctl.telemetry.job_energy import dur
from factoryctl.telemetry.metrics import NATIVE, MetricSchema, recorded_query
from factoryctl.telemetry.prom_context import PromContext
from factoryctl.telemetry.prom_detect import gpu_key
from factoryctl.telemetry.results import QueryResult

GpuKey = tuple[str, int]


def snapshot_plan(
    source: PromContext,
    schema: MetricSchema,
    t: float,
    fields: frozenset[str] | None,
    view: str | None,
    telemetry_jobs: bool,
    nodes: Sequence[str] = (),
) -> tuple[dict[str, str], set[str], str | None]:
    """Every query a snapshot needs, by name; plus the GPU fields and XID gauge wanted.
    ``nodes``: only these nodes' series (a detail view), no factory-wide figure."""
    window = dur(source.window(t))
    only = f'{schema.node_label}=~"{label_matcher(nodes)}"' if nodes else ""

    def sel(*matchers: str) -> str:
        inner = ",".join(m for m in (*matchers, only) if m)
        return f"{{{inner}}}" if inner else ""

    plan = {
        "inventory": f"last_over_time({schema.inventory}{sel()}"
        f"[{dur(source.options.inventory_window)}])",
        "reporting": f"last_over_time({schema.marker}{sel()}[{window}])",
    }
    wanted = set(schema.gauges) if fields is None else set(fields) & set(schema.gauges)
    if "memory_total_bytes" in wanted and schema is not NATIVE:
        wanted.add("memory_used_bytes")  # dcgm's total is used + free
    simple = sorted(
        f.metric for n, f in schema.gauges.items() if n in wanted and n not in MULTI_SERIES
    )
    xid_gauge = schema.last_xid_gauge if fields is None or "last_xid" in fields else None
    names = "|".join(simple + ([xid_gauge] if xid_gauge else []))
    if names:
        plan["gauges"] = sel(f'__name__=~"{names}"')
    if schema is NATIVE:
        uncorrected = sel('type="uncorrected"')
        multi = {
            "xid_total": f"sum by (node, gpu) ({native.GPU_XID_ERRORS}{sel()})",
            "ecc_uncorrected_total": f"sum by (node, gpu) ({native.GPU_ECC_ERRORS}{uncorrected})",
            "throttle_reasons": f"{native.GPU_CLOCK_EVENT}{sel()} == 1",
        }
        plan.update({k: v for k, v in multi.items() if k in wanted})
    if fields is None and schema.gpu_energy is not None and not nodes:
        plan["energy_today"] = energy_today_query(schema, t, window)
    if telemetry_jobs and schema.job_info is None and schema.attribution is not None:
        # dcgm-exporter's job mapping: each allocated GPU's series, copied per job; or
        # the scheduler-exporter's Slurm allocation (with the job's user).
        label = schema.attribution_label
        not_empty = f'{label}!=""'
        mapped = f"{schema.attribution}{sel(not_empty)}"
        plan["job_info"] = (
            f"group by ({label}, {schema.attribution_node}, {schema.gpu_label}, user)"
            f" (last_over_time({mapped}[{window}]))"
        )
        plan["hpc_seen"] = recorded_query(schema, dur(source.options.inventory_window))
    if telemetry_jobs and schema.job_info is not None:
        plan["job_info"] = f"last_over_time({schema.job_info}{sel()}[{window}])"
        if schema.job_energy is not None and view != "nodes" and not nodes:
            plan["job_energy"] = f"sum by (job_id) (last_over_time({schema.job_energy}[{window}]))"
    return plan, wanted, xid_gauge


def gpus_from(
    schema: MetricSchema,
    results: Mapping[str, QueryResult],
    wanted: set[str],
    xid_gauge: str | None,
    unavailable: set[str],
    held: Mapping[GpuKey, tuple[str, ...]],
) -> dict[GpuKey, GPU]:
    # Identity first, values next, then one GPU object each (dataclasses.replace on
    # 100k frozen objects costs more than the whole JSON parse).
    ident: dict[GpuKey, tuple[str, str]] = {}
    for s in results["inventory"].vector:
        key = gpu_key(schema, s.labels)
        if key is not None:
            ident[key] = (
                s.labels.get(schema.uuid_label, ""),
                s.labels.get(schema.model_label, ""),
            )
    up: dict[GpuKey, bool] = {}
    for s in results["reporting"].vector:
        key = gpu_key(schema, s.labels)
        if key is not None:
            # native: factoryctl_gpu_up is 0 for a GPU NVML lost; dcgm: a sample = alive
            up[key] = s.value > 0 if schema is NATIVE else True
            ident.setdefault(key, ("", ""))
    by_metric = {
        f.metric: (name, f.scale)
        for name, f in schema.gauges.items()
        if name in wanted and name not in MULTI_SERIES
    }
    values: dict[GpuKey, dict[str, Any]] = {k: {} for k in up if up[k]}
    seen: set[str] = set()
    gauges = results.get("gauges")
    for s in gauges.vector if gauges else ():
        key = gpu_key(schema, s.labels)
        if key not in values:
            continue
        metric = s.labels.get("__name__", "")
        if metric == xid_gauge:
            values[key]["last_xid"] = int(s.value) or None
            seen.add("last_xid")
        elif metric in by_metric:
            name, scale = by_metric[metric]
            values[key][name] = s.value * scale
            seen.add(name)
    if schema is NATIVE:
        native_multi(results, values, seen)
    else:
        # dcgm reports free framebuffer, not total: total = used + free.
        for v in values.values():
            if "memory_total_bytes" in v and "memory_used_bytes" in v:
                v["memory_total_bytes"] += v["memory_used_bytes"]
    if values:
        expected = wanted | ({"last_xid"} if xid_gauge else set())
        unavailable.update(expected - seen - {"throttle_reasons"})
    none: dict[str, Any] = {}
    return {
        key: GPU(
            node=key[0],
            index=key[1],
            uuid=uuid,
            model=model,
            up=up.get(key, False),
            job_ids=held.get(key, ()),
            **(values.get(key, none)),
        )
        for key, (uuid, model) in ident.items()
    }


def attribution(
    schema: MetricSchema, res: QueryResult
) -> tuple[dict[GpuKey, tuple[str, ...]], dict[str, str]]:
    held: dict[GpuKey, set[str]] = {}
    users: dict[str, str] = {}
    # The attribution's own node label (the scheduler-exporter's ``node`` on a dcgm site).
    by = replace(schema, node_label=schema.attribution_node)
    for s in res.vector:
        key = gpu_key(by, s.labels)
        job_id = s.labels.get(schema.attribution_label, "")
        if key is None or not job_id:
            continue
        held.setdefault(key, set()).add(job_id)
        users[job_id] = s.labels.get("user", "")
    return {k: tuple(sorted(v)) for k, v in held.items()}, users


def energy_today_query(schema: MetricSchema, t: float, window: str) -> str:
    """Energy since local midnight: each GPU's counter now minus at midnight, two instant
    lookups (a 24 h ``increase`` would read every sample of 100,000 counters). GPUs that
    are not reporting now, or had no sample at midnight, are left out (an understatement);
    a counter that reset (dcgm: driver reload) counts from 0, never negative."""
    assert schema.gpu_energy is not None
    metric = schema.gpu_energy.metric
    ago = dur(max(0.001, t - local_midnight(t)))
    # Per GPU, whatever other labels its series carry (dcgm-exporter's hpc_job changes with
    # each job on the GPU, so midnight's series and now's would not match otherwise).
    by = f"max by ({schema.node_label}, {schema.gpu_label})"
    return (
        f"sum(clamp_min({by} (last_over_time({metric}[{window}]))"
        f" - {by} (last_over_time({metric}[{window}] offset {ago})), 0))"
    )


def held_by(jobs: Sequence[Job]) -> dict[GpuKey, tuple[str, ...]]:
    """The scheduler is the authority on who holds a GPU."""
    held: dict[GpuKey, list[str]] = {}
    for job in jobs:
        if not job.state.finished:
            for key in job.gpu_keys():
                held.setdefault(key, []).append(job.job_id)
    return {k: tuple(v) for k, v in held.items()}
