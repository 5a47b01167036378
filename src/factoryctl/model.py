"""The pure domain: the factory snapshot, and (re-exported from ``entities``) its nodes,
GPUs, jobs and allocations.

Stdlib only (an import-linter contract enforces it) so the exporter, the simulator and
the console share one vocabulary. Every quantity is a base unit: watts, joules, bytes,
seconds, hertz, degrees Celsius and 0-1 ratios. Formatting happens at the edges.

A value that a telemetry source cannot provide is ``None``, never 0: a dcgm-exporter
site has no memory-bandwidth ratio, and showing 0 there would be a lie.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from factoryctl.entities import (
    GPU,
    GPU_TELEMETRY,
    Allocation,
    Job,
    JobState,
    JobSummary,
    Node,
    NodeState,
    NodeSummary,
)
from factoryctl.gpu_columns import GpuColumns


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
        # Built by ``dict`` where names are unique (12,500 nodes and ~6,800 jobs a poll at
        # 100,000 GPUs); where one repeats, its first holder is the one indexed.
        _index(self._node_index, [n.name for n in self.nodes], self.nodes)
        _index(self._job_index, [j.job_id for j in self.jobs], self.jobs)

    def columns(self) -> GpuColumns:
        """The GPUs as columns (``gpus`` itself when it is columnar): lookups by node,
        job or key go through it, so they build only the GPU objects they return."""
        if not self._table:
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


def _index(index: dict[str, Any], keys: list[str], items: Sequence[Any]) -> None:
    index.update(zip(keys, items, strict=True))
    if len(index) < len(items):  # a key repeats: the first item keeps it
        index.clear()
        for key, item in zip(keys, items, strict=True):
            index.setdefault(key, item)


__all__ = [
    "GPU",
    "GPU_TELEMETRY",
    "Allocation",
    "FactorySnapshot",
    "Job",
    "JobState",
    "JobSummary",
    "Node",
    "NodeState",
    "NodeSummary",
]
