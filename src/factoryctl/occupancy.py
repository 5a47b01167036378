"""Occupancy: who holds which GPUs and whether they use them. Pure functions.

A GPU is *active* when its utilization reaches ``ACTIVE_THRESHOLD``; an allocated GPU
below it is *idle while allocated*, the waste an AI factory most wants to see.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import ge, is_, not_

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
    # The least busy GPU: exact from per-node rollups too (a percentile is not).
    min_utilization: float | None
    idle_gpus: int
    # The longest unbroken idle spell among its GPUs, capped at the job's runtime: 0 when
    # none is idle, None when no GPU can say (dcgm-exporter sites).
    idle_seconds: float | None
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
    """``gpus``: count these GPU objects instead of the snapshot's own."""
    out_states = {s for s in NodeState if s.out_of_service}
    out_nodes = {n.name for n in snapshot.nodes if n.state in out_states}
    if gpus is None:
        return _columnar_occupancy(snapshot, out_nodes, threshold)
    allocated_keys = {
        (alloc.node, index)
        for job in snapshot.jobs
        if not job.state.finished
        for alloc in job.allocations
        for index in alloc.gpu_indices
    }
    total = allocated = active = idle_alloc = oos = unreported = 0
    for gpu in gpus:
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


def _columnar_occupancy(
    snapshot: FactorySnapshot, out_nodes: set[str], threshold: float
) -> Occupancy:
    """The same counts over the snapshot's GPU columns: this runs over 100,000 GPUs on
    every console poll, so each count is a built-in over a whole column, not a Python
    step per GPU. A GPU is allocated when it names a job or a running job holds it."""
    table = snapshot.columns()
    up, util = table.column("up"), table.column("utilization")
    n = len(up)
    # reporting: up with a utilization sample; busy: reporting at or over the threshold.
    # Non-reporting GPUs are few: patch them rather than test every GPU twice.
    reporting, level = list(up), list(util)
    for p in compress(range(n), map(is_, util, repeat(None))):
        reporting[p] = False
    for p in compress(range(n), map(not_, reporting)):
        level[p] = -math.inf
    busy = list(map(ge, level, repeat(threshold)))
    allocated = list(map(bool, table.column("job_ids")))
    for job in snapshot.jobs:
        if not job.state.finished:
            for p in table.job_positions(job):
                allocated[p] = True
    down = set(compress(range(n), map(not_, up)))
    out_positions = {p for name in out_nodes for p in table.layout.node_positions(name)}
    return Occupancy(
        total=n,
        allocated=sum(allocated),
        active=sum(busy),
        idle_allocated=sum(compress(reporting, allocated)) - sum(compress(busy, allocated)),
        out_of_service=len(down | out_positions),
        unreported=n - sum(reporting),
    )


def job_occupancy(
    job: Job, gpus: Sequence[GPU], threshold: float = ACTIVE_THRESHOLD, now: float | None = None
) -> JobOccupancy:
    utils = [g.utilization for g in gpus if g.up and g.utilization is not None]
    # Active GPUs report 0, so the longest spell is 0 when none is idle.
    spells = [
        g.idle_seconds
        for g in gpus
        if g.up and g.utilization is not None and g.idle_seconds is not None
    ]
    return JobOccupancy(
        job_id=job.job_id,
        gpus=job.gpu_count,
        reporting=len(utils),
        mean_utilization=sum(utils) / len(utils) if utils else None,
        low_utilization=percentile(utils, 0.10),
        min_utilization=min(utils) if utils else None,
        idle_gpus=sum(1 for u in utils if u < threshold),
        idle_seconds=cap_idle(max(spells), job, now) if spells else None,
        memory_used_bytes=_sum_known(g.memory_used_bytes for g in gpus if g.up),
        power_watts=_sum_known(g.power_watts for g in gpus if g.up),
    )


def cap_idle(seconds: float, job: Job, now: float | None) -> float:
    """A job cannot have idled longer than it ran (a GPU's streak may predate the job
    where attribution lags the scheduler by a collection)."""
    runtime = None if now is None else job.runtime_seconds(now)
    return seconds if runtime is None else min(seconds, runtime)


class IdleStreaks:
    """When each GPU's current idle spell began, from successive readings.

    A spell starts at the first reading below the threshold after an active one, after
    the GPU's holders changed, or after a gap with no reading (GPU lost, node down). So a
    GPU idle for days before the observer started shows as idle since then: an
    understatement, never an overstatement. The exporter keeps one per node (indices are
    GPU indices); the demo keeps one for the whole simulated factory.
    """

    __slots__ = ("_holders", "_since", "threshold")

    def __init__(self, threshold: float = ACTIVE_THRESHOLD) -> None:
        self.threshold = threshold
        self._since: list[float | None] = []
        self._holders: list[object] = []

    def observe(
        self,
        now: float,
        utilization: Sequence[float | None],
        holders: Sequence[object],
        up: Sequence[object] | None = None,
    ) -> None:
        """One reading per GPU index; ``holders`` compare with ``!=`` (job ids, or
        objects compared by identity); ``up`` false or a None utilization: no reading."""
        since, held, threshold = self._since, self._holders, self.threshold
        if len(since) < len(utilization):
            grow = len(utilization) - len(since)
            since.extend([None] * grow)
            held.extend([None] * grow)
        for i, u in enumerate(utilization):
            holder = holders[i]
            if u is None or (up is not None and not up[i]) or u >= threshold:
                since[i] = None
            elif since[i] is None or held[i] != holder:
                since[i] = now
            held[i] = holder

    def seconds(self, now: float, utilization: Sequence[float | None]) -> list[float | None]:
        """Each index's spell as of ``now``, given the readings last observed: 0 while
        active, the spell's length while idle, None without a reading. One list over
        every index (100,000 in the demo), no call per GPU."""
        threshold = self.threshold
        return [
            None if u is None else 0.0 if u >= threshold else None if s is None else now - s
            for u, s in zip(utilization, self._since, strict=False)
        ]


def node_power(gpus: Iterable[GPU]) -> float | None:
    return _sum_known(g.power_watts for g in gpus if g.up)


def mean_utilization(gpus: Iterable[GPU]) -> float | None:
    utils = [g.utilization for g in gpus if g.up and g.utilization is not None]
    return sum(utils) / len(utils) if utils else None
