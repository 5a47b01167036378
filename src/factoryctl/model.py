"""The pure domain: nodes, GPUs, jobs, allocations and factory snapshots.

Stdlib only (an import-linter contract enforces it) so the exporter, the simulator and
the console share one vocabulary. Every quantity is a base unit: watts, joules, bytes,
seconds, hertz, degrees Celsius and 0-1 ratios. Formatting happens at the edges.

A value that a telemetry source cannot provide is ``None``, never 0: a dcgm-exporter
site has no memory-bandwidth ratio, and showing 0 there would be a lie.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from factoryctl.gpu_columns import GpuColumns


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


@dataclass(frozen=True, slots=True)
class FactorySnapshot:
    """Everything known about the factory at one instant, from one or more sources.

    ``gpus`` is any sequence of GPUs: a tuple, or a ``GpuColumns`` (gpu_columns.py) that
    builds GPU objects only when they are read, which a source of 100,000 GPUs gives.

    A *summarized* snapshot (``node_summaries`` not empty) carries every node's and
    running job's figures in ``node_summaries``/``job_summaries`` and, in ``gpus``, only
    the GPUs worth naming one by one (lost, recent XID, hot, throttled): the console at
    100,000 GPUs fetches what its screen shows, not every GPU's series.
    """

    time: float
    nodes: tuple[Node, ...] = ()
    gpus: Sequence[GPU] = ()
    jobs: tuple[Job, ...] = ()
    source: str = ""
    # Capabilities the source lacks (e.g. "memory_utilization" on dcgm-exporter sites):
    # views print "n/a" for these instead of 0.
    unavailable: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = ()
    # Why a configured scheduler could not be read ("" when it was, or none is configured):
    # nodes and jobs then come from telemetry alone, and triage says so as a critical problem.
    scheduler_error: str = ""
    # Energy the reporting GPUs used since ``energy_today_since`` (local midnight, or
    # when the source's data begins if that is later). None: the source cannot say.
    energy_today_joules: float | None = None
    energy_today_since: float | None = None
    # Why a job's energy is unknown, by job id: said only about the jobs a view shows
    # (``views.job_note_lines``), never as a warning about every job of the factory.
    job_notes: Mapping[str, str] = field(default_factory=dict)
    node_summaries: Mapping[str, NodeSummary] = field(default_factory=dict)
    job_summaries: Mapping[str, JobSummary] = field(default_factory=dict)
    _table: list[GpuColumns] = field(default_factory=list, init=False, repr=False, compare=False)
    _node_index: dict[str, Node] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _job_index: dict[str, Job] = field(default_factory=dict, init=False, repr=False, compare=False)
    _node_jobs: dict[str, list[Job]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Indexes are derived once; the snapshot is immutable so they never go stale.
        # The GPU lookups (``columns()``) and jobs per node are built on first use
        # (triage and node detail), each in one step so a second thread that races to
        # build one builds the same thing.
        for node in self.nodes:
            self._node_index.setdefault(node.name, node)
        for job in self.jobs:
            self._job_index.setdefault(job.job_id, job)

    def columns(self) -> GpuColumns:
        """The GPUs as columns (``gpus`` itself when it is columnar): lookups by node,
        job or key go through it, so they build only the GPU objects they return."""
        if not self._table:
            from factoryctl.gpu_columns import GpuColumns  # it imports GPU from here

            self._table.append(GpuColumns.of(self.gpus))
        return self._table[0]

    def _jobs_by_node(self) -> dict[str, list[Job]]:
        if self.jobs and not self._node_jobs:
            by_node: dict[str, list[Job]] = {}
            for job in self.jobs:
                if not job.state.finished:
                    for name in dict.fromkeys(job.nodes):
                        by_node.setdefault(name, []).append(job)
            self._node_jobs.update(by_node)
        return self._node_jobs

    def gpu(self, node: str, index: int) -> GPU | None:
        table = self.columns()
        position = table.layout.position(node, index)
        return None if position is None else table[position]

    def gpus_of_node(self, node: str) -> list[GPU]:
        table = self.columns()
        return [table[p] for p in table.layout.node_positions(node)]

    def gpus_of_job(self, job: Job) -> list[GPU]:
        table = self.columns()
        return [table[p] for p in table.job_positions(job)]

    def node(self, name: str) -> Node | None:
        return self._node_index.get(name)

    def job(self, job_id: str) -> Job | None:
        return self._job_index.get(job_id)

    def jobs_on_node(self, name: str) -> list[Job]:
        """Jobs still running on the node (indexed: triage asks once per node)."""
        return list(self._jobs_by_node().get(name, ()))
