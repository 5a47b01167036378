"""``factoryctl job-epilog``: record a finished job's GPU energy in its Slurm AdminComment.

Run by the slurmctld epilog (``exporters/slurm/factoryctl-energy-epilog.sh``) as
SlurmUser, once per job. It waits until Prometheus holds the job's last counter values
(end + two scrape intervals + the engine's search delay), never past ``--timeout``, reads
the job's energy, GPU-seconds and active GPU-seconds, and merges its segment into the
AdminComment without touching anyone else's text (``factoryctl.energy_record``).

Every outcome is one line: the record written (stdout) or why nothing was (stderr, with an
exit status). The epilog wrapper logs that line and always exits 0: a job's completion
never depends on this command. Every run but a dry run is also in factoryctl's audit log
(``actions/epilog_audit.py``): the write, a skip (already recorded, another tool's
comment kept) or a failure, with the comment before and after.
"""

from __future__ import annotations

import re
import time
from typing import Any

import click

from factoryctl.actions.epilog_audit import SKIPPED, WRITTEN
from factoryctl.cli.common import get_env
from factoryctl.energy_record import EnergyRecord, RecordError, merge, parse_record
from factoryctl.errors import ConfigError, ExitStatus, FactoryctlError, NotFoundError, UsageError
from factoryctl.formats import render_json
from factoryctl.hostlists import collect
from factoryctl.model import Job
from factoryctl.scheduler.base import Scheduler
from factoryctl.scheduler.checked import checked

JOB_ID = re.compile(r"^[0-9]+([_+][0-9]+)?$")
# Left of --timeout for the queries and scontrol once the wait is over.
RESERVE_SECONDS = 5.0


def _find(scheduler: Scheduler, job_id: str) -> Job:
    """slurmctld's record (GPUs, exact times), else the accounting database's: slurmctld
    purges a job MinJobAge after its end (2 s at some sites)."""
    for job in scheduler.jobs():
        if job.job_id == job_id:
            return job
    accounted = _accounted(scheduler, job_id)
    if accounted is not None:
        return accounted
    raise NotFoundError(
        f"job {job_id} is known neither to slurmctld (MinJobAge passed?) nor to accounting"
    )


def _accounted(scheduler: Scheduler, job_id: str) -> Job | None:
    try:
        return checked(scheduler).accounted_job(job_id)
    except FactoryctlError:
        return None  # no accounting here: slurmctld's copy is all there is


def _current(scheduler: Scheduler, job: Job) -> str:
    """The AdminComment as it stands. Once a job has ended, the accounting database's copy
    is the one that changes (see ``SlurmCLI.set_admin_comment``); without accounting,
    slurmctld's is all there is."""
    if job.state.finished:
        accounted = _accounted(scheduler, job.job_id)
        if accounted is not None:
            return accounted.admin_comment
    return job.admin_comment


def _already(job_id: str, comment: str) -> EnergyRecord | None:
    try:
        record = parse_record(comment)
    except RecordError:
        return None  # ours but unreadable: merge() replaces it
    return record if record is not None and record.job_id == job_id else None


def _write(scheduler: Scheduler, job_id: str, comment: str, deadline: float, env: Any) -> None:
    """Write, retrying while slurmdbd has not yet stored the job's end (it gets it from
    slurmctld asynchronously): until ``deadline``, then the last error stands."""
    while True:
        try:
            checked(scheduler).set_admin_comment(job_id, comment)
            return
        except FactoryctlError as err:
            if "not in the accounting database" not in err.message:
                if "sacctmgr" in err.message:
                    raise FactoryctlError(
                        f"job {job_id} has ended, so only Slurm's accounting can take its"
                        f" AdminComment, and it did not: {err.message}",
                        err.status,
                    ) from None
                raise
            if env.clock() + 1.0 > deadline:
                raise
            time.sleep(1.0)


