"""The job list without the pending jobs' JSON: what ``squeue --json`` costs at scale.

With 3,000 jobs on 24.11, ``squeue --json --states=all`` prints 23 MB in 1.4 to 2.8 s,
and 22.6 MB of it are the 2,936 pending jobs, which hold nothing a ``Job`` shows but
their id, user, account, partition and name. So the list is read in three small parts:

* ``squeue --noheader --states=all -O`` with those fields (the name last: it may hold
  the separator), every job one line, 0.04 s: which jobs exist, and in which state;
* ``squeue --json`` for every state but PENDING (``NOT_PENDING``): the running and
  finished jobs, with their allocations, times and AdminComment, 0.07 s;
* ``scontrol -o show job`` (3 MB, 0.1 s), only to learn which jobs have an AdminComment
  (scontrol prints the key only then): a pending job that has one is read from the JSON
  too (``squeue --json --jobs``), as squeue's own AdminComment field prints nothing.

A pending job from the text is the ``Job`` its JSON would map to (``slurm_json.map_job``:
no times, no allocations). Where a job that is not pending is missing from the JSON (a
state not in ``NOT_PENDING``, or a job that moved between the reads), ``merge_jobs``
returns None and the caller reads every job's JSON: slower, never wrong. On 22.05, whose
``squeue --json`` ignores ``--states``, the JSON holds every job and the text adds none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Job, JobState

SQUEUE_LIST_ARGV = (
    "squeue", "--noheader", "--states=all", "-O",
    "JobID:|,State:|,UserName:|,Account:|,Partition:|,Name:",
)  # fmt: skip
# Every job state squeue's --states takes but PENDING (Slurm 22.05 to 26.05): base states
# and the flags squeue names a job's state by.
NOT_PENDING = (
    "RUNNING,SUSPENDED,COMPLETED,CANCELLED,FAILED,TIMEOUT,NODE_FAIL,PREEMPTED,BOOT_FAIL,"
    "DEADLINE,OUT_OF_MEMORY,COMPLETING,CONFIGURING,RESIZING,REQUEUED,REQUEUE_FED,"
    "REQUEUE_HOLD,RESV_DEL_HOLD,REVOKED,SIGNALING,SPECIAL_EXIT,STAGE_OUT,STOPPED"
)
SQUEUE_JSON_NOT_PENDING_ARGV = ("squeue", "--json", f"--states={NOT_PENDING}")
SCONTROL_JOBS_ARGV = ("scontrol", "-o", "show", "job")


@dataclass(frozen=True, slots=True)
class JobRow:
    job_id: str
    state: str  # squeue's word: PENDING, RUNNING, COMPLETED, REQUEUE_HOLD, ...
    user: str
    account: str
    partition: str
    name: str

    def pending_job(self) -> Job:
        return Job(
            job_id=self.job_id,
            user=self.user,
            account=self.account,
            partition=self.partition,
            name=self.name,
            state=JobState.PENDING,
        )


def _field(value: str) -> str:
    return "" if value == "(null)" else value


def parse_job_rows(text: str) -> list[JobRow]:
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 5)
        if len(parts) != 6 or not parts[0].isdigit() or not parts[1] or not parts[2]:
            raise FactoryctlError(
                f"squeue -O (job list): line not understood: {line[:80]!r}",
                ExitStatus.SCHEDULER_ERROR,
            )
        job_id, state, user, account, partition, name = parts
        rows.append(JobRow(job_id, state, user, _field(account), _field(partition), name))
    return rows


def commented_jobs(text: str) -> set[str]:
    """Ids of the ``scontrol -o show job`` lines that carry an AdminComment. A job name or
    comment that merely contains the key only adds a job to read from the JSON."""
    out = set()
    for line in text.splitlines():
        if " AdminComment=" not in line:
            continue
        head = line.split(" ", 1)[0]
        if not head.startswith("JobId=") or not head[6:].isdigit():
            raise FactoryctlError(
                f"scontrol -o show job: line not understood: {line[:80]!r}",
                ExitStatus.SCHEDULER_ERROR,
            )
        out.add(head[6:])
    return out


def merge_jobs(rows: Sequence[JobRow], from_json: Sequence[Job]) -> list[Job] | None:
    """Every job: the JSON's where it has one, the text's pending ones else; None where a
    job that is not pending has no JSON (read every job's JSON instead). In the text's
    order; jobs the JSON has and the text not (submitted between the reads) last."""
    by_id = {j.job_id: j for j in from_json}
    out = []
    for row in rows:
        job = by_id.pop(row.job_id, None)
        if job is None:
            if row.state != "PENDING":
                return None
            job = row.pending_job()
        out.append(job)
    out.extend(by_id.values())
    return out
