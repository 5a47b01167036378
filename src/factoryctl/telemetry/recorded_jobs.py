"""Jobs over a time range from the attribution history alone: no scheduler reachable, on a
dcgm-exporter site whose Prometheus holds ``factoryctl scheduler-exporter``'s
``factoryctl_slurm_gpu_job_info{node,gpu,job_id,user,account}`` or dcgm-exporter's
``hpc_job`` copies.

A finished job is then known only by the series that named it while it ran: its GPUs
(per node, the most it held in the range), its user and account where the series carries
them, and its start and end **inferred** from the series' first and last samples. Those
are read with ``timestamp()`` in a subquery at a resolution (``RecordedJobs.resolution``):
each inferred edge is within one resolution step of the first/last sample, which is itself
within one scrape of the real start/end. What the history cannot know (partition, the
job's name and final state; user and account from ``hpc_job``) is left empty and named in
``unavailable``, never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from factoryctl.model import Allocation, FactorySnapshot, Job, JobState
from factoryctl.telemetry import schema as native
from factoryctl.telemetry.client import PromClient
from factoryctl.telemetry.job_energy import JobEnergy, dur
from factoryctl.telemetry.metrics import MetricSchema, node_name, recorded_query
from factoryctl.telemetry.prom_context import SourceOptions
from factoryctl.telemetry.prom_reports import SchedulerRequired

NO_ALLOCATIONS = (
    "per-job energy on a dcgm-exporter site needs the scheduler's allocations or a record"
    " of them: configure [scheduler], dcgm-exporter's HPC job mapping or factoryctl"
    f" scheduler-exporter ({native.SLURM_GPU_JOB_INFO}); none is recorded in this range"
)
# Steps of the first/last-sample subquery at most (Prometheus' own cap on a range query's
# points); a longer range gets a coarser resolution.
MAX_STEPS = 11_000
# Never coarser: a step must land within the engines' 5-minute lookback after a series' last
# sample, or that sample (the job's end) is not seen at all.
MAX_RESOLUTION = 240.0


@dataclass(frozen=True, slots=True)
class RecordedJobs:
    jobs: list[Job]
    resolution: float  # seconds: how far an inferred start or end may be from the sample
    unavailable: frozenset[str]  # job fields the history cannot give

    def note(self, job: Job, metric: str) -> str:
        edges = "start" if job.end_time is None else "start and end"
        return (
            f"no scheduler: {edges} inferred from the first and last samples of {metric}"
            f" (resolution {self.resolution:g} s)"
        )


def resolution(since: float, until: float, interval: float) -> float:
    """One scrape interval, or coarser where the range would take more than MAX_STEPS."""
    step = max(interval, math.ceil((until - since) / MAX_STEPS))
    return float(min(step, max(interval, MAX_RESOLUTION)))


def recorded_jobs(
    client: PromClient, schema: MetricSchema, since: float, until: float, interval: float
) -> RecordedJobs:
    """Every job the attribution history names in [since, until]. A job still named within
    two scrape intervals of ``until`` is running (no end); any other has ended (its final
    state unknown)."""
    metric, label = schema.attribution, schema.attribution_label
    assert metric is not None
    node, gpu = schema.attribution_node, schema.gpu_label
    # The scheduler-exporter's series say who and which account; dcgm's hpc_job does not.
    who = ("user", "account") if metric == native.SLURM_GPU_JOB_INFO else ()
    sel = f'{metric}{{{label}!=""}}'
    window = dur(until - since)
    step = resolution(since, until, interval)
    keep = ", ".join((label, node, *who))
    queries = {
        "held": f"count by ({keep}) (max by ({keep}, {gpu}) (max_over_time({sel}[{window}])))",
        "first": f"min by ({label}) (min_over_time(timestamp({sel})[{window}:{dur(step)}]))",
        "last": f"max by ({label}) (max_over_time(timestamp({sel})[{window}:{dur(step)}]))",
    }
    with ThreadPoolExecutor(max_workers=len(queries)) as pool:
        futures = {k: pool.submit(client.query, q, until) for k, q in queries.items()}
        results = {k: f.result() for k, f in futures.items()}
    first = {s.labels.get(label, ""): s.value for s in results["first"].vector}
    last = {s.labels.get(label, ""): s.value for s in results["last"].vector}
    alloc: dict[str, dict[str, int]] = {}
    names: dict[str, tuple[str, str]] = {}
    for s in results["held"].vector:
        job_id, host = s.labels.get(label, ""), node_name(s.labels, node)
        if not job_id or not host:
            continue
        names[job_id] = (s.labels.get("user", ""), s.labels.get("account", ""))
        by_node = alloc.setdefault(job_id, {})
        by_node[host] = by_node.get(host, 0) + int(s.value)
    running_after = until - 2 * interval - step
    jobs = []
    for job_id, by_node in sorted(alloc.items()):
        start, end = first.get(job_id), last.get(job_id)
        ended = end is not None and end < running_after
        user, account = names[job_id]
        jobs.append(
            Job(
                job_id=job_id,
                user=user,
                account=account,
                # Running while its series is still written; after that, how it ended
                # (completed, failed, cancelled) only Slurm knows.
                state=JobState.UNKNOWN if ended else JobState.RUNNING,
                start_time=start,
                end_time=end if ended else None,
                allocations=tuple(Allocation(n, (), gpus=c) for n, c in sorted(by_node.items())),
            )
        )
    # A job's final state is not listed: it is "unknown" once ended, which says just that.
    unavailable = {"partition", "name"}
    if not who:
        unavailable.update(("user", "account"))
    return RecordedJobs(jobs, step, frozenset(unavailable))


class EnergySource(Protocol):
    """What these reports need of the Prometheus source (which calls them)."""

    client: PromClient
    options: SourceOptions

    @property
    def scheduler(self) -> object | None: ...  # read only: any scheduler, or none

    def schema(self, at: float) -> MetricSchema: ...
    def interval(self, at: float) -> float: ...
    def job_energy(
        self, jobs: Sequence[Job], now: float | None = None, since: float | None = None,
        until: float | None = None,
    ) -> dict[str, JobEnergy]: ...  # fmt: skip


def recorded_report(
    source: EnergySource,
    schema: MetricSchema,
    since: float,
    until: float,
    unavailable: set[str] | None,
) -> tuple[list[Job], dict[str, JobEnergy]]:
    """``factoryctl energy`` with no scheduler on a dcgm-exporter site: the jobs the
    attribution history names, each with its note (times inferred, the resolution), and
    their GPUs' energy over that time; the fields it cannot give added to ``unavailable``."""
    assert schema.attribution is not None
    found = recorded_jobs(source.client, schema, since, until, source.interval(until))
    if not found.jobs:
        seen = source.client.query(recorded_query(schema, dur(until - since)), until)
        if not seen.vector:
            # Nothing recorded at all (dcgm-exporter without a mapping): an empty report
            # would read as "no energy used".
            raise SchedulerRequired(NO_ALLOCATIONS)
    measured = source.job_energy(found.jobs, now=until, since=since, until=until)
    for job in found.jobs:
        e = measured[job.job_id]
        note = found.note(job, schema.attribution)
        measured[job.job_id] = replace(e, note=f"{e.note}; {note}" if e.note else note)
    if unavailable is not None:
        unavailable.update(found.unavailable)
    return found.jobs, measured