@click.command("job-epilog")
@click.argument("job_id")
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Give up after this long, writing nothing (the wrapper also kills at this bound).",
)
@click.option("--dry-run", is_flag=True, help="Show the AdminComment; write nothing.")
def job_epilog(job_id: str, timeout: float, dry_run: bool) -> None:
    """Record a finished job's GPU energy in its Slurm AdminComment (slurmctld epilog).

    Writes a segment such as "factoryctl:v1 job=42 energy_j=123456.7 gpu_s=3600.0
    active_gpu_s=3400.0 src=job-counter", appended to the site's own text, never over
    it. A job that already carries its segment is left alone. Needs --prometheus and
    the Slurm CLI as a user that may update jobs (SlurmUser or an operator).
    """
    env = get_env()
    started = env.clock()
    if not JOB_ID.match(job_id):
        raise UsageError(f"invalid job id {job_id!r} (expected digits, or 12_3 / 12+1)")
    if not timeout > 0:
        raise UsageError(f"--timeout must be positive, not {timeout}")
    deadline = started + timeout
    if dry_run:  # changes nothing: not an action for the audit log (as drain --dry-run)
        _epilog(env, job_id, started, deadline, timeout, None)
        return
    from factoryctl.actions.epilog_audit import FAILED, EpilogAudit
    from factoryctl.actions.outcome import operator
    from factoryctl.cli.actions import audit_log

    audit = EpilogAudit(audit_log(env).path, operator(env.environ), job_id, env.warn,
                        env.clock, ["job-epilog", "--timeout", f"{timeout:g}", job_id])  # fmt: skip
    audit.start()
    try:
        _epilog(env, job_id, started, deadline, timeout, audit)
    except FactoryctlError as err:
        audit.result(FAILED, err.message, exit_status=int(err.status))
        raise
    except BaseException as err:  # ^C, SIGTERM as KeyboardInterrupt, a bug: still logged
        audit.result(FAILED, f"{type(err).__name__} during the epilog", exit_status=None)
        raise


def _epilog(
    env: Any, job_id: str, started: float, deadline: float, timeout: float, audit: Any
) -> None:
    """The epilog's work; ``audit`` (None in a dry run) gets every outcome."""
    dry_run = audit is None
    scheduler = env.scheduler()
    job = _find(scheduler, job_id)
    before = _current(scheduler, job)
    done = _already(job_id, before)
    if done is not None:
        # An epilog run twice writes once; Prometheus is not even asked.
        reason = f"already recorded: {done.segment()}"
        _report(env, job, None, reason, written=False)
        _log(audit, SKIPPED, reason, job, before)
        return
    source = env.source()
    from factoryctl.telemetry.prometheus_source import PrometheusSource

    if not isinstance(source, PrometheusSource):
        raise ConfigError(
            "job-epilog reads Prometheus: no Prometheus URL configured"
            " (--prometheus URL or FACTORYCTL_PROMETHEUS_URL)"
        )
    from factoryctl.telemetry.job_totals import job_totals, settled_at

    end = job.end_time if job.end_time is not None else started
    ready = settled_at(source, end)
    if ready > deadline - RESERVE_SECONDS:
        # A figure read before the last scrape would be short, and it would stay in the
        # accounting forever: write nothing rather than a wrong number.
        raise FactoryctlError(
            f"job {job_id}: Prometheus holds its last samples only {ready - started:.0f}s from"
            f" now, past --timeout {timeout:g}s; raise --timeout (FACTORYCTL_EPILOG_TIMEOUT)",
            ExitStatus.TIMEOUT,
        )
    wait = ready - env.clock()
    if wait > 0:
        time.sleep(wait)
    record = job_totals(source, job, max(env.clock(), ready))
    before = _current(scheduler, job)  # it may have changed while we waited
    plan = merge(before, record)
    if plan.comment is None:
        _report(env, job, record, plan.reason, written=False)
        _log(audit, SKIPPED, plan.reason, job, before, record)
        return
    if not dry_run:
        _write(scheduler, job_id, plan.comment, deadline, env)
    _report(env, job, record, plan.reason if not dry_run else "dry run", written=not dry_run,
            comment=plan.comment)  # fmt: skip
    _log(audit, WRITTEN, plan.reason, job, before, record, plan.comment)


def _log(
    audit: Any,
    status: str,
    reason: str,
    job: Job,
    before: str,
    record: EnergyRecord | None = None,
    after: str | None = None,
) -> None:
    """The run's ``result`` record: what the comment was, what it became (None: left as
    it was), and the figure."""
    if audit is None:
        return
    audit.result(
        status,
        reason,
        nodes=collect(job.nodes) if job.nodes else "",
        admin_comment_before=before,
        admin_comment=after,
        record=record.segment() if record is not None else None,
    )


def _report(
    env: Any,
    job: Job,
    record: EnergyRecord | None,
    reason: str,
    *,
    written: bool,
    comment: str | None = None,
) -> None:
    if env.output == "json":
        doc = {
            "kind": "job-epilog",
            "time": env.clock(),
            "source": "prometheus",
            "unavailable": [],
            "warnings": [],
            "job_id": job.job_id,
            "written": written,
            "reason": reason,
            "admin_comment": comment,
            "record": None
            if record is None
            else {
                "energy_joules": record.energy_joules,
                "gpu_seconds": record.gpu_seconds,
                "active_gpu_seconds": record.active_gpu_seconds,
                "energy_source": record.source,
            },
        }
        env.write(render_json(doc))
        return
    what = record.segment() if record is not None else ""
    if written:
        env.write(f"job {job.job_id}: {reason}: {what}")
    elif comment is not None:
        env.write(f"job {job.job_id}: would write AdminComment={comment}")
    else:
        env.write(f"job {job.job_id}: nothing written: {reason}")
