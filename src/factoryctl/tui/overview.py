"""The Overview's numbers and its "top problems" list, computed without Textual."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from factoryctl.model import FactorySnapshot, Node, NodeState
from factoryctl.occupancy import Occupancy, factory_occupancy, job_occupancy
from factoryctl.tui import fmt

HOT_CELSIUS = 85.0
CRITICAL, WARNING, INFO = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Problem:
    severity: int  # CRITICAL, WARNING or INFO: lower sorts first
    text: str
    target: str = ""  # "node:gpu007" or "job:1234", for drill-down


@dataclass(frozen=True, slots=True)
class Summary:
    nodes_by_state: tuple[tuple[str, int], ...]
    node_count: int
    occupancy: Occupancy
    down_gpus: int
    power_watts: float | None
    jobs_running: int
    jobs_pending: int
    job_energy_joules: float | None  # measured energy of the jobs listed
    problems: tuple[Problem, ...]


def summarize(snapshot: FactorySnapshot, max_problems: int = 8) -> Summary:
    states = Counter(n.state.value for n in snapshot.nodes)
    order = [s.value for s in NodeState]
    by_state = tuple((s, states[s]) for s in order if states.get(s))
    powers = [g.power_watts for g in snapshot.gpus if g.up and g.power_watts is not None]
    energies = [j.energy_joules for j in snapshot.jobs if j.energy_joules is not None]
    return Summary(
        nodes_by_state=by_state,
        node_count=len(snapshot.nodes),
        occupancy=factory_occupancy(snapshot),
        down_gpus=sum(1 for g in snapshot.gpus if not g.up),
        power_watts=sum(powers) if powers else None,
        jobs_running=sum(1 for j in snapshot.jobs if j.state.value == "running"),
        jobs_pending=sum(1 for j in snapshot.jobs if j.state.value == "pending"),
        job_energy_joules=sum(energies) if energies else None,
        problems=tuple(problems(snapshot)[:max_problems]),
    )


def problems(snapshot: FactorySnapshot) -> list[Problem]:
    """What is wrong now, worst first. Grouped so a 500-node outage is one line."""
    out: list[Problem] = []
    down = [n for n in snapshot.nodes if n.state in (NodeState.DOWN, NodeState.UNKNOWN)]
    out.extend(_group(down, CRITICAL, "down"))
    in_service = {n.name for n in snapshot.nodes if n.state.in_service}
    lost = [g for g in snapshot.gpus if not g.up and g.node in in_service]
    for g in lost[:5]:
        out.append(
            Problem(CRITICAL, f"{g.node} GPU {g.index} lost (no telemetry)", f"node:{g.node}")
        )
    xid = [g for g in snapshot.gpus if g.up and g.last_xid]
    xid.sort(key=lambda g: -(g.last_xid_time or 0.0))
    for g in xid[:5]:
        out.append(Problem(WARNING, f"{g.node} GPU {g.index} XID {g.last_xid}", f"node:{g.node}"))
    if len(xid) > 5:
        out.append(Problem(WARNING, f"{len(xid) - 5} more GPUs with XIDs"))
    hot = [g for g in snapshot.gpus if (g.temperature_celsius or 0.0) >= HOT_CELSIUS]
    if hot:
        worst = max(hot, key=lambda g: g.temperature_celsius or 0.0)
        out.append(
            Problem(
                WARNING,
                f"{len(hot)} GPU(s) at or over {HOT_CELSIUS:.0f}C (max {worst.node} GPU "
                f"{worst.index} {fmt.celsius(worst.temperature_celsius)})",
                f"node:{worst.node}",
            )
        )
    throttled = [g for g in snapshot.gpus if g.throttle_reasons]
    if throttled:
        g = throttled[0]
        out.append(
            Problem(
                WARNING,
                f"{len(throttled)} GPU(s) throttled ({g.node} GPU {g.index}: "
                f"{','.join(g.throttle_reasons)})",
                f"node:{g.node}",
            )
        )
    drained = [n for n in snapshot.nodes if n.state in (NodeState.DRAINING, NodeState.DRAINED)]
    out.extend(_group(drained, INFO, "drained/draining"))
    idle_jobs = []
    for job in snapshot.jobs:
        if job.state.value != "running" or not job.gpu_count:
            continue
        occ = job_occupancy(job, snapshot.gpus_of_job(job))
        if occ.idle_gpus:
            idle_jobs.append((occ.idle_gpus, job))
    idle_jobs.sort(key=lambda t: (-t[0], t[1].job_id))
    for idle, job in idle_jobs[:3]:
        out.append(
            Problem(
                WARNING,
                f"job {job.job_id} ({job.user}) holds {idle} idle GPU(s) of {job.gpu_count}",
                f"job:{job.job_id}",
            )
        )
    if len(idle_jobs) > 3:
        total = sum(i for i, _ in idle_jobs)
        out.append(Problem(INFO, f"{len(idle_jobs)} jobs hold {total} idle GPUs in all"))
    out.sort(key=lambda p: p.severity)  # stable: keeps the order within a severity
    return out


def _group(nodes: list[Node], severity: int, label: str) -> list[Problem]:
    if not nodes:
        return []
    if len(nodes) <= 3:
        return [
            Problem(
                severity, f"{n.name} {n.state.value}: {n.reason or 'no reason'}", f"node:{n.name}"
            )
            for n in nodes
        ]
    reasons = Counter(n.reason or "no reason" for n in nodes)
    top, k = reasons.most_common(1)[0]
    return [
        Problem(
            severity,
            f"{len(nodes)} nodes {label} (most: {top!r} x{k})",
            f"node:{nodes[0].name}",
        )
    ]