def with_recorded_jobs(source: EnergySource, snap: FactorySnapshot) -> FactorySnapshot | None:
    """``jobs --all`` with no scheduler on a dcgm-exporter site: ``snap`` plus the jobs the
    attribution history names as ended within ``finished_lookback`` (6 h), each with its
    energy in that range and the note that its times are inferred. None where a scheduler
    answers, or the schema has telemetry jobs of its own (native), or nothing is recorded."""
    schema = source.schema(snap.time)
    if source.scheduler is not None or schema.job_info is not None:
        return None
    if schema.attribution is None or schema.gpu_energy is None:
        return None
    since = snap.time - source.options.finished_lookback
    missing: set[str] = set()
    try:
        jobs, measured = recorded_report(source, schema, since, snap.time, missing)
    except SchedulerRequired:
        return None  # nothing recorded: the snapshot's own "no attribution" stands
    shown = {j.job_id for j in snap.jobs}
    ended = [
        replace(j, energy_joules=measured[j.job_id].joules, energy_source=measured[j.job_id].method)
        for j in jobs
        if j.end_time is not None and j.job_id not in shown
    ]
    notes = {j.job_id: measured[j.job_id].note for j in ended if measured[j.job_id].note}
    return replace(
        snap,
        jobs=(*snap.jobs, *ended),
        job_notes={**snap.job_notes, **notes},
        unavailable=snap.unavailable | (missing if ended else set()),
    )
