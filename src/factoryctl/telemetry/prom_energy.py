"""Per-job energy through Prometheus: ``job_energy`` and the window report.

``job_energy`` picks the best method per job (the job counters, the held GPUs' counters,
the job's admin comment); ``energy_report`` lists the jobs of a window (the scheduler's
and its accounting's, or the exporters' attribution's) with the energy each used in it.
Takes a ``PromContext``, never the source itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from factoryctl.model import Job
from factoryctl.telemetry.job_energy import EnergyReader, JobEnergy, from_admin_comment
from factoryctl.telemetry.prom_context import PromContext
from factoryctl.telemetry.prom_reports import SchedulerRequired, jobs_seen, scheduler_jobs
from factoryctl.telemetry.recorded_jobs import NO_ALLOCATIONS, recorded_report

FORGOTTEN = (
    "no longer listed by the scheduler (no accounting database): user and GPUs from the"
    " exporters' attribution, start and end unknown"
)
# Where the accounting database answered but did not have the job either.
NOT_ACCOUNTED = (
    "in neither the scheduler's list nor its accounting for the window: user and GPUs from"
    " the exporters' attribution, start and end unknown"
)


def job_energy(
    source: PromContext,
    jobs: Sequence[Job],
    now: float | None = None,
    since: float | None = None,
    until: float | None = None,
    counted: Mapping[str, float] | None = None,
) -> dict[str, JobEnergy]:
    """Energy of each job (within [since, until] when given), by the best method.
    ``counted``: the job counters' increases, when the caller already read them."""
    t = source.clock() if now is None else now
    schema = source.schema(t)
    reader = EnergyReader(source.client, schema, source.interval(t))
    out: dict[str, JobEnergy] = {}
    if schema.job_energy is not None and jobs:
        # The counters' increase over exactly (since, until]: the base is read at
        # ``since``, never earlier, or a window cutting through a job would also count
        # up to two scrape intervals before it (+5 % per job over 10 minutes).
        # Whole jobs start from before the earliest start: the counters begin at 0.
        if since is not None:
            lo = since
        else:
            lo = _earliest_start(jobs, t - 86400.0) - 2 * source.interval(t)
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


def energy_report(
    source: PromContext,
    since: float,
    until: float,
    warnings: list[str] | None = None,
    unavailable: set[str] | None = None,
) -> tuple[list[Job], dict[str, JobEnergy]]:
    """Jobs that ran in [since, until] and the energy each used inside that window;
    what limits the report (accounting unreachable) is added to ``warnings``, the job
    fields no source here can give (no scheduler: partition...) to ``unavailable``."""
    if source.scheduler is not None:
        return _scheduler_report(source, since, until, warnings)
    schema = source.schema(until)
    if schema.job_info is not None:
        # Every job of the window is wanted: its list and every job counter's increase
        # go out at once instead of one after the other (at 100,000 GPUs the list is
        # the slow one).
        reader = EnergyReader(source.client, schema, source.interval(until))
        with ThreadPoolExecutor(max_workers=2) as pool:
            seen_jobs = pool.submit(jobs_seen, source.client, schema, since, until)
            counted = (
                pool.submit(reader.job_counters, since, until, None)
                if schema.job_energy is not None
                else None
            )
            jobs = seen_jobs.result()
            counters = counted.result() if counted is not None else None
        measured = source.job_energy(jobs, until, since, until, counted=counters)
        return jobs, measured
    if schema.attribution is not None:
        return recorded_report(source, schema, since, until, unavailable)
    raise SchedulerRequired(NO_ALLOCATIONS)


def _scheduler_report(
    source: PromContext, since: float, until: float, warnings: list[str] | None
) -> tuple[list[Job], dict[str, JobEnergy]]:
    """The scheduler's jobs (squeue, and its accounting: sacct or /slurmdb/) and the
    jobs only the attribution remembers, with their energy in the window."""
    assert source.scheduler is not None
    forgotten: set[str] = set()
    # sacct (seconds over a month of jobs, most of it waiting on slurmdbd) goes out
    # first; the engine's questions that need no job list are asked meanwhile: the
    # schema, the jobs the attribution saw, every job counter's increase over the
    # window (the report wants every job in it, and 10,000 ids fit no matcher anyway).
    with ThreadPoolExecutor(max_workers=3) as pool:
        listed = pool.submit(scheduler_jobs, source.scheduler, since, until,
                             warnings if warnings is not None else [])  # fmt: skip
        schema = source.schema(until)
        seen = (
            pool.submit(jobs_seen, source.client, schema, since, until)
            if schema.job_info is not None
            else None
        )
        reader = EnergyReader(source.client, schema, source.interval(until))
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
    measured = source.job_energy(jobs, until, since, until, counted=counters)
    for job_id in forgotten:
        e = measured.get(job_id)
        if e is not None and not e.note:
            measured[job_id] = replace(e, note=NOT_ACCOUNTED if accounted else FORGOTTEN)
    return jobs, measured


def _earliest_start(jobs: Sequence[Job], default: float) -> float:
    starts = [j.start_time for j in jobs if j.start_time is not None]
    if len(starts) < len(jobs):
        return default
    return min(starts)
