"""Occupancy: who holds which GPUs and whether they use them. Pure functions.

A GPU is *active* when its utilization reaches ``ACTIVE_THRESHOLD``; an allocated GPU
below it is *idle while allocated*, the waste an AI factory most wants to see.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from factoryctl.model import GPU, FactorySnapshot, Job, NodeState

ACTIVE_THRESHOLD = 0.05


@dataclass(frozen=True, slots=True)
class Occupancy:
    total: int
    allocated: int
    active: int
    idle_allocated: int
    out_of_service: int  # down, drained, draining, rebooting or in maintenance
    unreported: int  # GPUs with no telemetry (lost, or exporter down)

    @property
    def allocated_ratio(self) -> float:
        return self.allocated / self.total if self.total else 0.0

    @property
    def active_ratio(self) -> float:
        return self.active / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class JobOccupancy:
    job_id: str
    gpus: int
    reporting: int  # GPUs with a utilization sample
    mean_utilization: float | None
    low_utilization: float | None  # 10th percentile: one idle rank hides in a mean
    idle_gpus: int
    memory_used_bytes: float | None
    power_watts: float | None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (0 <= q <= 1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _sum_known(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def is_active(gpu: GPU, threshold: float = ACTIVE_THRESHOLD) -> bool:
    return gpu.up and gpu.utilization is not None and gpu.utilization >= threshold


def factory_occupancy(
    snapshot: FactorySnapshot,
    gpus: Iterable[GPU] | None = None,
    threshold: float = ACTIVE_THRESHOLD,
) -> Occupancy:
    out_states = {s for s in NodeState if s.out_of_service}
    out_nodes = {n.name for n in snapshot.nodes if n.state in out_states}
    allocated_keys = {
        (alloc.node, index)
        for job in snapshot.jobs
        if not job.state.finished
        for alloc in job.allocations
        for index in alloc.gpu_indices
    }
    total = allocated = active = idle_alloc = oos = unreported = 0
    # ``is_active`` inlined: this loop runs over 100,000 GPUs on every console poll.
    for gpu in snapshot.gpus if gpus is None else gpus:
        total += 1
        up, u = gpu.up, gpu.utilization
        reporting = up and u is not None
        if not reporting:
            unreported += 1
        if not up or gpu.node in out_nodes:
            oos += 1
        busy = reporting and u >= threshold  # type: ignore[operator]
        if gpu.job_ids or (gpu.node, gpu.index) in allocated_keys:
            allocated += 1
            if busy:
                active += 1
            elif reporting:
                idle_alloc += 1
        elif busy:
            active += 1
    return Occupancy(total, allocated, active, idle_alloc, oos, unreported)


def job_occupancy(
    job: Job, gpus: Sequence[GPU], threshold: float = ACTIVE_THRESHOLD
) -> JobOccupancy:
    utils = [g.utilization for g in gpus if g.up and g.utilization is not None]
    return JobOccupancy(
        job_id=job.job_id,
        gpus=job.gpu_count,
        reporting=len(utils),
        mean_utilization=sum(utils) / len(utils) if utils else None,
        low_utilization=percentile(utils, 0.10),
        idle_gpus=sum(1 for u in utils if u < threshold),
        memory_used_bytes=_sum_known(g.memory_used_bytes for g in gpus if g.up),
        power_watts=_sum_known(g.power_watts for g in gpus if g.up),
    )


def node_power(gpus: Iterable[GPU]) -> float | None:
    return _sum_known(g.power_watts for g in gpus if g.up)


def mean_utilization(gpus: Iterable[GPU]) -> float | None:
    utils = [g.utilization for g in gpus if g.up and g.utilization is not None]
    return sum(utils) / len(utils) if utils else None
