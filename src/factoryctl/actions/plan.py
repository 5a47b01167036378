"""What an action will do, computed from the scheduler's state before anything changes.

A plan lists every node with its current state and what will happen to it (act, skip
with a reason, or refuse with a reason), the running jobs and their users, the GPUs
taken out of service and what happens to each job. The same plan is shown to the
operator, written to the audit log, printed by ``--dry-run`` and recomputed at execute
time (state may have moved while the operator read it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from factoryctl.model import Job, JobState, Node, NodeState

REASON_PREFIX = "factoryctl: "


class Verb(StrEnum):
    DRAIN = "drain"
    RESUME = "resume"
    REBOOT = "reboot"
    MAINTENANCE = "maintenance"
    MAINTENANCE_DELETE = "maintenance-delete"
    ROLLOUT = "rollout"


class Step(StrEnum):
    ACT = "act"  # the scheduler will be asked to change this node
    SKIP = "skip"  # already in the wanted state: success, nothing to do
    REFUSE = "refuse"  # a guard keeps this node out (see note)


def stored_reason(reason: str, user: str) -> str:
    """NHC's convention: the tool's name first, so ownership can be read back."""
    return f"{REASON_PREFIX}{reason.strip()} ({user})"


def owned_by_factoryctl(reason: str) -> bool:
    # Slurm may append " : reboot issued" etc.; the prefix survives. A rollout campaign's
    # reason ("factoryctl rollout <id>: ...") is factoryctl's too.
    return reason.startswith((REASON_PREFIX, "factoryctl rollout "))


@dataclass(frozen=True, slots=True)
class NodePlan:
    name: str
    state: NodeState
    reason: str
    gpus: int
    gpus_allocated: int
    jobs: tuple[str, ...]
    step: Step
    note: str = ""


@dataclass(frozen=True, slots=True)
class JobImpact:
    job_id: str
    user: str
    name: str
    nodes: tuple[str, ...]  # the job's nodes this action touches
    gpus: int  # the job's GPUs on those nodes
    effect: str


@dataclass(frozen=True, slots=True)
class Plan:
    verb: Verb
    user: str
    reason: str  # as the operator typed it
    stored_reason: str  # as Slurm will store it
    nodes: tuple[NodePlan, ...]
    jobs: tuple[JobImpact, ...]
    factory_nodes: int
    params: dict[str, Any] = field(default_factory=dict)
    refusals: tuple[str, ...] = ()  # action-wide refusals (blast radius...)

    @property
    def targets(self) -> list[str]:
        return [n.name for n in self.nodes if n.step is Step.ACT]

    @property
    def skipped(self) -> list[NodePlan]:
        return [n for n in self.nodes if n.step is Step.SKIP]

    @property
    def refused(self) -> list[NodePlan]:
        return [n for n in self.nodes if n.step is Step.REFUSE]

    @property
    def gpus_out_of_service(self) -> int:
        """GPUs that stop taking new work because of this action."""
        if self.verb in (Verb.RESUME, Verb.MAINTENANCE_DELETE):
            return 0
        return sum(n.gpus for n in self.nodes if n.step is Step.ACT)

    @property
    def gpus_back_in_service(self) -> int:
        back = self.verb in (Verb.RESUME, Verb.MAINTENANCE_DELETE)
        return sum(n.gpus for n in self.nodes if n.step is Step.ACT and back)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = self.targets
        data["gpus_out_of_service"] = self.gpus_out_of_service
        data["gpus_back_in_service"] = self.gpus_back_in_service
        return data


def _job_effect(verb: Verb, params: dict[str, Any]) -> str:
    if verb is Verb.DRAIN:
        return "keeps running to completion; no new jobs start on its nodes"
    if verb is Verb.ROLLOUT:
        return "keeps running; its node is worked on once it ends (skipped after --drain-timeout)"
    if verb is Verb.REBOOT:
        if params.get("asap"):
            return "keeps running; no new jobs start; the node reboots when it ends"
        return "keeps running; the node reboots once idle (new jobs may still start: --asap)"
    if verb is Verb.MAINTENANCE:
        return (
            "keeps running (IGNORE_JOBS): the window starts on time even if the job has not ended"
        )
    return "unaffected"


def _node_step(verb: Verb, node: Node, force: bool, params: dict[str, Any]) -> tuple[Step, str]:
    state = node.state
    if verb is Verb.DRAIN:
        if state in (NodeState.DRAINING, NodeState.DRAINED):
            who = "by factoryctl" if owned_by_factoryctl(node.reason) else "by someone else"
            return (
                Step.SKIP,
                f"already {state.value} {who} ({node.reason or 'no reason'}); reason kept",
            )
        return Step.ACT, ""
    if verb is Verb.ROLLOUT:
        if not state.in_service:
            return Step.SKIP, f"out of service already ({node.reason or state.value}); left alone"
        return Step.ACT, ""
    if verb is Verb.RESUME:
        if state.in_service or state is NodeState.MAINT:
            return Step.SKIP, "already in service"
        if state is NodeState.REBOOTING:
            return Step.REFUSE, "reboot in progress: wait for it to finish"
        if not owned_by_factoryctl(node.reason):
            if force:
                return Step.ACT, f"--force: reason not set by factoryctl ({node.reason or 'none'})"
            setter = "Slurm or a health check" if node.reason else "no reason recorded"
            return (
                Step.REFUSE,
                f"drained by {setter}, not factoryctl: {node.reason or '-'}; use --force to resume",
            )
        return Step.ACT, ""
    if verb is Verb.REBOOT:
        if state is NodeState.REBOOTING:
            return Step.SKIP, "reboot already in progress"
        foreign = node.reason and not owned_by_factoryctl(node.reason)
        out = state in (NodeState.DRAINING, NodeState.DRAINED, NodeState.DOWN)
        if out and foreign and params.get("next_state", "resume") == "resume":
            # A reboot that resumes would undo a health check's drain: the same guard as
            # resume, or the broken GPU is back in service after the reboot.
            if force:
                return Step.ACT, f"--force: resumes a node drained by someone else ({node.reason})"
            return (
                Step.REFUSE,
                f"out of service by someone else ({node.reason}); --next-state resume would "
                "put it back: use --next-state down, or --force",
            )
        return Step.ACT, ""
    return Step.ACT, ""


def build_plan(
    verb: Verb,
    targets: Sequence[str],
    nodes: Sequence[Node],
    jobs: Sequence[Job],
    user: str,
    reason: str,
    force: bool = False,
    params: dict[str, Any] | None = None,
) -> Plan:
    """``targets`` are already validated names that exist in ``nodes``."""
    params = dict(params or {})
    by_name = {n.name: n for n in nodes}
    wanted = set(targets)
    running = [j for j in jobs if j.state is JobState.RUNNING and wanted & set(j.nodes)]
    jobs_on: dict[str, list[str]] = {}
    for job in running:
        for host in job.nodes:
            jobs_on.setdefault(host, []).append(job.job_id)
    node_plans = []
    for name in targets:
        node = by_name[name]
        step, note = _node_step(verb, node, force, params)
        node_plans.append(
            NodePlan(
                name=name,
                state=node.state,
                reason=node.reason,
                gpus=node.gpu_count,
                gpus_allocated=node.gpus_allocated,
                jobs=tuple(jobs_on.get(name, ())),
                step=step,
                note=note,
            )
        )
    acting = {n.name for n in node_plans if n.step is Step.ACT}
    impacts = []
    if verb not in (Verb.RESUME, Verb.MAINTENANCE_DELETE):
        effect = _job_effect(verb, params)
        for job in running:
            touched = tuple(a.node for a in job.allocations if a.node in acting)
            if touched:
                gpus = sum(len(a.gpu_indices) for a in job.allocations if a.node in acting)
                impacts.append(JobImpact(job.job_id, job.user, job.name, touched, gpus, effect))
    return Plan(
        verb=verb,
        user=user,
        reason=reason,
        stored_reason=stored_reason(reason, user) if reason else "",
        nodes=tuple(node_plans),
        jobs=tuple(impacts),
        factory_nodes=len(nodes),
        params=params,
    )
