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

slurmrestd's ``/slurmdb/vX/jobs`` (``SlurmRestd.jobs_between``) answers with the same
records and meta, so ``map_job`` maps them too; ``slurmdb_query`` and ``parse_slurmdb_jobs``
make that endpoint answer what ``sacct_argv`` asks (see each).

A missing field or an unknown type is a ``SlurmShapeError`` naming the release, the data
parser and the field (exit 12), never a job with a default.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Collection, Mapping
from typing import Any

import hostlist

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Allocation, Job, JobState
from factoryctl.scheduler.slurm_json import Record, load, shape_of
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


@functools.lru_cache(maxsize=4096)
def _hosts(listed: str) -> tuple[str, ...]:
    """A job's nodes, expanded once per distinct hostlist: a month's 10,000 jobs run on
    far fewer node sets (an array's tasks share a handful)."""
    return () if listed in _NO_NODES else tuple(hostlist.expand_hostlist(listed))


def map_job(r: Record) -> Job:
    when = r.raw("time")
    if not isinstance(when, Mapping):
        raise r._bad("time", when, "an object with 'start' and 'end'")
    t = Record(when, r.shape, "job time")
    state = job_state(r)
    hosts = list(_hosts(r.text("nodes", default="")))
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


# ESLURM_REST_EMPTY_RESULT: 22.05's /slurmdb/ answers "Nothing found" as an error when no
# job matches (23.02 and later as a warning).
_EMPTY_RESULT_ERRNO = 9003


def slurmdb_query(params: Collection[str], since: float, until: float,
                  what: str) -> dict[str, str]:  # fmt: skip
    """The query for ``/slurmdb/vX/jobs`` that asks what ``sacct_argv`` asks, from the
    parameter names the server's OpenAPI spec lists for it (``params``): every version
    read (22.05's v0.0.38, 24.11's v0.0.40-42, 26.05's v0.0.42-45) names them
    ``start_time``/``end_time``/``skip_steps``.

    Times are ``uts<epoch seconds>``, which Slurm's time parser reads in every one of them:
    a plain epoch is refused by v0.0.38, v0.0.40 and v0.0.41 ("Parsing of ... for
    timestamp failed", HTTP 422), and a date would be read in the *server's* time zone."""
    missing = [p for p in ("start_time", "end_time") if p not in params]
    if missing:
        raise FactoryctlError(
            f"{what} takes no {' or '.join(missing)} (its parameters: "
            f"{', '.join(sorted(params)) or 'none'}): cannot ask it for a window",
            ExitStatus.SCHEDULER_ERROR,
        )
    query = {"start_time": f"uts{int(since)}", "end_time": f"uts{int(until) + 1}"}
    if "skip_steps" in params:
        query["skip_steps"] = "true"  # sacct -X: steps are not jobs (mapping skips them)
    return query


def parse_slurmdb_jobs(doc: Mapping[str, Any], what: str) -> list[Job]:
    """Jobs from a ``/slurmdb/vX/jobs`` body, as ``parse_sacct`` maps ``sacct --json -X``.
    Where the two differ, this follows sacct: slurmrestd shows a requeued job's earlier
    runs too (it asks slurmdbd with ``JOBCOND_FLAG_DUP``), sacct only its last run (the
    latest submission is kept). Slurm's errors (but 22.05's "Nothing found") are one line,
    exit 8: the records come from slurmdbd, through slurmrestd."""
    errors = doc.get("errors") or []
    if not isinstance(errors, list):
        raise shape_of(doc, what).error(f"'errors' is {type(errors).__name__}, expected a list")
    real = [e for e in errors if not (isinstance(e, Mapping)
                                      and e.get("error_number") == _EMPTY_RESULT_ERRNO)]  # fmt: skip
    if real:
        first = real[0] if isinstance(real[0], Mapping) else {"error": str(real[0])}
        parts = [str(first.get(k)) for k in ("error", "description") if first.get(k)]
        raise FactoryctlError(
            f"scheduler unreachable ({what}): {': '.join(dict.fromkeys(parts)) or 'error'}"
            " (is slurmdbd running, and reachable from slurmrestd?)",
            ExitStatus.SCHEDULER_UNREACHABLE,
        )
    shape = shape_of(doc, what)
    items = doc.get("jobs")
    if not isinstance(items, list):
        raise shape.error(f"top-level 'jobs' is {type(items).__name__}, expected a list")
    latest: dict[str, tuple[float, Job]] = {}
    for item in items:
        r = Record(item, shape, "job")
        job = map_job(r)
        submitted = Record(r.raw("time"), shape, "job time").time("submission") or 0.0
        if job.job_id not in latest or submitted >= latest[job.job_id][0]:
            latest[job.job_id] = (submitted, job)
    return [job for _, job in latest.values()]


__all__ = ["parse_sacct", "parse_slurmdb_jobs", "sacct_argv", "slurmdb_query"]
