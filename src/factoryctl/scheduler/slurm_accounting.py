"""Slurm's accounting (``sacct --json``, slurmdbd) into the domain: jobs long gone from
squeue, for reports over days or months.

The same data parsers as ``slurm_json`` (the document's ``meta`` names which), but the
job record of accounting is its own shape in every generation:

* 22.05 (``openapi/dbv0.0.38``): ``state.current`` is a string; times are integers.
* 23.02 and later (``data_parser/v0.0.39``+; 24.11 is v0.0.42, 26.05 v0.0.45):
  ``state.current`` is a list of flags; a few numbers are ``{set, infinite, number}``.

In all of them a job's times sit in ``time`` (``start``, ``end``: 0 means not yet), its
nodes are a hostlist string (``None assigned`` before it ran) and its GPUs are the
``gres``/``gpu`` entry of ``tres.allocated`` (a total over its nodes: slurmctld must
account ``gres/gpu`` in ``AccountingStorageTRES``). Steps are nested under the job and
are not jobs. Each task of an array is a record of its own with its own ``job_id`` (the
id its processes saw as ``SLURM_JOB_ID``, which is what the exporters' attribution
carries), ``array.job_id`` and ``array.task_id`` being the ``12_3`` that users type.

A missing field or an unknown type is a ``SlurmShapeError`` naming the release, the data
parser and the field (exit 12), never a job with a default.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import hostlist

from factoryctl.model import Allocation, Job, JobState
from factoryctl.scheduler.slurm_json import Record, load
from factoryctl.scheduler.slurm_parse import JOB_STATES

WHAT = "sacct --json"
# Not a hostlist: what sacct prints for a job that never got nodes.
_NO_NODES = ("", "None assigned", "(null)")


def sacct_argv(since: float, until: float) -> list[str]:
    """Every job (all users, every state) that was eligible or ran in [since, until], one
    record per job (``-X``: no steps). Times are local, as sacct reads them; the window
    is widened to whole seconds so no edge is lost (the caller cuts at the edges)."""
    fmt = "%Y-%m-%dT%H:%M:%S"
    lo = time.strftime(fmt, time.localtime(int(since)))
    hi = time.strftime(fmt, time.localtime(int(until) + 1))
    return ["sacct", "--json", "-X", "--allusers", f"--starttime={lo}", f"--endtime={hi}"]


def job_state(r: Record) -> JobState:
    state = r.raw("state")
    if not isinstance(state, Mapping):
        raise r._bad("state", state, "an object with 'current'")
    sub = Record(state, r.shape, "job state")
    flags = (sub.text("current"),) if r.shape.legacy else sub.words("current")
    if not flags:
        raise r.shape.error(f"job {r.data.get('job_id')!r} has an empty 'state.current'")
    return JOB_STATES.get(flags[0].upper(), JobState.UNKNOWN)


def gpus_allocated(r: Record) -> int:
    """The job's GPUs over all its nodes: ``tres.allocated``'s ``gres``/``gpu`` entry
    (typed ones, ``gpu:a100``, are counted in it too); none listed is 0 GPUs."""
    tres = r.raw("tres")
    allocated = tres.get("allocated") if isinstance(tres, Mapping) else None
    if not isinstance(allocated, list):
        raise r._bad("tres", tres, "an object with an 'allocated' list")
    for entry in allocated:
        if not isinstance(entry, Mapping):
            raise r.shape.error(f"a tres.allocated entry is {type(entry).__name__}")
        if entry.get("type") == "gres" and entry.get("name") == "gpu":
            count = entry.get("count")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise r.shape.error(f"tres.allocated gres/gpu count is {count!r}")
            return count
    return 0


def allocations(hosts: list[str], gpus: int) -> tuple[Allocation, ...]:
    """Per-node GPU counts summing to the job's total (accounting keeps only the total;
    which GPUs, the attribution history knows). Slurm gives each node of a job the same
    count (``--gres`` is per node); an uneven total puts the remainder on the first."""
    if not hosts:
        return ()
    each, extra = divmod(gpus, len(hosts))
    return tuple(
        Allocation(node, (), gpus=each + (extra if i == 0 else 0)) for i, node in enumerate(hosts)
    )


def map_job(r: Record) -> Job:
    when = r.raw("time")
    if not isinstance(when, Mapping):
        raise r._bad("time", when, "an object with 'start' and 'end'")
    t = Record(when, r.shape, "job time")
    state = job_state(r)
    listed = r.text("nodes", default="")
    hosts = [] if listed in _NO_NODES else list(hostlist.expand_hostlist(listed))
    user = r.text("user")
    if not user:
        raise r._bad("user", user, "a user name")
    start, end = t.time("start"), t.time("end")
    # The job's AdminComment (where ``factoryctl job-epilog`` records its energy) is
    # ``comment.administrator``: null when empty up to 22.05, "" since.
    comment = r.data.get("comment")
    admin = ""
    if comment is not None:
        if not isinstance(comment, Mapping):
            raise r._bad("comment", comment, "an object with 'administrator'")
        admin = Record(comment, r.shape, "job comment").text("administrator", default="")
    return Job(
        job_id=str(r.number("job_id")),
        user=user,
        account=r.text("account", default=""),
        partition=r.text("partition", default=""),
        name=r.text("name", default=""),
        state=state,
        start_time=start,
        end_time=end if state.finished else None,
        allocations=allocations(hosts, gpus_allocated(r)),
        admin_comment=admin,
    )


def parse_sacct(text: str, what: str = WHAT) -> list[Job]:
    """Jobs from ``sacct --json -X``; an error for any shape not read from a real Slurm."""
    doc, shape = load(text, what)
    items = doc.get("jobs")
    if not isinstance(items, list):
        raise shape.error(f"top-level 'jobs' is {type(items).__name__}, expected a list")
    return [map_job(Record(j, shape, "job")) for j in items]


__all__ = ["parse_sacct", "sacct_argv"]
