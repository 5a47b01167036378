"""The Overview's numbers and its "top problems" list, computed without Textual."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from operator import attrgetter

from factoryctl.model import FactorySnapshot, JobState, Node, NodeState
from factoryctl.occupancy import Occupancy, factory_occupancy, job_occupancy
from factoryctl.summaries import summary_occupancy
from factoryctl.triage import XID_APPLICATION, XID_HARDWARE
from factoryctl.tui import fmt
from factoryctl.tui.gpuscan import HOT_CELSIUS, GpuScan, scan_gpus

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
    energy_today_joules: float | None = None  # every reporting GPU, since local midnight
    energy_today_since: float | None = None  # later than midnight when data begins later


def summarize(
    snapshot: FactorySnapshot,
    max_problems: int = 8,
    job_idle: Mapping[str, int] | None = None,
    scan: GpuScan | None = None,
    job_idle_for: Mapping[str, float] | None = None,
) -> Summary:
    """``job_idle`` (job id -> idle GPUs) and ``scan`` (the frame's one pass over the
    GPUs), when the caller has them, save passes over jobs and GPUs."""
    # Counted by member, each named once: not 12,500 ``.value`` lookups (an enum
    # property, ~1 us each) a poll at 100,000 GPUs.
    states = Counter(map(attrgetter("state"), snapshot.nodes))
    by_state = tuple((s.value, states[s]) for s in NodeState if states.get(s))
    job_states = Counter(map(attrgetter("state"), snapshot.jobs))
    scan = scan or scan_gpus(snapshot)
    energies = [j.energy_joules for j in snapshot.jobs if j.energy_joules is not None]
    return Summary(
        nodes_by_state=by_state,
        node_count=len(snapshot.nodes),
        occupancy=summary_occupancy(snapshot)
        if snapshot.node_summaries
        else factory_occupancy(snapshot),
        down_gpus=sum(a.down_gpus for a in scan.nodes.values())
        if snapshot.node_summaries
        else len(scan.down),
        power_watts=scan.power if scan.power_known else None,
        jobs_running=job_states[JobState.RUNNING],
        jobs_pending=job_states[JobState.PENDING],
        job_energy_joules=sum(energies) if energies else None,
        problems=tuple(problems(snapshot, job_idle, scan, job_idle_for)[:max_problems]),
        energy_today_joules=snapshot.energy_today_joules,
        energy_today_since=snapshot.energy_today_since,
    )


def problems(
    snapshot: FactorySnapshot,
    job_idle: Mapping[str, int] | None = None,
    scan: GpuScan | None = None,
    job_idle_for: Mapping[str, float] | None = None,
) -> list[Problem]:
    """What is wrong now, worst first. Grouped so a 500-node outage is one line."""
    scan = scan or scan_gpus(snapshot)
    out: list[Problem] = []
    # One pass over the nodes (12,500 at 100,000 GPUs), most of them in service.
    down, rebooting, drained = [], [], []
    for n in snapshot.nodes:
        state = n.state
        if state in _IN_SERVICE:
            continue
        if state in _DOWN:
            down.append(n)
        elif state is NodeState.REBOOTING:
            rebooting.append(n)
        if state in _DRAINED:
            drained.append(n)
    out.extend(_group(down, CRITICAL, "down"))
    # A lost GPU matters wherever it is, except on a node already listed as down (its
    # exporter is silent, so every GPU of it reads as lost).
    node_down = {n.name for n in down} | {n.name for n in rebooting}
    lost = [g for g in scan.down if g.node not in node_down]
    for g in lost[:3]:
        out.append(
            Problem(CRITICAL, f"{g.node} GPU {g.index} lost (no telemetry)", f"node:{g.node}")
        )
    if len(lost) > 3:
        out.append(Problem(CRITICAL, f"{len(lost) - 3} more GPUs lost"))
    # Hardware XIDs (ECC, fallen off the bus, NVLink) are the site's problem; application
    # XIDs (13, 31, 43) are the user's bug: the same split as ``factoryctl triage``.
    xid = sorted(scan.xid, key=lambda g: -(g.last_xid_time or 0.0))
    hardware = [g for g in xid if g.last_xid in XID_HARDWARE]
    application = [g for g in xid if g.last_xid not in XID_HARDWARE]
    for group, severity, kind in (
        (hardware, CRITICAL, "hardware"),
        (application, WARNING, "application"),
    ):
        for g in group[:3]:
            what = XID_HARDWARE.get(g.last_xid or 0) or XID_APPLICATION.get(g.last_xid or 0, "")
            text = f"{g.node} GPU {g.index} XID {g.last_xid}" + (f" ({what})" if what else "")
            out.append(Problem(severity, text, f"node:{g.node}"))
        if len(group) > 3:
            out.append(Problem(severity, f"{len(group) - 3} more GPUs with {kind} XIDs"))
    hot = scan.hot
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
    throttled = scan.throttled
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
    out.extend(_group(drained, INFO, "drained/draining"))
    idle_jobs = []
    running = JobState.RUNNING
    for job in snapshot.jobs:
        spell: float | None
        if job_idle is not None:
            idle = job_idle.get(job.job_id, 0)
            # Most jobs hold no idle GPU: their GPU count (a sum) is not worth taking.
            if not idle or job.state is not running or not job.gpu_count:
                continue
            spell = (job_idle_for or {}).get(job.job_id)
        else:
            if job.state is not running or not job.gpu_count:
                continue
            occ = job_occupancy(job, snapshot.gpus_of_job(job), now=snapshot.time)
            idle, spell = occ.idle_gpus, occ.idle_seconds
        if idle:
            idle_jobs.append((idle, spell or 0.0, job))
    # Most idle GPUs first; among equals, the longest idle.
    idle_jobs.sort(key=lambda t: (-t[0], -t[1], t[2].job_id))
    for idle, spell, job in idle_jobs[:3]:
        held = f"job {job.job_id} ({job.user}) holds {idle} idle GPU(s) of {job.gpu_count}"
        if spell >= 60:  # a blip of a few seconds is not worth saying "for 0m05s"
            held += f" for {fmt.duration(spell)}"
        out.append(Problem(WARNING, held, f"job:{job.job_id}"))
    if len(idle_jobs) > 3:
        total = sum(i for i, _, _ in idle_jobs)
        out.append(Problem(INFO, f"{len(idle_jobs)} jobs hold {total} idle GPUs in all"))
    out.sort(key=lambda p: p.severity)  # stable: keeps the order within a severity
    return out


# Node states by what the problems list makes of them (``state in``, as a member or
# its value would match).
_IN_SERVICE = (NodeState.IDLE, NodeState.ALLOCATED, NodeState.MIXED)
_DOWN = (NodeState.DOWN, NodeState.UNKNOWN)
_DRAINED = (NodeState.DRAINING, NodeState.DRAINED)


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
