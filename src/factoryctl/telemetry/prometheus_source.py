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

The queries and their assembly into GPUs live in ``prom_gpus``, per-job energy and the
energy report in ``prom_energy``; both read through ``PromContext``, this source's slice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from factoryctl.energy import local_midnight
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import GPU, Allocation, FactorySnapshot, Job, Node
from factoryctl.processes import ProcessTable
from factoryctl.telemetry import prom_energy, prom_summary
from factoryctl.telemetry import schema as native
from factoryctl.telemetry.client import PromClient
from factoryctl.telemetry.gpu_fields import VIEW_FIELDS
from factoryctl.telemetry.job_energy import JobEnergy
from factoryctl.telemetry.job_summary import job_rows
from factoryctl.telemetry.metrics import MetricSchema, indices_unknown_warning, no_gpus_warning
from factoryctl.telemetry.node_processes import node_processes
from factoryctl.telemetry.node_summary import node_rows
from factoryctl.telemetry.poll_detail import FULL, Detail
from factoryctl.telemetry.prom_context import SourceOptions, run_queries
from factoryctl.telemetry.prom_detect import (
    NO_ROLLUPS,
    detect_console_rules,
    detect_interval,
    detect_rollups,
    detect_schema,
    detect_search_delay,
    metric_names,
)
from factoryctl.telemetry.prom_energy import FORGOTTEN, NOT_ACCOUNTED
from factoryctl.telemetry.prom_gpus import GpuKey, attribution, gpus_from, held_by, snapshot_plan
from factoryctl.telemetry.prom_reports import firing_alerts
from factoryctl.telemetry.recorded_jobs import with_recorded_jobs
from factoryctl.telemetry.results import QueryResult
from factoryctl.telemetry.scheduler_view import (
    SchedulerView,
    jobs_from_attribution,
    nodes_from_gpus,
)
from factoryctl.triage import Alert

# Seconds between asking an engine without rollups again whether it has them now.
ROLLUPS_RECHECK = 60.0


@dataclass
class _Detected:
    """What one detection found: found, it stays found; not found, it is asked again
    every ``ROLLUPS_RECHECK`` seconds where ``recheck`` allows."""

    found: bool | None = None
    asked: float | None = None  # when the engine last said it had none

    def get(self, at: float, recheck: bool, probe: Callable[[], bool]) -> bool:
        stale = self.asked is not None and not 0 <= at - self.asked < ROLLUPS_RECHECK
        if self.found is None or (self.found is False and recheck and stale):
            self.found = probe()
            self.asked = None if self.found else at
        return self.found


