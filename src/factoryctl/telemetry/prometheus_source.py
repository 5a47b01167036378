"""The factory as Prometheus (and optionally the scheduler) sees it: ``snapshot()``.

Same interface as ``DemoSource``. Each snapshot is a handful of instant queries at one
explicit time ``t`` (never the engine's idea of "now", see ``client``):

1. inventory: every GPU seen recently (``last_over_time`` of the identity series), so a
   GPU whose exporter died still appears, marked down;
2. reporting: which GPUs have a sample within 2 scrape intervals. Backfilled data has no
   staleness markers, so "has a sample in the 5 min lookback" would lie for 5 minutes;
3. all per-GPU gauges in one ``{__name__=~"..."}`` selector (one round trip, one parse);
4. server-side aggregates for multi-series fields (XIDs, ECC, clock events);
5. attribution ``last_over_time(job_info[2i])`` (old and new job_info overlap otherwise)
   and per-job energy (``job_energy``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from factoryctl.energy import local_midnight
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import GPU, Allocation, FactorySnapshot, Job, Node
from factoryctl.processes import ProcessTable
from factoryctl.telemetry import prom_summary
from factoryctl.telemetry import schema as native
from factoryctl.telemetry.client import PromClient, label_matcher
from factoryctl.telemetry.gpu_fields import MULTI_SERIES, VIEW_FIELDS, native_multi
from factoryctl.telemetry.job_energy import (
    EnergyReader,
    JobEnergy,
    dur,
    from_admin_comment,
)
from factoryctl.telemetry.job_summary import job_rows
from factoryctl.telemetry.metrics import (
    NATIVE,
    MetricSchema,
    indices_unknown_warning,
    no_gpus_warning,
    recorded_query,
)
from factoryctl.telemetry.node_processes import node_processes
from factoryctl.telemetry.node_summary import node_rows
from factoryctl.telemetry.poll_detail import FULL, Detail
from factoryctl.telemetry.prom_context import SourceOptions, run_queries
from factoryctl.telemetry.prom_detect import (
    NO_ROLLUPS,
    detect_interval,
    detect_rollups,
    detect_schema,
    detect_search_delay,
    gpu_key,
)
from factoryctl.telemetry.prom_reports import (
    SchedulerRequired,
    firing_alerts,
    jobs_seen,
    scheduler_jobs,
)
from factoryctl.telemetry.recorded_jobs import NO_ALLOCATIONS, recorded_report, with_recorded_jobs
from factoryctl.telemetry.results import QueryResult
from factoryctl.telemetry.scheduler_view import (
    SchedulerView,
    jobs_from_attribution,
    nodes_from_gpus,
)
from factoryctl.triage import Alert

GpuKey = tuple[str, int]


# Seconds between asking an engine without rollups again whether it has them now.
ROLLUPS_RECHECK = 60.0


@dataclass
class PrometheusSource:
    client: PromClient
    scheduler: SchedulerView | None = None
    options: SourceOptions = field(default_factory=SourceOptions)
    clock: Callable[[], float] = time.time
    _schema: MetricSchema | None = None
    _interval: float | None = None
    _delay: float | None = None
    _rollups: bool | None = None
    _rollups_asked: float | None = None  # when the engine last said it had none
    # The console's poll keeps the slow-changing inventory between polls (prom_summary).
    _inventory: prom_summary.InventoryCache = field(default_factory=prom_summary.InventoryCache)

    # -- detection -----------------------------------------------------------------------
    def schema(self, at: float) -> MetricSchema:
        if self._schema is None:
            self._schema = detect_schema(self.client, at, self.options.schema)
        return self._schema

    def interval(self, at: float) -> float:
        """The scrape interval: it sizes every "latest sample" window."""
        if self._interval is None:
            self._interval = self.options.scrape_interval or detect_interval(
                self.client, self.schema(at), at
            )
        return self._interval

    def window(self, at: float) -> float:
        """How far back "the latest sample" may lie: two scrape intervals, plus the time
        the engine takes to make a scraped sample searchable. Without that delay, every
        GPU of a VictoriaMetrics >= 1.112 reads as silent for up to 5 s of each interval
        at a 1 s scrape; Prometheus (delay 0) keeps the two-interval window exactly."""
        if self._delay is None:
            known = self.options.search_delay
            self._delay = known if known is not None else detect_search_delay(self.client)
        return 2 * self.interval(at) + self._delay

    def rollups(self, at: float) -> bool:
        """Whether the views read the rollups (``factoryctl_node_*``, ``factoryctl_job_*``)
        instead of every GPU's series. Found, they stay found; not found (``auto``: an
        engine before the exporter's upgrade or the rules' install), asked again every
        ``ROLLUPS_RECHECK`` seconds, so a long-running console moves onto them without a
        restart (one count of ~1 series per node a minute, beside a per-GPU poll)."""
        mode = self.options.rollups
        asked = self._rollups_asked
        stale = asked is not None and not 0 <= at - asked < ROLLUPS_RECHECK
        if self._rollups is None or (self._rollups is False and mode == "auto" and stale):
            self._rollups = mode == "on" or (
                mode == "auto" and detect_rollups(self.client, at, self.options.inventory_window)
            )
            self._rollups_asked = None if self._rollups else at
        return self._rollups

    def describe(self, at: float) -> str:
        """The source as its JSON envelope names it (``prometheus:native``)."""
        return f"prometheus:{self.schema(at).name}"

    # -- the snapshot --------------------------------------------------------------------
    def snapshot(self, at: float | None = None, view: str | None = None) -> FactorySnapshot:
        """The factory at ``at`` (now). ``view`` (nodes|gpus|jobs) fetches only what that
        view shows: at 100k GPUs every per-GPU metric left out is ~12 MB of JSON saved.

        The queries are independent of each other and go out concurrently: the engine
        works on all of them at once while we wait once, not once per query.
        """
        t = self.clock() if at is None else at
        schema = self.schema(t)
        fields = VIEW_FIELDS.get(view or "")
        warnings: list[str] = []
        failures: list[str] = []
        view_of_scheduler = self.scheduler_view(t, warnings, failures)
        plan, wanted, xid_gauge = self._plan(schema, t, fields, view, view_of_scheduler is None)
        results = self._run(plan, t)
        unavailable = set(schema.unavailable())
        users: dict[str, str] = {}
        energy: dict[str, JobEnergy] = {}
        if view_of_scheduler is not None:
            nodes, jobs = view_of_scheduler
            held = _held_by(jobs)
            gpus = self._gpus(schema, results, wanted, xid_gauge, unavailable, held)
            # GPUs the scheduler allocated but telemetry never saw (exporter down) still count.
            for key, ids in held.items():
                if key not in gpus:
                    gpus[key] = GPU(node=key[0], index=key[1], up=False, job_ids=ids)
            if view != "nodes":  # the nodes view shows no job
                energy = self.job_energy(jobs, t)
        else:
            held, users = ({}, {})
            if "job_info" in results:
                held, users = self._attribution(schema, results["job_info"])
            gpus = self._gpus(schema, results, wanted, xid_gauge, unavailable, held)
            # dcgm-exporter: attribution only where its job mapping labels series hpc_job.
            seen = results["hpc_seen"].vector if "hpc_seen" in results else []
            attributed = schema.job_info is not None or bool(seen)
            if schema.attribution == native.SLURM_GPU_JOB_INFO and seen and seen[0].value > 0:
                warnings.append(indices_unknown_warning(seen[0].value))
            if not attributed:
                # No scheduler and no attribution: who holds a GPU is unknown (n/a).
                unavailable.update(("state", "gpus_allocated", "jobs"))
            nodes = list(nodes_from_gpus(gpus.values(), attributed))
            jobs = list(jobs_from_attribution(gpus.values(), users))
            if "job_energy" in results:
                # Without a scheduler there is no start time: the exporter's counter as it
                # stands (``factoryctl energy`` does windows and exporter restarts).
                now_values = {
                    s.labels.get("job_id", ""): s.value for s in results["job_energy"].vector
                }
                energy = {j: JobEnergy(j, v, "job-counter") for j, v in now_values.items()}
        jobs = [
            replace(j, energy_joules=energy[j.job_id].joules, energy_source=energy[j.job_id].method)
            if j.job_id in energy
            else j
            for j in jobs
        ]
        if not gpus:
            warnings.append(no_gpus_warning(schema))
        warnings.extend(self.client.warnings)
        self.client.warnings.clear()
        if "jobs" in unavailable and view == "jobs":
            warnings.append(NO_JOBS)
        today = results.get("energy_today")
        today_joules = None
        if today is not None and today.vector and schema.gpu_energy is not None:
            today_joules = today.vector[0].value * schema.gpu_energy.scale
        return FactorySnapshot(
            time=t,
            nodes=tuple(nodes),
            gpus=tuple(gpus[k] for k in sorted(gpus)),
            jobs=tuple(jobs),
            source=f"prometheus:{schema.name}",
            unavailable=frozenset(unavailable),
            warnings=tuple(dict.fromkeys(warnings)),
            scheduler_error="; ".join(failures),
            energy_today_joules=today_joules,
            energy_today_since=None if today_joules is None else local_midnight(t),
            # Why a figure is missing, or where one came from other than Prometheus.
            job_notes={
                e.job_id: e.note
                for e in energy.values()
                if e.note and (e.joules is None or e.method == "admin-comment")
            },
        )

    def console_snapshot(self, at: float | None = None, detail: Detail = FULL) -> FactorySnapshot:
        """What the console's screen shows: a summarized snapshot from the rollups (node
        and job summaries, the problem GPUs only) where the engine holds them, else the
        full per-GPU snapshot. ``factoryctl top`` polls this, with the ``detail`` its
        view shows (``poll_detail``)."""
        t = self.clock() if at is None else at
        if not self.rollups(t):
            snap = self.snapshot(t)
            if self.options.rollups == "auto":
                snap = replace(snap, warnings=(*snap.warnings, NO_ROLLUPS))
            return snap
        schema = self.schema(t)
        warnings: list[str] = []
        failures: list[str] = []
        sched = self.scheduler_view(t, warnings, failures)
        got = prom_summary.read(self, t, self._inventory, detail)
        if sched is not None:
            nodes, jobs = sched
            energy = self.job_energy(jobs, t)
            jobs = [
                replace(j, energy_joules=energy[j.job_id].joules) if j.job_id in energy else j
                for j in jobs
            ]
        else:  # the rollups' jobs carry their counters' energy already, with no note
            nodes, jobs = got.nodes, got.jobs
            energy = {}
        if not got.node_summaries:
            warnings.append(no_gpus_warning(schema))
        warnings.extend(self.client.warnings)
        self.client.warnings.clear()
        today = got.energy_today_joules
        return FactorySnapshot(
            time=t,
            nodes=tuple(nodes),
            gpus=tuple(got.problem_gpus),
            jobs=tuple(jobs),
            source=f"prometheus:{schema.name}",
            unavailable=frozenset(set(schema.unavailable()) | got.unavailable),
            warnings=tuple(dict.fromkeys(warnings)),
            scheduler_error="; ".join(failures),
            energy_today_joules=today,
            energy_today_since=None if today is None else local_midnight(t),
            job_notes={e.job_id: e.note for e in energy.values() if e.note and e.joules is None},
            node_summaries=got.node_summaries,
            job_summaries=got.job_summaries,
        )

    def gpus_of_nodes(self, nodes: Sequence[str], at: float | None = None) -> tuple[GPU, ...]:
        """Every GPU of ``nodes`` with every field, fetched for these nodes only: what a
        detail view shows of a summarized snapshot (a node, or a job's first nodes)."""
        t = self.clock() if at is None else at
        schema = self.schema(t)
        names = list(dict.fromkeys(nodes))[:DETAIL_NODES]
        if not names:
            return ()
        plan, wanted, xid_gauge = self._plan(schema, t, None, None, True, names)
        results = self._run(plan, t)
        held: dict[GpuKey, tuple[str, ...]] = {}
        if "job_info" in results:
            held, _ = self._attribution(schema, results["job_info"])
        gpus = self._gpus(schema, results, wanted, xid_gauge, set(), held)
        return tuple(gpus[k] for k in sorted(gpus))

    def snapshot_for_view(self, view: str) -> FactorySnapshot:
        return self.snapshot(view=view)

    def job_rows_for_view(self) -> tuple[FactorySnapshot, list[dict[str, Any]]] | None:
        """``factoryctl jobs`` from per-job aggregates; None where a scheduler holds the
        allocations (the caller then takes the per-GPU snapshot)."""
        return job_rows(self)

    def node_rows_for_view(self) -> tuple[FactorySnapshot, list[dict[str, Any]]]:
        """``factoryctl nodes`` from per-node aggregates (no per-GPU vectors at all)."""
        return node_rows(self)

    def _plan(
        self,
        schema: MetricSchema,
        t: float,
        fields: frozenset[str] | None,
        view: str | None,
        telemetry_jobs: bool,
        nodes: Sequence[str] = (),
    ) -> tuple[dict[str, str], set[str], str | None]:
        """Every query a snapshot needs, by name; plus the GPU fields and XID gauge wanted.
        ``nodes``: only these nodes' series (a detail view), no factory-wide figure."""
        window = dur(self.window(t))
        only = f'{schema.node_label}=~"{label_matcher(nodes)}"' if nodes else ""

        def sel(*matchers: str) -> str:
            inner = ",".join(m for m in (*matchers, only) if m)
            return f"{{{inner}}}" if inner else ""

        plan = {
            "inventory": f"last_over_time({schema.inventory}{sel()}"
            f"[{dur(self.options.inventory_window)}])",
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
            plan["energy_today"] = _energy_today_query(schema, t, window)
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
            plan["hpc_seen"] = recorded_query(schema, dur(self.options.inventory_window))
        if telemetry_jobs and schema.job_info is not None:
            plan["job_info"] = f"last_over_time({schema.job_info}{sel()}[{window}])"
            if schema.job_energy is not None and view != "nodes" and not nodes:
                plan["job_energy"] = (
                    f"sum by (job_id) (last_over_time({schema.job_energy}[{window}]))"
                )
        return plan, wanted, xid_gauge

    def _run(self, plan: Mapping[str, str], t: float) -> dict[str, QueryResult]:
        return run_queries(self.client, plan, t)

    def _gpus(
        self,
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

    def _attribution(
        self, schema: MetricSchema, res: QueryResult
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

    def scheduler_view(
        self, t: float, warnings: list[str], failures: list[str] | None = None
    ) -> tuple[list[Node], list[Job]] | None:
        """Nodes and jobs from the scheduler; None (telemetry only, with a warning, and the
        error in ``failures``) when there is none, it cannot be reached or its output was
        not understood: the console must still show the GPUs."""
        if self.scheduler is None:
            return None
        try:
            nodes = list(self.scheduler.nodes())
            jobs = list(self.scheduler.jobs())
        except FactoryctlError as err:
            # A read that fails (no controller, no config, sinfo missing, an output we do
            # not understand) must not hide the GPUs: degrade to telemetry only and say so.
            # Usage errors still raise.
            if err.status is ExitStatus.SCHEDULER_UNREACHABLE:
                what = "scheduler unreachable"
            elif err.status is ExitStatus.SCHEDULER_ERROR:
                what = "scheduler could not be read"
            else:
                raise
            warnings.append(
                f"{what}, showing telemetry only ({err.message}); --scheduler none to say so"
            )
            if failures is not None:
                failures.append(f"{what}: {err.message}")
            return None
        cutoff = t - self.options.finished_lookback
        return nodes, [j for j in jobs if j.end_time is None or j.end_time >= cutoff]

    # -- energy --------------------------------------------------------------------------
    def job_energy(
        self,
        jobs: Sequence[Job],
        now: float | None = None,
        since: float | None = None,
        until: float | None = None,
        counted: Mapping[str, float] | None = None,
    ) -> dict[str, JobEnergy]:
        """Energy of each job (within [since, until] when given), by the best method.
        ``counted``: the job counters' increases, when the caller already read them."""
        t = self.clock() if now is None else now
        schema = self.schema(t)
        reader = EnergyReader(self.client, schema, self.interval(t))
        out: dict[str, JobEnergy] = {}
        if schema.job_energy is not None and jobs:
            # The counters' increase over exactly (since, until]: the base is read at
            # ``since``, never earlier, or a window cutting through a job would also count
            # up to two scrape intervals before it (+5 % per job over 10 minutes).
            # Whole jobs start from before the earliest start: the counters begin at 0.
            if since is not None:
                lo = since
            else:
                lo = _earliest_start(jobs, t - 86400.0) - 2 * self.interval(t)
            hi = min(until, t) if until is not None else t
            counters = (
                counted
                if counted is not None
                else reader.job_counters(lo, hi, [j.job_id for j in jobs])
            )
            for job in jobs:
                if job.job_id in counters:
                    out[job.job_id] = JobEnergy(job.job_id, counters[job.job_id], "job-counter")
        rest = [j for j in jobs if j.job_id not in out]
        if rest and schema.gpu_energy is not None:
            # Who held which GPU comes from Prometheus's attribution history for every
            # finished job (Slurm drops its GPU indices) and any job the scheduler names
            # no GPU of; the scheduler's allocation stands for running jobs (and where no
            # attribution was recorded, for whatever the scheduler still names).
            ask = [j for j in rest if j.state.finished or not any(j.gpu_keys())]
            held = reader.attributed_gpus(ask, t) if ask else {}
            rest = [replace(j, allocations=held[j.job_id]) if j.job_id in held else j for j in rest]
            out.update(reader.gpu_counters(rest, t, since, until))
        for job in jobs:
            known = out.get(job.job_id)
            if (known is None or known.joules is None) and job.admin_comment:
                recorded = from_admin_comment(job, since, until)
                if recorded is not None and recorded.joules is None and known is not None:
                    # Both say why: Prometheus' gap and why the record cannot fill it.
                    recorded = replace(known, note=f"{known.note}; {recorded.note}")
                if recorded is not None:
                    out[job.job_id] = recorded
            out.setdefault(job.job_id, JobEnergy(job.job_id, None, "none", "no energy data"))
        return out

    # -- reports -------------------------------------------------------------------------
    def energy_report(
        self,
        since: float,
        until: float,
        warnings: list[str] | None = None,
        unavailable: set[str] | None = None,
    ) -> tuple[list[Job], dict[str, JobEnergy]]:
        """Jobs that ran in [since, until] and the energy each used inside that window;
        what limits the report (accounting unreachable) is added to ``warnings``, the job
        fields no source here can give (no scheduler: partition...) to ``unavailable``."""
        if self.scheduler is not None:
            return self._scheduler_report(since, until, warnings)
        schema = self.schema(until)
        if schema.job_info is not None:
            # Every job of the window is wanted: its list and every job counter's increase
            # go out at once instead of one after the other (at 100,000 GPUs the list is
            # the slow one).
            reader = EnergyReader(self.client, schema, self.interval(until))
            with ThreadPoolExecutor(max_workers=2) as pool:
                seen_jobs = pool.submit(jobs_seen, self.client, schema, since, until)
                counted = (
                    pool.submit(reader.job_counters, since, until, None)
                    if schema.job_energy is not None
                    else None
                )
                jobs = seen_jobs.result()
                counters = counted.result() if counted is not None else None
            measured = self.job_energy(jobs, until, since, until, counted=counters)
            return jobs, measured
        if schema.attribution is not None:
            return recorded_report(self, schema, since, until, unavailable)
        raise SchedulerRequired(NO_ALLOCATIONS)

    def _scheduler_report(
        self, since: float, until: float, warnings: list[str] | None
    ) -> tuple[list[Job], dict[str, JobEnergy]]:
        """The scheduler's jobs (squeue, and its accounting: sacct or /slurmdb/) and the
        jobs only the attribution remembers, with their energy in the window."""
        assert self.scheduler is not None
        forgotten: set[str] = set()
        # sacct (seconds over a month of jobs, most of it waiting on slurmdbd) goes out
        # first; the engine's questions that need no job list are asked meanwhile: the
        # schema, the jobs the attribution saw, every job counter's increase over the
        # window (the report wants every job in it, and 10,000 ids fit no matcher anyway).
        with ThreadPoolExecutor(max_workers=3) as pool:
            listed = pool.submit(scheduler_jobs, self.scheduler, since, until,
                                 warnings if warnings is not None else [])  # fmt: skip
            schema = self.schema(until)
            seen = (
                pool.submit(jobs_seen, self.client, schema, since, until)
                if schema.job_info is not None
                else None
            )
            reader = EnergyReader(self.client, schema, self.interval(until))
            counted = (
                pool.submit(reader.job_counters, since, until, None)
                if schema.job_energy is not None
                else None
            )
            jobs, known, accounted = listed.result()
            counters = counted.result() if counted is not None else None
            if seen is not None:
                # Slurm forgets a finished job after MinJobAge (5 min) unless an accounting
                # database answers sacct; the exporters' attribution still knows who held
                # which GPUs, so those jobs are reported too (no start or end known).
                extra = [j for j in seen.result() if j.job_id not in known]
                forgotten = {j.job_id for j in extra}
                jobs.extend(extra)
        measured = self.job_energy(jobs, until, since, until, counted=counters)
        for job_id in forgotten:
            e = measured.get(job_id)
            if e is not None and not e.note:
                measured[job_id] = replace(e, note=NOT_ACCOUNTED if accounted else FORGOTTEN)
        return jobs, measured

    def with_recorded_jobs(self, snap: FactorySnapshot) -> FactorySnapshot | None:
        """``jobs --all`` with no scheduler: see ``recorded_jobs.with_recorded_jobs``."""
        return with_recorded_jobs(self, snap)

    def processes(self, node: str, at: float | None = None) -> ProcessTable:
        """The processes on one node's GPUs (only that node's series are fetched)."""
        return node_processes(self, node, self.clock() if at is None else at)

    def alerts(self) -> list[Alert]:
        """Firing alerts, for triage."""
        return firing_alerts(self.client)


def _energy_today_query(schema: MetricSchema, t: float, window: str) -> str:
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


# A detail view fetches the GPUs of at most this many nodes (a job's first nodes).
DETAIL_NODES = 64

NO_JOBS = (
    "no scheduler and no job attribution (neither factoryctl_gpu_job_info nor"
    " dcgm-exporter's hpc_job label nor factoryctl scheduler-exporter's"
    f" {native.SLURM_GPU_JOB_INFO}): jobs, node state and allocation are unknown;"
    " configure [scheduler], dcgm-exporter's HPC job mapping or factoryctl scheduler-exporter"
)

FORGOTTEN = (
    "no longer listed by the scheduler (no accounting database): user and GPUs from the"
    " exporters' attribution, start and end unknown"
)
# Where the accounting database answered but did not have the job either.
NOT_ACCOUNTED = (
    "in neither the scheduler's list nor its accounting for the window: user and GPUs from"
    " the exporters' attribution, start and end unknown"
)


def _earliest_start(jobs: Sequence[Job], default: float) -> float:
    starts = [j.start_time for j in jobs if j.start_time is not None]
    if len(starts) < len(jobs):
        return default
    return min(starts)


def _held_by(jobs: Sequence[Job]) -> dict[GpuKey, tuple[str, ...]]:
    """The scheduler is the authority on who holds a GPU."""
    held: dict[GpuKey, list[str]] = {}
    for job in jobs:
        if not job.state.finished:
            for key in job.gpu_keys():
                held.setdefault(key, []).append(job.job_id)
    return {k: tuple(v) for k, v in held.items()}


__all__ = ["Allocation", "PrometheusSource", "SourceOptions"]
