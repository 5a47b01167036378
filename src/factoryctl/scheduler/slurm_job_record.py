"""A job's record: its AdminComment (written through slurmctld or, once the job has
ended, the accounting database) and the accounting's copy of the job (``sacct``).

``SlurmCLI`` delegates here with its own ``_run``: every command still goes through its
runner, environment checks and error mapping (``slurm_run``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

from factoryctl import hostlists
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Job, JobState
from factoryctl.scheduler.slurm_parse import JOB_STATES
from factoryctl.scheduler.slurm_validate import valid_job_id


class Run(Protocol):
    """``SlurmCLI._run``: one Slurm command's stdout, or a ``FactoryctlError``."""

    def __call__(self, argv: list[str], extra_env: Mapping[str, str] | None = None) -> str: ...


def set_admin_comment(run: Run, job_id: str, comment: str) -> None:
    """Replace the job's AdminComment (SlurmUser or an operator may; the job's owner
    may not). The caller merges: see ``factoryctl.energy_record.merge``.

    slurmctld takes it while the job runs; once it has ended, every generation
    (22.05, 24.11, 26.05) answers "Job has already finished", and only the accounting
    database can still change it: ``sacctmgr modify job`` (as Princeton's jobstats
    does), which is where ``sacct`` reads it. A job slurmctld has purged already
    (MinJobAge after its end) reads "Invalid job id": the same way out."""
    valid_job_id(job_id)
    try:
        run(["scontrol", "update", f"JobId={job_id}", f"AdminComment={comment}"])
        return
    except FactoryctlError as err:
        # Ended, or ended and already purged (MinJobAge): the accounting's to change.
        said = err.message.lower()
        if "already finished" not in said and "invalid job id" not in said:
            raise
    if comment != comment.lower() and sacctmgr_lowercases(run):
        raise FactoryctlError(
            f"job {job_id}: this sacctmgr lowercases the whole AdminComment, which would"
            f" change the text already there ({comment[:40]!r}); left intact",
            ExitStatus.REFUSED,
        )
    argv = ["sacctmgr", "-i", "modify", "job", "where", f"jobid={job_id}", "set"]
    out = run([*argv, f"AdminComment={comment}"])
    if "nothing modified" in out.lower() or job_id not in out.split():
        raise FactoryctlError(
            f"sacctmgr modified no job {job_id}: not in the accounting database (yet)",
            ExitStatus.SCHEDULER_ERROR,
        )


def sacctmgr_lowercases(run: Run) -> bool:
    """Whether ``sacctmgr modify job`` lowercases what it sets: 22.05's does (quoted
    or not; seen on the lab), 24.11's and 26.05's keep the case. Versions between,
    and any we cannot read, are taken to lowercase: the site's text is not ours to
    risk."""
    text = run(["sacctmgr", "--version"])
    m = re.search(r"(\d+)\.(\d+)", text)
    return m is None or (int(m.group(1)), int(m.group(2))) < (24, 11)


def accounted_job(run: Run, job_id: str) -> Job | None:
    """The job as the accounting database holds it (None: it holds no such job), with
    the AdminComment: after the job's end that copy is the authority (slurmctld's is
    no longer updated, and is purged MinJobAge after the end). Its nodes and GPU count
    (``NodeList``, ``AllocTRES``'s ``gres/gpu``), not which GPUs: the attribution
    history knows those. Times as epoch seconds (``SLURM_TIME_FORMAT=%s``); the
    comment last, as it may hold the separator."""
    from factoryctl.scheduler.slurm_accounting import allocations

    valid_job_id(job_id)
    fields = "JobID,User,Account,Partition,State,Start,End,NodeList,AllocTRES,AdminComment"
    argv = ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", fields]
    out = run(argv, {"SLURM_TIME_FORMAT": "%s"})
    for line in out.splitlines():
        parts = line.split("|", 9)
        if len(parts) < 10 or parts[0] != job_id:
            continue
        _, user, account, partition, state, start, end, nodes, tres, comment = parts
        status = JOB_STATES.get(state.split(" ")[0], JobState.UNKNOWN)
        hosts = [] if nodes in ("", "None assigned") else hostlists.expand(nodes)
        return Job(
            job_id=job_id,
            user=user,
            account=account,
            partition=partition,
            state=status,
            start_time=float(start) if start.isdigit() and int(start) > 0 else None,
            end_time=float(end) if end.isdigit() and int(end) > 0 else None,
            allocations=allocations(hosts, tres_gpus(tres)),
            admin_comment=comment,
        )
    return None


def tres_gpus(tres: str) -> int:
    """GPUs in a TRES list (``cpu=2,gres/gpu=4,node=1``); typed ones (``gres/gpu:a100=4``)
    are counted in the untyped entry. None listed is 0."""
    for item in tres.split(","):
        name, _, count = item.partition("=")
        if name == "gres/gpu":
            if not count.isdigit():
                raise FactoryctlError(
                    f"sacct AllocTRES has gres/gpu={count!r}, not a count",
                    ExitStatus.SCHEDULER_ERROR,
                )
            return int(count)
    return 0
