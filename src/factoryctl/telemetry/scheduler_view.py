"""What the Prometheus source needs from a scheduler, and how it joins the two views.

The scheduler knows nodes (state, reason, partitions) and jobs (user, account, exactly
which GPUs, start and end). Telemetry knows what each GPU did. Any object with these two
methods will do: ``factoryctl.scheduler``'s Slurm backends, or a fake in tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from factoryctl.model import GPU, Job, Node, NodeState


class SchedulerView(Protocol):
    """The read half of ``factoryctl.scheduler.Scheduler``: what the join needs."""

    def nodes(self) -> Sequence[Node]: ...

    def jobs(self) -> Sequence[Job]:
        """Pending and running jobs, and the recently finished ones the scheduler still
        remembers (Slurm: for MinJobAge), each with its allocation, start and end."""
        ...


class AccountingView(Protocol):
    """What a scheduler with an accounting database adds (Slurm: slurmdbd, sacct)."""

    def jobs_between(self, since: float, until: float) -> Sequence[Job]:
        """Every job that was eligible or ran in [since, until], finished ones long after
        the scheduler itself forgot them, with start, end, account and GPU count."""
        ...


def nodes_from_gpus(gpus: Iterable[GPU], attributed: bool = True) -> tuple[Node, ...]:
    """Telemetry-only: a node per exporter host, its state guessed from its GPUs.

    A node whose GPUs all stopped reporting is DOWN with a reason saying why we think so;
    without a scheduler nothing better is known. Without any attribution (dcgm-exporter
    with no job mapping) which GPUs are held is unknown: a reporting node's state is
    UNKNOWN, never a guessed "idle".
    """
    by_node: dict[str, list[GPU]] = {}
    for gpu in gpus:
        by_node.setdefault(gpu.node, []).append(gpu)
    nodes = []
    for name, node_gpus in by_node.items():
        held = sum(1 for g in node_gpus if g.job_ids)
        reporting = sum(1 for g in node_gpus if g.up)
        if reporting == 0:
            state, reason = NodeState.DOWN, "no telemetry (exporter not reporting)"
        elif not attributed:
            state, reason = NodeState.UNKNOWN, ""
        elif held == 0:
            state, reason = NodeState.IDLE, ""
        elif held == len(node_gpus):
            state, reason = NodeState.ALLOCATED, ""
        else:
            state, reason = NodeState.MIXED, ""
        nodes.append(
            Node(
                name=name,
                state=state,
                reason=reason,
                gpu_count=len(node_gpus),
                gpus_allocated=held,
            )
        )
    return tuple(sorted(nodes, key=lambda n: n.name))


def jobs_from_attribution(gpus: Iterable[GPU], users: dict[str, str]) -> tuple[Job, ...]:
    """Telemetry-only: running jobs rebuilt from the exporter's GPU->job attribution."""
    from factoryctl.model import Allocation

    alloc: dict[str, dict[str, list[int]]] = {}
    for gpu in gpus:
        for job_id in gpu.job_ids:
            alloc.setdefault(job_id, {}).setdefault(gpu.node, []).append(gpu.index)
    return tuple(
        Job(
            job_id=job_id,
            user=users.get(job_id, ""),
            allocations=tuple(
                Allocation(node, tuple(sorted(idx))) for node, idx in sorted(by_node.items())
            ),
        )
        for job_id, by_node in sorted(alloc.items())
    )
