"""Telemetry-only job lists over a time range, and firing alerts, from Prometheus."""

from __future__ import annotations

from datetime import datetime

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Allocation, Job, JobState
from factoryctl.telemetry.client import PromClient
from factoryctl.telemetry.job_energy import dur
from factoryctl.telemetry.metrics import MetricSchema, node_name
from factoryctl.telemetry.scheduler_view import SchedulerView
from factoryctl.triage import Alert


class SchedulerRequired(FactoryctlError):
    status = ExitStatus.CONFIG


def jobs_seen(client: PromClient, schema: MetricSchema, since: float, until: float) -> list[Job]:
    """Every job the exporters attributed GPUs to in [since, until], with its user and
    GPUs per node (the most it held in the window). Per node on the engine: at 100,000
    GPUs one series per GPU is ~13 MB of JSON that only becomes a GPU count anyway."""
    assert schema.job_info is not None
    window = dur(until - since)
    res = None
    if schema.job_gpus is not None:
        # One series per (node, job): at 100,000 GPUs ~8x fewer than the attribution.
        res = client.query(
            f"max by (job_id, user, account, {schema.node_label}) "
            f"(max_over_time({schema.job_gpus}[{window}]))",
            until,
        )
    if res is None or not res.vector:
        # Exporters older than factoryctl_job_gpus: count the per-GPU attribution.
        res = client.query(
            f"count by (job_id, user, account, {schema.node_label}) "
            f"(max_over_time({schema.job_info}[{window}]))",
            until,
        )
    users: dict[str, str] = {}
    accounts: dict[str, str] = {}
    alloc: dict[str, dict[str, int]] = {}
    for s in res.vector:
        job_id = s.labels.get("job_id", "")
        node = node_name(s.labels, schema.node_label)
        if not job_id or not node:
            continue
        users[job_id] = s.labels.get("user", "")
        accounts[job_id] = s.labels.get("account", "")
        by_node = alloc.setdefault(job_id, {})
        by_node[node] = by_node.get(node, 0) + int(s.value)
    return [
        Job(
            job_id=job_id,
            user=users[job_id],
            account=accounts[job_id],
            state=JobState.UNKNOWN,
            allocations=tuple(Allocation(node, (), gpus=n) for node, n in sorted(by_node.items())),
        )
        for job_id, by_node in sorted(alloc.items())
    ]


def firing_alerts(client: PromClient) -> list[Alert]:
    out = []
    for a in client.alerts():
        if a.get("state") != "firing":
            continue
        labels = {str(k): str(v) for k, v in (a.get("labels") or {}).items()}
        annotations = {str(k): str(v) for k, v in (a.get("annotations") or {}).items()}
        out.append(
            Alert(
                name=labels.get("alertname", ""),
                severity=labels.get("severity", ""),
                labels=labels,
                annotations=annotations,
                active_at=parse_rfc3339(a.get("activeAt")),
            )
        )
    return out


def parse_rfc3339(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        # Prometheus writes nanoseconds; Python parses up to microseconds.
        head, _, frac = text.rstrip("Z").partition(".")
        value = datetime.fromisoformat(head + "+00:00").timestamp()
        return value + (float("0." + frac[:6]) if frac[:6].isdigit() else 0.0)
    except ValueError:
        return None


def scheduler_jobs(
    scheduler: SchedulerView, since: float, until: float, warnings: list[str]
) -> tuple[list[Job], set[str], bool]:
    """The jobs a scheduler knows that ran in [since, until], every id it listed, and
    whether its accounting answered.

    squeue's list (running jobs, and finished ones for MinJobAge) plus, where the scheduler
    has an accounting database (``jobs_between``: sacct, or slurmrestd's /slurmdb/), every
    job that ran in the window however long ago it ended. A job in both is squeue's: the live view of a running job.
    Accounting that cannot be read leaves a report of what is still known, and a warning
    that says so; the scheduler itself failing is an error (the caller's)."""
    listed = list(scheduler.jobs())
    merged: dict[str, Job] = {}
    accounted = False
    between = getattr(scheduler, "jobs_between", None)
    if callable(between):
        try:
            merged = {j.job_id: j for j in between(since, until)}
            accounted = True
        except FactoryctlError as err:
            warnings.append(
                f"accounting unavailable ({err.message}): jobs that ended before the"
                " scheduler's memory are only those the exporters' attribution recorded"
            )
    merged.update({j.job_id: j for j in listed})
    jobs = [
        j
        for j in merged.values()
        if (j.start_time is None or j.start_time < until)
        and (j.end_time is None or j.end_time > since)
        # A job that never started used no energy in any window.
        and not (j.start_time is None and j.state.finished)
    ]
    return jobs, set(merged), accounted
