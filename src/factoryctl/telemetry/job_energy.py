"""Per-job energy from Prometheus, by the two methods that are actually correct.

* **job counter** (native schema): the exporter charges each GPU's energy to the job that
  held it over each collection interval, at the source. The job's energy over a window is
  the increase of ``factoryctl_job_energy_joules_total`` summed over its nodes: two
  aggregated queries for every job at once, plus raw samples only where a counter reset.
* **GPU counter** (dcgm-exporter, or any schema with a GPU energy counter): the increase of
  each allocated GPU's counter over exactly the job's [start, end], the edges split by
  power (``edges``), for exactly the GPUs in the scheduler's allocation. Never "the job
  holding the GPU at the end of a window" (measured -7 % total, +516 % per job).

Each query is evaluated at the instant it is about (the API's ``time``) rather than with
an ``@`` modifier: VictoriaMetrics 1.79 ignores ``@`` on a bare range selector and returns
the window ending at the query time (measured). Range windows: Prometheus's are closed
[t-r, t], VictoriaMetrics's left-open (t-r, t]; every window here has slack on both sides
so the two engines see the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from factoryctl.energy import counter_increase
from factoryctl.energy_record import RecordError, parse_record
from factoryctl.model import Allocation, Job
from factoryctl.telemetry.client import MATCHER_BUDGET, PromClient, label_matcher, label_matchers
from factoryctl.telemetry.edges import Point, gpu_energy_between
from factoryctl.telemetry.metrics import MetricSchema, node_name
from factoryctl.telemetry.results import Sample

PARALLEL_QUERIES = 8


@dataclass(frozen=True, slots=True)
class JobEnergy:
    job_id: str
    joules: float | None
    method: str  # job-counter | gpu-counter | admin-comment | none
    note: str = ""  # why the figure is missing or partial


def from_admin_comment(
    job: Job, since: float | None = None, until: float | None = None
) -> JobEnergy | None:
    """The figure the slurmctld epilog recorded in the job's AdminComment (``job-epilog``),
    for a job Prometheus no longer holds (older than its retention) or never held. None
    where there is no record. The record is the whole job's: a window that cuts the job
    gets no figure from it (a note says so), never a share guessed from it."""
    try:
        record = parse_record(job.admin_comment)
    except RecordError as err:
        return JobEnergy(job.job_id, None, "none", f"its AdminComment record: {err}")
    if record is None or record.job_id != job.job_id:
        return None
    cut = (since is not None and (job.start_time is None or job.start_time < since)) or (
        until is not None and (job.end_time is None or job.end_time > until)
    )
    if cut:
        return JobEnergy(
            job.job_id,
            None,
            "none",
            "Prometheus holds no energy for it, and its AdminComment record is the whole"
            " job's while the time range cuts the job",
        )
    return JobEnergy(
        job.job_id,
        record.energy_joules,
        "admin-comment",
        f"energy from Slurm's AdminComment record ({record.source}): Prometheus holds none",
    )


def dur(seconds: float) -> str:
    """A PromQL duration both engines parse, rounded up to whole milliseconds."""
    return f"{max(1, math.ceil(seconds * 1000))}ms"


class EnergyReader:
    def __init__(self, client: PromClient, schema: MetricSchema, interval: float) -> None:
        self.client = client
        self.schema = schema
        self.interval = interval

    # -- native: the exporter's per-job counters -----------------------------------------
    def job_counters(
        self,
        since: float,
        until: float,
        job_ids: Iterable[str] | None = None,
        metric: str | None = None,
    ) -> dict[str, float]:
        """Joules each job used in (since, until], for every job with a counter there.
        ``metric``: another per-(node, job) counter read the same way (GPU-seconds)."""
        metric = metric or self.schema.job_energy
        if metric is None:
            return {}
        ids = sorted(set(job_ids)) if job_ids is not None else None
        if ids is not None and not ids:
            return {}
        matcher = label_matcher(ids) if ids else ""
        # Thousands of ids (a whole factory's hour) would not fit a query: ask for every
        # job's counter and keep the wanted ones here; that set is what the window holds.
        sel = (
            metric
            if not ids or len(matcher) > MATCHER_BUDGET
            else f'{metric}{{job_id=~"{matcher}"}}'
        )
        window = dur(until - since)
        lookback = dur(2 * self.interval)
        q = self.client.query
        # Independent: sent at once (the engine works on all three while we wait once).
        with ThreadPoolExecutor(max_workers=3) as pool:
            top_f = pool.submit(q, f"sum by (job_id) (max_over_time({sel}[{window}]))", until)
            base_f = pool.submit(q, f"sum by (job_id) (last_over_time({sel}[{lookback}]))", since)
            resets_f = pool.submit(q, f"sum by (job_id) (resets({sel}[{window}]))", until)
            top, base, resets = top_f.result(), base_f.result(), resets_f.result()
        start_values = {s.labels.get("job_id", ""): s.value for s in base.vector}
        out = {
            s.labels.get("job_id", ""): s.value - start_values.get(s.labels.get("job_id", ""), 0.0)
            for s in top.vector
        }
        reset_jobs = [s.labels.get("job_id", "") for s in resets.vector if s.value > 0]
        if ids is not None:
            wanted = set(ids)
            out = {j: v for j, v in out.items() if j in wanted}
            reset_jobs = [j for j in reset_jobs if j in wanted]
        for job_id in reset_jobs:
            out[job_id] = self._job_counter_raw(metric, job_id, since, until)
        return out

    def _job_counter_raw(self, metric: str, job_id: str, since: float, until: float) -> float:
        """A job counter that reset (exporter restart): sum every delta, node by node."""
        sel = f'{metric}{{job_id="{job_id}"}}'
        lookback = 2 * self.interval
        raw = self.client.query(f"{sel}[{dur(until - since + lookback)}]", until)
        total = 0.0
        for series in raw.matrix:
            points = [(t, v) for t, v in series.points if not math.isnan(v)]  # stale markers
            before = [v for t, v in points if t <= since]
            inside = [v for t, v in points if t > since]
            # A series born inside the window started at 0 (the job started there).
            values = before[-1:] + inside if before else [0.0, *inside]
            total += counter_increase(values)
        return total

    # -- who held which GPU, from the attribution history in Prometheus -----------------
    def attributed_gpus(self, jobs: Sequence[Job], now: float) -> dict[str, tuple[Allocation, ...]]:
        """The GPUs each job held over its [start, end], as Prometheus recorded it (the
        schema's attribution series), for the jobs with a start. A finished job's GPUs
        are not the scheduler's to say: Slurm drops them when the job ends."""
        metric, label = self.schema.attribution, self.schema.attribution_label
        timed = [j for j in jobs if j.start_time is not None]
        if metric is None or not timed:
            return {}
        slack = 2 * self.interval
        lo = min(j.start_time for j in timed if j.start_time is not None) - slack
        hi = min(now, max((j.end_time or now) for j in timed) + slack)
        if hi <= lo:
            return {}
        node, gpu = self.schema.attribution_node, self.schema.gpu_label
        held: dict[str, dict[str, set[int]]] = {}
        for ids in label_matchers(sorted({j.job_id for j in timed})):
            res = self.client.query(
                f"max by ({label}, {node}, {gpu}) "
                f'(max_over_time({metric}{{{label}=~"{ids}"}}[{dur(hi - lo)}]))',
                hi,
            )
            for s in res.vector:
                key = self._key(s.labels, node)
                job_id = s.labels.get(label, "")
                if key is not None and job_id:
                    held.setdefault(job_id, {}).setdefault(key[0], set()).add(key[1])
        return {
            job_id: tuple(Allocation(n, tuple(sorted(i))) for n, i in sorted(by_node.items()))
            for job_id, by_node in held.items()
        }

    def why_unknown(self, job: Job, now: float) -> str:
        """Why a job's GPUs cannot be known, from what Prometheus holds over its time."""
        return self.why_unknown_all([job], now)[job.job_id]

    def _samples_range(self, job: Job, now: float) -> tuple[float, str] | None:
        """(end, window) of the question "any GPU samples over the job's time?"; None
        where it need not be asked."""
        if self.schema.attribution is None or job.start_time is None:
            return None
        end = min(job.end_time if job.end_time is not None else now, now)
        return end, dur(max(end - job.start_time, 0.0) + 2 * self.interval)

    def why_unknown_all(self, jobs: Sequence[Job], now: float) -> dict[str, str]:
        """``why_unknown`` of each job, each distinct time range asked once and the ranges
        at once: a month's 10,000 finished jobs of an array end within a few hundred
        distinct seconds (one question per job took ~80 % of such a report's time)."""
        ranges = {j.job_id: self._samples_range(j, now) for j in jobs}
        distinct = sorted({r for r in ranges.values() if r is not None})
        marker = self.schema.marker
        seen = self._seen_in_runs(distinct)

        def ask(r: tuple[float, str]) -> bool:
            return bool(self.client.query(f"count(count_over_time({marker}[{r[1]}]))", r[0]).vector)

        rest = [r for r in distinct if r not in seen]
        with ThreadPoolExecutor(max_workers=PARALLEL_QUERIES) as pool:
            seen.update(zip(rest, pool.map(ask, rest), strict=True))
        out = {}
        for job in jobs:
            r = ranges[job.job_id]
            out[job.job_id] = self._why(job, None if r is None else seen[r])
        return out

    def _seen_in_runs(self, ranges: Sequence[tuple[float, str]]) -> dict[tuple[float, str], bool]:
        """The question of ``why_unknown_all`` for many ranges of one window length ending
        on whole seconds close together (a month's job arrays: hundreds of distinct ends),
        as one range query at a 1 s step over those ends instead of one query per end:
        the same expression evaluated at the same instants, so the same answers. Ranges
        left out (a fractional end, a sparse run) are the caller's to ask one by one."""
        by_window: dict[str, list[float]] = {}
        for end, window in ranges:
            if end == int(end):
                by_window.setdefault(window, []).append(end)
        out: dict[tuple[float, str], bool] = {}
        for window, ends in by_window.items():
            for run in _dense_runs(sorted(ends)):
                promql = f"count(count_over_time({self.schema.marker}[{window}]))"
                res = self.client.query_range(promql, run[0], run[-1], 1.0)
                have = {round(t) for series in res.matrix for t, v in series.points if v > 0}
                out.update(((end, window), round(end) in have) for end in run)
        return out

    def _why(self, job: Job, seen: bool | None) -> str:
        if self.schema.attribution is None:
            return "its GPUs are unknown: the scheduler does not list them, and no attribution"
        if job.start_time is None or seen is None:
            return "its GPUs are unknown: no start time, and no attribution recorded for it"
        if not seen:
            return (
                "no GPU samples at all over its time range (older than the retention,"
                " or exporters were down): its GPUs cannot be known"
            )
        where = (
            self.schema.attribution
            if self.schema.attribution_label == "job_id"
            else "no hpc_job label: dcgm-exporter without HPC job mapping, and no"
            " factoryctl scheduler-exporter"
        )
        return f"no attribution recorded for it ({where}): its GPUs cannot be known"

    # -- GPU counters over exactly [start, end] --------------------------------------------
    def gpu_counters(
        self,
        jobs: Sequence[Job],
        now: float,
        since: float | None = None,
        until: float | None = None,
    ) -> dict[str, JobEnergy]:
        tasks = [j for j in jobs if j.start_time is not None and any(j.gpu_keys())]
        with ThreadPoolExecutor(max_workers=PARALLEL_QUERIES) as pool:
            results = list(pool.map(lambda j: self._one_job(j, now, since, until), tasks))
        out = {r.job_id: r for r in results}
        # No GPU known to have been held: never "no energy samples for 0 GPUs".
        unknown = [j for j in jobs if j.job_id not in out]
        for job_id, why in self.why_unknown_all(unknown, now).items():
            out[job_id] = JobEnergy(job_id, None, "gpu-counter", why)
        return out

    def _one_job(self, job: Job, now: float, since: float | None, until: float | None) -> JobEnergy:
        assert job.start_time is not None
        start = max(job.start_time, since) if since is not None else job.start_time
        end = job.end_time if job.end_time is not None else now
        end = min(end, until) if until is not None else end
        end = min(end, now)
        if end <= start:
            return JobEnergy(job.job_id, 0.0, "gpu-counter")
        energy_metric = self.schema.gpu_energy
        if energy_metric is None:
            return JobEnergy(job.job_id, None, "gpu-counter", "no GPU energy counter")
        power_metric = self.schema.gpu_power
        keys = set(job.gpu_keys())
        nodes = sorted({n for n, _ in keys})
        gpus = sorted({str(i) for _, i in keys})
        # A job on 1,500 nodes: its node alternation alone would pass VictoriaMetrics'
        # query length limit, so the nodes go out in parts, one query each.
        sels = []
        for node_re in label_matchers(nodes):
            if self.schema.node_label == "instance":
                node_re = f"({node_re})(:[0-9]+)?"  # the node is the host part of host:port
            sels.append(
                f'{self.schema.node_label}=~"{node_re}",'
                f'{self.schema.gpu_label}=~"{label_matcher(gpus)}"'
            )
        names = energy_metric.metric + (f"|{power_metric.metric}" if power_metric else "")
        half = 2 * self.interval
        energy: dict[tuple[str, int], list[Point]] = {k: [] for k in keys}
        power: dict[tuple[str, int], list[Point]] = {k: [] for k in keys}

        def collect(promql: str, at: float) -> None:
            for series in self.client.query(promql, at).matrix:
                key = self._key(series.labels)
                if key not in energy:
                    continue
                name = series.labels.get("__name__", energy_metric.metric)
                # VictoriaMetrics returns a series' staleness marker as a NaN sample: where
                # a series ends (dcgm-exporter's hpc_job copy of a GPU when its job ends).
                points = [p for p in series.points if not math.isnan(p[1])]
                if name == energy_metric.metric:
                    energy[key].extend(points)
                else:
                    power[key].extend(points)

        reset_samples: list[Sample] = []
        for sel in sels:
            for edge in (start, end):
                lo, hi = edge - half, min(edge + half, now)
                collect(f'{{__name__=~"{names}",{sel}}}[{dur(hi - lo)}]', hi)
            resets = self.client.query(
                f"resets({energy_metric.metric}{{{sel}}}[{dur(end - start)}])", end
            )
            reset_samples.extend(resets.vector)
        for sample in reset_samples:
            key = self._key(sample.labels)
            if key in energy and sample.value > 0:
                node, index = key
                one_node = label_matcher([node])
                if self.schema.node_label == "instance":
                    one_node += "(:[0-9]+)?"
                one = f'{self.schema.node_label}=~"{one_node}",{self.schema.gpu_label}="{index}"'
                hi = min(end + half, now)
                # Every sample, power too: the reset's lost part is estimated from power.
                collect(f'{{__name__=~"{names}",{one}}}[{dur(hi - start + half)}]', hi)
        total, missing = 0.0, 0
        for key in sorted(keys):
            pts = [(t, v * energy_metric.scale) for t, v in energy[key]]
            value = gpu_energy_between(pts, power[key], start, end)
            if value is None:
                missing += 1
            else:
                total += value
        if missing == len(keys):
            return JobEnergy(
                job.job_id,
                None,
                "gpu-counter",
                f"no energy samples for its {len(keys)} GPUs in the job's time range"
                " (older than the retention, or exporters were down)",
            )
        note = f"{missing} of {len(keys)} GPUs had no energy samples" if missing else ""
        return JobEnergy(job.job_id, total, "gpu-counter", note)

    def _key(self, labels: dict[str, str] | object, node: str = "") -> tuple[str, int] | None:
        assert isinstance(labels, dict)
        try:
            return (
                node_name(labels, node or self.schema.node_label),
                int(labels[self.schema.gpu_label]),
            )
        except (KeyError, ValueError):
            return None


# A range query pays off for a run of at least this many ends (one round of parallel
# instant queries otherwise), at least one end per this many seconds of its span, and no
# longer than the points an engine answers for one range query.
RUN_MIN_ENDS = 2 * PARALLEL_QUERIES
RUN_SECONDS_PER_END = 64
RUN_MAX_POINTS = 11_000


def _dense_runs(ends: Sequence[float]) -> list[list[float]]:
    """Sorted ends cut into runs worth one range query each (see the constants)."""
    runs: list[list[float]] = []
    run: list[float] = []
    for end in ends:
        if run and (end - run[0] >= RUN_MAX_POINTS or end - run[-1] > RUN_SECONDS_PER_END):
            runs.append(run)
            run = []
        run.append(end)
    runs.append(run)
    return [r for r in runs if len(r) >= RUN_MIN_ENDS]