@dataclass
class PrometheusSource:
    client: PromClient
    scheduler: SchedulerView | None = None
    options: SourceOptions = field(default_factory=SourceOptions)
    clock: Callable[[], float] = time.time
    _schema: MetricSchema | None = None
    _interval: float | None = None
    _delay: float | None = None
    _rollups: _Detected = field(default_factory=_Detected)
    _console_rules: _Detected = field(default_factory=_Detected)
    _index: tuple[float, frozenset[str] | None] | None = None  # metric names, and when read
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

        def probe() -> bool:
            return mode == "on" or (
                mode == "auto"
                and detect_rollups(
                    self.client, at, self.options.inventory_window, self._metric_names(at)
                )
            )

        return self._rollups.get(at, mode == "auto", probe)

    def console_rules(self, at: float) -> bool:
        """Whether the engine holds the console's recording rules (``console_rules``),
        which the Overview's and the Nodes view's polls read instead of whole rollups.
        Found, they stay found (rules that stop show in their heartbeat's age, read every
        poll); not found, asked again every ``ROLLUPS_RECHECK`` seconds."""
        window = self.options.inventory_window
        return self._console_rules.get(
            at, True, lambda: detect_console_rules(self.client, at, window, self._metric_names(at))
        )

    def _metric_names(self, at: float) -> frozenset[str] | None:
        """The index's metric names, read once per time asked: the rollups' and the console
        rules' detection at a source's first poll share one request."""
        if self._index is None or self._index[0] != at:
            self._index = (at, metric_names(self.client, at, self.options.inventory_window))
        return self._index[1]

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
        plan, wanted, xid_gauge = snapshot_plan(
            self, schema, t, fields, view, view_of_scheduler is None
        )
        results = self._run(plan, t)
        unavailable = set(schema.unavailable())
        users: dict[str, str] = {}
        energy: dict[str, JobEnergy] = {}
        if view_of_scheduler is not None:
            nodes, jobs = view_of_scheduler
            held = held_by(jobs)
            gpus = gpus_from(schema, results, wanted, xid_gauge, unavailable, held)
            # GPUs the scheduler allocated but telemetry never saw (exporter down) still count.
            for key, ids in held.items():
                if key not in gpus:
                    gpus[key] = GPU(node=key[0], index=key[1], up=False, job_ids=ids)
            if view != "nodes":  # the nodes view shows no job
                energy = self.job_energy(jobs, t)
        else:
            held, users = ({}, {})
            if "job_info" in results:
                held, users = attribution(schema, results["job_info"])
            gpus = gpus_from(schema, results, wanted, xid_gauge, unavailable, held)
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
            # Each job's energy only where the view shows it (``Detail.job_energy``).
            energy = self.job_energy(jobs, t) if detail.job_energy else {}
            jobs = [
                replace(j, energy_joules=energy[j.job_id].joules) if j.job_id in energy else j
                for j in jobs
            ]
        else:  # the rollups' jobs carry their counters' energy already, with no note
            nodes, jobs = got.nodes, got.jobs
            energy = {}
        warnings.extend(got.warnings)
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
        plan, wanted, xid_gauge = snapshot_plan(self, schema, t, None, None, True, names)
        results = self._run(plan, t)
        held: dict[GpuKey, tuple[str, ...]] = {}
        if "job_info" in results:
            held, _ = attribution(schema, results["job_info"])
        gpus = gpus_from(schema, results, wanted, xid_gauge, set(), held)
        return tuple(gpus[k] for k in sorted(gpus))

    def snapshot_for_view(self, view: str) -> FactorySnapshot:
        return self.snapshot(view=view)

    def job_rows_for_view(
        self, node_names: bool = True
    ) -> tuple[FactorySnapshot, list[dict[str, Any]]] | None:
        """``factoryctl jobs`` from per-job aggregates; None where a scheduler holds the
        allocations (the caller then takes the per-GPU snapshot). ``node_names``: the
        snapshot names every node (for ``--node``), else none."""
        return job_rows(self, node_names=node_names)

    def node_rows_for_view(self) -> tuple[FactorySnapshot, list[dict[str, Any]]]:
        """``factoryctl nodes`` from per-node aggregates (no per-GPU vectors at all)."""
        return node_rows(self)

    def _run(self, plan: Mapping[str, str], t: float) -> dict[str, QueryResult]:
        return run_queries(self.client, plan, t)

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
        """Energy of each job, by the best method: see ``prom_energy.job_energy``."""
        return prom_energy.job_energy(self, jobs, now, since, until, counted)

    # -- reports -------------------------------------------------------------------------
    def energy_report(
        self,
        since: float,
        until: float,
        warnings: list[str] | None = None,
        unavailable: set[str] | None = None,
    ) -> tuple[list[Job], dict[str, JobEnergy]]:
        """Jobs that ran in [since, until] and the energy each used inside that window:
        see ``prom_energy.energy_report``."""
        return prom_energy.energy_report(self, since, until, warnings, unavailable)

    def with_recorded_jobs(self, snap: FactorySnapshot) -> FactorySnapshot | None:
        """``jobs --all`` with no scheduler: see ``recorded_jobs.with_recorded_jobs``."""
        return with_recorded_jobs(self, snap)

    def processes(self, node: str, at: float | None = None) -> ProcessTable:
        """The processes on one node's GPUs (only that node's series are fetched)."""
        return node_processes(self, node, self.clock() if at is None else at)

    def alerts(self) -> list[Alert]:
        """Firing alerts, for triage."""
        return firing_alerts(self.client)


# A detail view fetches the GPUs of at most this many nodes (a job's first nodes).
DETAIL_NODES = 64

NO_JOBS = (
    "no scheduler and no job attribution (neither factoryctl_gpu_job_info nor"
    " dcgm-exporter's hpc_job label nor factoryctl scheduler-exporter's"
    f" {native.SLURM_GPU_JOB_INFO}): jobs, node state and allocation are unknown;"
    " configure [scheduler], dcgm-exporter's HPC job mapping or factoryctl scheduler-exporter"
)


__all__ = ["FORGOTTEN", "NOT_ACCOUNTED", "Allocation", "PrometheusSource", "SourceOptions"]
