"""Telemetry-only job lists over a time range, and firing alerts, from Prometheus."""

from __future__ import annotations

from datetime import datetime

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Allocation, Job, JobState
from factoryctl.telemetry.client import PromClient
from factoryctl.telemetry.job_energy import dur
from factoryctl.telemetry.metrics import MetricSchema
from factoryctl.telemetry.prom_detect import gpu_key
from factoryctl.triage import Alert


class SchedulerRequired(FactoryctlError):
    status = ExitStatus.CONFIG


def jobs_seen(client: PromClient, schema: MetricSchema, since: float, until: float) -> list[Job]:
    """Every job the exporters attributed GPUs to in [since, until] (no scheduler)."""
    assert schema.job_info is not None
    res = client.query(
        f"max by (job_id, user, account, node, gpu) "
        f"(max_over_time({schema.job_info}[{dur(until - since)}]))",
        until,
    )
    users: dict[str, str] = {}
    accounts: dict[str, str] = {}
    alloc: dict[str, dict[str, set[int]]] = {}
    for s in res.vector:
        job_id = s.labels.get("job_id", "")
        key = gpu_key(schema, s.labels)
        if not job_id or key is None:
            continue
        users[job_id] = s.labels.get("user", "")
        accounts[job_id] = s.labels.get("account", "")
        alloc.setdefault(job_id, {}).setdefault(key[0], set()).add(key[1])
    return [
        Job(
            job_id=job_id,
            user=users[job_id],
            account=accounts[job_id],
            state=JobState.UNKNOWN,
            allocations=tuple(
                Allocation(node, tuple(sorted(idx))) for node, idx in sorted(by_node.items())
            ),
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
