"""Triage: what is broken, whom it hurts, and what to do, most urgent first. Pure.

Input is a snapshot plus, where the source has them, firing Prometheus alerts. Every
problem is tied to its node, GPU, jobs and users, and carries one suggested action: a
hardware fault suggests a drain with a ready reason; an application XID (13, 31, 43) is
the user's bug, so it suggests telling the user and leaves the node in service. What the
snapshot could not see is a finding too: a scheduler that could not be read is critical,
missing GPU telemetry a warning, so triage never reports "healthy" for want of looking.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from factoryctl.model import GPU, GPU_TELEMETRY, FactorySnapshot, Job, NodeState
from factoryctl.occupancy import ACTIVE_THRESHOLD

XID_HARDWARE = {
    79: "fell off the bus",
    48: "double-bit ECC error",
    94: "contained ECC error",
    95: "uncontained ECC error",
    74: "NVLink error",
    63: "row remap pending",
    64: "row remap failure",
}
XID_APPLICATION = {
    13: "graphics engine exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
}
OWN_REASON_PREFIX = "factoryctl:"
# What ``scheduler_view.nodes_from_gpus`` says of a node whose exporter went silent when no
# scheduler is configured: telemetry cannot tell a dead node from a dead exporter.
NO_TELEMETRY_REASON = "no telemetry"

# Which snapshot finding each alert of dashboards/prometheus/alerts.rules.yml is the same
# problem as. An alert and a finding of one family on the same node (and GPU) are one
# problem; the alert wins, as it carries the runbook. Alerts not listed are their own family.
# Within a family the first listed is the most specific: it is kept when several fire.
ALERT_FAMILIES = {
    "FactoryctlGPUXid79FallenOffBus": "xid",
    "FactoryctlGPUXidECC": "xid",
    "FactoryctlGPUXidApplication": "xid",
    "FactoryctlGPUUncorrectableECC": "xid",
    "FactoryctlGPURowRemapFailure": "xid",
    "FactoryctlGPULost": "xid",
    "FactoryctlGPUThermalThrottling": "thermal",
    "FactoryctlGPUIdleAllocated": "idle",
    "FactoryctlExporterDown": "exporter",
    "FactoryctlExporterStale": "exporter",
    "FactoryctlNodeNotReporting": "exporter",
    "FactoryctlNodeDown": "node_down",
    "FactoryctlNodeDrainedTooLong": "drained",
}
SNAPSHOT_FAMILIES = {
    "gpu_lost": "xid",
    "gpu_xid_hardware": "xid",
    "gpu_xid_application": "xid",
    "gpu_thermal_throttle": "thermal",
    "idle_allocated": "idle",
    "exporter_silent": "exporter",
    "node_down": "node_down",
    "node_drained": "drained",
}


class Severity(IntEnum):
    INFO = 0
    WARNING = 1
    CRITICAL = 2


@dataclass(frozen=True, slots=True)
class Alert:
    """A firing alert as Prometheus reports it (``/api/v1/alerts``)."""

    name: str
    severity: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    active_at: float | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    severity: Severity
    kind: str
    summary: str
    node: str | None = None
    gpu: int | None = None
    jobs: tuple[tuple[str, str], ...] = ()  # (job_id, user)
    since: float | None = None
    action: str = ""
    source: str = "snapshot"  # snapshot | alert

    def to_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity.name.lower(),
            "kind": self.kind,
            "summary": self.summary,
            "node": self.node,
            "gpu": self.gpu,
            "jobs": [{"job_id": j, "user": u} for j, u in self.jobs],
            "users": sorted({u for _, u in self.jobs}),
            "since": self.since,
            "action": self.action,
            "source": self.source,
        }


def _check_exporter(node: str) -> str:
    return f"check factoryctl-exporter on {node}: systemctl status factoryctl-exporter"


def family(problem: Problem) -> str:
    """The kind of fault, shared by an alert and the snapshot finding it duplicates."""
    if problem.source == "alert":
        name = problem.kind.removeprefix("alert:")
        return ALERT_FAMILIES.get(name, problem.kind)
    return SNAPSHOT_FAMILIES.get(problem.kind, problem.kind)


def _covers(alert: Problem, finding: Problem) -> bool:
    """True when ``alert`` reports the same problem as the snapshot ``finding``."""
    if family(alert) != family(finding) or alert.node != finding.node:
        return False
    if alert.gpu is not None and finding.gpu is not None and alert.gpu != finding.gpu:
        return False
    if family(alert) == "idle":  # one job's idle GPUs, not another job's on the same node
        return bool({j for j, _ in alert.jobs} & {j for j, _ in finding.jobs})
    return True


def _drain(node: str, reason: str) -> str:
    return f"factoryctl drain {node} --reason {shlex.quote(reason)}"


def _holders(snapshot: FactorySnapshot, gpu: GPU) -> tuple[tuple[str, str], ...]:
    jobs: list[Job] = [j for j in snapshot.jobs_on_node(gpu.node) if gpu.key in set(j.gpu_keys())]
    if not jobs and gpu.job_ids:
        jobs = [j for jid in gpu.job_ids if (j := snapshot.job(jid)) is not None]
    return tuple((j.job_id, j.user) for j in jobs)


def _gpu_problems(snapshot: FactorySnapshot, since: float | None) -> Iterable[Problem]:
    down_nodes = {
        n.name for n in snapshot.nodes if n.state in (NodeState.DOWN, NodeState.REBOOTING)
    }
    for gpu in snapshot.gpus:
        if gpu.node in down_nodes:
            continue
        recent = gpu.last_xid is not None and (since is None or (gpu.last_xid_time or 0) >= since)
        if not gpu.up:
            why = (
                f"XID {gpu.last_xid}: {XID_HARDWARE.get(gpu.last_xid, 'lost')}"
                if gpu.last_xid
                else "lost"
            )
            yield Problem(
                Severity.CRITICAL,
                "gpu_lost",
                f"GPU {gpu.index} on {gpu.node} is gone ({why})",
                gpu.node,
                gpu.index,
                _holders(snapshot, gpu),
                gpu.last_xid_time,
                _drain(gpu.node, f"GPU {gpu.index} lost ({why})"),
            )
        elif recent and gpu.last_xid in XID_HARDWARE:
            what = f"XID {gpu.last_xid} ({XID_HARDWARE[gpu.last_xid]})"
            yield Problem(
                Severity.CRITICAL,
                "gpu_xid_hardware",
                f"{what} on {gpu.node} GPU {gpu.index}",
                gpu.node,
                gpu.index,
                _holders(snapshot, gpu),
                gpu.last_xid_time,
                _drain(gpu.node, f"{what} on GPU {gpu.index}"),
            )
        elif recent and gpu.last_xid in XID_APPLICATION:
            holders = _holders(snapshot, gpu)
            who = ", ".join(f"{u} (job {j})" for j, u in holders) or "the job's owner"
            yield Problem(
                Severity.WARNING,
                "gpu_xid_application",
                f"XID {gpu.last_xid} ({XID_APPLICATION[gpu.last_xid]}) on {gpu.node} GPU {gpu.index}: "
                "an application fault, not the hardware's",
                gpu.node,
                gpu.index,
                holders,
                gpu.last_xid_time,
                f"tell {who}: XID {gpu.last_xid} is a fault in their program",
            )
        if gpu.up and gpu.throttle_reasons and any("thermal" in r for r in gpu.throttle_reasons):
            yield Problem(
                Severity.WARNING,
                "gpu_thermal_throttle",
                f"{gpu.node} GPU {gpu.index} is thermally throttled ({', '.join(gpu.throttle_reasons)})",
                gpu.node,
                gpu.index,
                _holders(snapshot, gpu),
                None,
                f"check cooling on {gpu.node}; drain if it persists: "
                + _drain(gpu.node, f"thermal throttling GPU {gpu.index}"),
            )


def _node_problems(
    snapshot: FactorySnapshot, now: float, drained_hours: float
) -> Iterable[Problem]:
    for node in snapshot.nodes:
        jobs = tuple((j.job_id, j.user) for j in snapshot.jobs_on_node(node.name))
        reason = f" ({node.reason})" if node.reason else ""
        if node.state is NodeState.DOWN and node.reason.startswith(NO_TELEMETRY_REASON):
            # Telemetry alone: only the exporter is known to be silent, not the node down.
            yield Problem(
                Severity.WARNING,
                "exporter_silent",
                f"no GPU telemetry from {node.name}{reason}",
                node.name,
                None,
                jobs,
                None,
                _check_exporter(node.name),
            )
        elif node.state is NodeState.DOWN:
            yield Problem(
                Severity.CRITICAL,
                "node_down",
                f"{node.name} is down{reason}",
                node.name,
                None,
                jobs,
                node.reason_time,
                f"check {node.name} (BMC, console); once fixed: factoryctl resume {node.name}",
            )
        elif node.state in (NodeState.DRAINED, NodeState.DRAINING):
            age = now - node.reason_time if node.reason_time else None
            ours = node.reason.startswith(OWN_REASON_PREFIX)
            long = age is not None and age > drained_hours * 3600
            if not long and ours:
                continue  # an operator's planned drain, not a problem yet
            severity = Severity.WARNING
            hint = f"for {age / 3600:.1f} h" if age is not None else ""
            yield Problem(
                severity,
                "node_drained",
                f"{node.name} {node.state.value} {hint}{reason}".replace("  ", " "),
                node.name,
                None,
                jobs,
                node.reason_time,
                f"fix and return it: factoryctl resume {node.name}" + ("" if ours else " --force"),
            )


def _idle_problems(snapshot: FactorySnapshot) -> Iterable[Problem]:
    summarized = bool(snapshot.node_summaries)
    for job in snapshot.jobs:
        if job.state.finished:
            continue
        if summarized:
            # Counts from the job's rollups: which nodes its idle GPUs are on is not kept.
            summary = snapshot.job_summaries.get(job.job_id)
            n_idle, n_gpus = (summary.idle_gpus if summary else 0), job.gpu_count
            nodes = list(job.nodes) if len(job.nodes) == 1 else []
        else:
            gpus = snapshot.gpus_of_job(job)
            idle = [
                g
                for g in gpus
                if g.up and g.utilization is not None and g.utilization < ACTIVE_THRESHOLD
            ]
            n_idle, n_gpus = len(idle), len(gpus)
            nodes = sorted({g.node for g in idle})
        if n_idle:
            yield Problem(
                Severity.WARNING if n_idle == n_gpus else Severity.INFO,
                "idle_allocated",
                f"job {job.job_id} ({job.user}) holds {n_idle} of {n_gpus} GPUs idle",
                nodes[0] if len(nodes) == 1 else None,
                None,
                ((job.job_id, job.user),),
                job.start_time,
                f"tell {job.user}: job {job.job_id} holds {n_idle} idle GPUs (scancel {job.job_id} if abandoned)",
            )


def _blind_spots(snapshot: FactorySnapshot) -> Iterable[Problem]:
    """What the snapshot could not see: never "healthy" for want of looking."""
    if snapshot.scheduler_error:
        yield Problem(
            Severity.CRITICAL,
            "scheduler_unreadable",
            f"could not read the scheduler: {snapshot.scheduler_error}"
            " (node states, drains and job allocations unknown)",
            action="check slurmctld and this host's Slurm clients: scontrol ping",
        )
    if GPU_TELEMETRY in snapshot.unavailable:
        yield Problem(
            Severity.WARNING,
            "no_gpu_telemetry",
            "no GPU telemetry: lost GPUs, XIDs, throttling and idle GPUs cannot be checked",
            action="configure [prometheus] url (or pass --prometheus URL)",
        )


def _silent_exporters(snapshot: FactorySnapshot) -> Iterable[Problem]:
    if GPU_TELEMETRY in snapshot.unavailable:
        return  # no exporter is expected to report: one finding says so, not one per node
    for node in snapshot.nodes:
        if node.state in (NodeState.DOWN, NodeState.REBOOTING):
            continue
        if snapshot.node_summaries:
            # Summarized: the node's rollup is its exporter's voice (GPUs up, readings).
            summary = snapshot.node_summaries.get(node.name)
            silent = summary is None or (summary.gpus_up > 0 and summary.utilization is None)
        else:
            gpus = snapshot.gpus_of_node(node.name)
            silent = not gpus or all(g.utilization is None and g.up for g in gpus)
        if node.gpu_count and silent:
            yield Problem(
                Severity.WARNING,
                "exporter_silent",
                f"no GPU telemetry from {node.name}",
                node.name,
                None,
                tuple((j.job_id, j.user) for j in snapshot.jobs_on_node(node.name)),
                None,
                _check_exporter(node.name),
            )


def _alert_problems(alerts: Sequence[Alert], snapshot: FactorySnapshot) -> Iterable[Problem]:
    for alert in alerts:
        node = alert.labels.get("node")
        gpu_label = alert.labels.get("gpu")
        gpu = int(gpu_label) if gpu_label and gpu_label.isdigit() else None
        jobs: tuple[tuple[str, str], ...] = ()
        if "job_id" in alert.labels:
            jobs = ((alert.labels["job_id"], alert.labels.get("user", "")),)
        elif node is not None and gpu is not None and (g := snapshot.gpu(node, gpu)) is not None:
            jobs = _holders(snapshot, g)
        severity = {"critical": Severity.CRITICAL, "warning": Severity.WARNING}.get(
            alert.severity, Severity.INFO
        )
        summary = alert.annotations.get("summary") or alert.name
        action = alert.annotations.get("runbook", "")
        if ALERT_FAMILIES.get(alert.name) == "exporter" and node:
            # The runbook shows the node; what on-call must do first is look at the exporter.
            action = _check_exporter(node) + (f"; then {action}" if action else "")
        yield Problem(
            severity,
            f"alert:{alert.name}",
            summary,
            node,
            gpu,
            jobs,
            alert.active_at,
            action,
            "alert",
        )


def triage(
    snapshot: FactorySnapshot,
    alerts: Sequence[Alert] = (),
    since: float | None = None,
    drained_hours: float = 24.0,
) -> list[Problem]:
    """All problems, most urgent first; an alert and a snapshot finding about the same
    node, GPU and kind of fault are one problem (the alert wins: it carries the runbook)."""
    # Most severe alert first, then the most specific (ALERT_FAMILIES' order): of two alerts
    # of one family on one GPU or node (XID 79 and GPU lost; exporter down and node not
    # reporting) the one kept says most precisely what happened.
    rank = {f"alert:{name}": i for i, name in enumerate(ALERT_FAMILIES)}
    from_alerts = sorted(
        _alert_problems(alerts, snapshot),
        key=lambda p: (-p.severity, rank.get(p.kind, len(rank))),
    )
    findings = [
        *_blind_spots(snapshot),
        *_gpu_problems(snapshot, since),
        *_node_problems(snapshot, snapshot.time, drained_hours),
        *_silent_exporters(snapshot),
        *_idle_problems(snapshot),
    ]
    unique: list[Problem] = []
    seen: set[tuple[str | None, int | None, str, tuple[tuple[str, str], ...]]] = set()
    for problem in from_alerts:
        fam = family(problem)
        key = (problem.node, problem.gpu, fam, () if fam == "xid" else problem.jobs)
        if key not in seen:
            seen.add(key)
            unique.append(problem)
    kept_alerts = list(unique)
    for problem in findings:
        fam = family(problem)
        key = (problem.node, problem.gpu, fam, () if fam == "xid" else problem.jobs)
        if key in seen or any(_covers(a, problem) for a in kept_alerts):
            continue
        seen.add(key)
        unique.append(problem)
    unique.sort(
        key=lambda p: (
            -p.severity,
            -(len(p.jobs)),
            p.node or "",
            p.gpu if p.gpu is not None else -1,
        )
    )
    return unique


def worst(problems: Iterable[Problem]) -> Severity:
    return max((p.severity for p in problems), default=Severity.INFO)
