"""The things of the domain: node and job states, GPUs, nodes, allocations, jobs and their
summaries. ``model`` (the factory snapshot) re-exports them all.

Stdlib only (an import-linter contract enforces it) so the exporter, the simulator and
the console share one vocabulary. Every quantity is a base unit: watts, joules, bytes,
seconds, hertz, degrees Celsius and 0-1 ratios. Formatting happens at the edges. A value a
telemetry source cannot provide is ``None``, never 0.

Their own module below ``model`` so the columnar GPU store (``gpu_columns``), which builds
these GPUs, and the snapshot, which holds that store, need not import each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class NodeState(StrEnum):
    """What an operator needs to know about a node, flattened from scheduler states.

    Slurm's compound states (``MIXED+DRAIN``, ``DOWN+REBOOT_ISSUED``...) map onto these.
    """

    IDLE = "idle"
    ALLOCATED = "allocated"
    MIXED = "mixed"
    DRAINING = "draining"  # drain requested, jobs still running
    DRAINED = "drained"  # drained and empty: safe to work on
    DOWN = "down"
    REBOOTING = "rebooting"
    MAINT = "maint"
    UNKNOWN = "unknown"

    @property
    def in_service(self) -> bool:
        return self in (NodeState.IDLE, NodeState.ALLOCATED, NodeState.MIXED)

    @property
    def out_of_service(self) -> bool:
        return self in (
            NodeState.DRAINING,
            NodeState.DRAINED,
            NodeState.DOWN,
            NodeState.REBOOTING,
            NodeState.MAINT,
        )


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NODE_FAIL = "node_fail"
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"

    @property
    def finished(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING, JobState.UNKNOWN)


@dataclass(frozen=True, slots=True)
class GPU:
    """One accelerator's last sample. ``None`` means "this source cannot say"."""

    node: str
    index: int
    uuid: str = ""
    model: str = ""
    up: bool = True
    utilization: float | None = None  # 0-1, SM activity
    memory_utilization: float | None = None  # 0-1, memory bandwidth
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    energy_joules: float | None = None  # monotonic counter since the source started
    temperature_celsius: float | None = None
    sm_clock_hz: float | None = None
    throttle_reasons: tuple[str, ...] = ()
    ecc_uncorrected_total: float | None = None
    xid_total: float | None = None
    last_xid: int | None = None
    last_xid_time: float | None = None
    job_ids: tuple[str, ...] = ()  # jobs the GPU is attributed to (usually 0 or 1)
    # How long the GPU has been below the active threshold without a break, as of its
    # sample: 0 while active; the streak restarts when its jobs change (so it never
    # charges one job with another's idle time). None: the source cannot say.
    idle_seconds: float | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.node, self.index)

    @property
    def allocated(self) -> bool:
        return bool(self.job_ids)


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    state: NodeState
    reason: str = ""
    reason_time: float | None = None  # when the reason was set (epoch seconds)
    partitions: tuple[str, ...] = ()
    gpu_count: int = 0
    gpus_allocated: int = 0
    features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Allocation:
    """The GPUs a job holds on one node."""

    node: str
    gpu_indices: tuple[int, ...]
    # How many GPUs, where a summary counted them without naming them (the engine's
    # ``count by (job_id, node)`` of a window's attribution); None: ``gpu_indices`` says.
    gpus: int | None = None

    @property
    def count(self) -> int:
        return len(self.gpu_indices) if self.gpus is None else self.gpus


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    user: str
    account: str = ""
    partition: str = ""
    name: str = ""
    state: JobState = JobState.RUNNING
    start_time: float | None = None
    end_time: float | None = None  # None while running
    allocations: tuple[Allocation, ...] = ()
    energy_joules: float | None = None  # measured, not estimated; None when unknown
    # Where ``energy_joules`` came from: job-counter | gpu-counter | admin-comment | none
    # ("" where no source measured the job).
    energy_source: str = ""
    # Slurm's AdminComment: where the epilog records the job's energy (energy_record).
    admin_comment: str = ""

    @property
    def gpu_count(self) -> int:
        return sum(a.count for a in self.allocations)

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(a.node for a in self.allocations)

    def gpu_keys(self) -> Iterable[tuple[str, int]]:
        for alloc in self.allocations:
            for idx in alloc.gpu_indices:
                yield (alloc.node, idx)

    def runtime_seconds(self, now: float) -> float | None:
        if self.start_time is None:
            return None
        end = self.end_time if self.end_time is not None else now
        return max(0.0, end - self.start_time)


@dataclass(frozen=True, slots=True)
class NodeSummary:
    """One node's GPUs summed up: what a view of nodes needs, without the GPUs.

    A source holding the rollups (issue 13) reads these from them; ``summaries``
    computes the same from GPU objects. Means, sums and maxima are over up GPUs; None:
    no up GPU says (never a 0 that reads as an idle, cold node)."""

    gpus: int
    gpus_up: int
    gpus_allocated: int
    gpus_active: int  # up, utilization >= occupancy.ACTIVE_THRESHOLD
    utilization: float | None = None  # mean
    power_watts: float | None = None  # sum
    temperature_max_celsius: float | None = None
    xid_total: float | None = None  # sum of the GPUs' XID counters
    # Sum of the power limits of the up GPUs that read a power: the heat map's power
    # layer divides by it. None where the source has no limits (the engine's rollups).
    power_limit_watts: float | None = None


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One running job's GPUs summed up (what the Jobs view shows), without the GPUs."""

    reporting: int  # the job's GPUs that report a utilization
    mean_utilization: float | None
    idle_gpus: int  # reporting, below the active threshold
    idle_seconds: float | None  # the longest idle spell among its GPUs
    power_watts: float | None = None


# In a snapshot's ``unavailable``: no GPU telemetry at all (``gpus`` is empty because
# nothing was measured, not because the factory has no GPUs): the scheduler alone.
GPU_TELEMETRY = "gpu_telemetry"
