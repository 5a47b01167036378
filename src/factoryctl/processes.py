"""The processes on a node's GPUs, as the exporter saw them (``nvidia-smi``'s table plus the job).

Stdlib only, like the rest of the domain model. A process table is fetched for one node at
a time, when someone looks at that node: never as part of the factory-wide snapshot, whose
every poll would otherwise carry one row per GPU process of the whole factory.

A source that cannot know processes (dcgm-exporter publishes no per-process series, the
scheduler alone has no telemetry) returns a table with ``available=False`` and a note,
never an empty table that would read as "nothing runs here".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class GpuProcessRow:
    node: str
    gpu: int
    pid: int
    name: str = ""  # /proc/PID/comm: at most 15 characters
    user: str = ""
    job_id: str = ""  # "" when no job could be attributed (a process outside the scheduler)
    memory_bytes: float | None = None  # device memory the process holds; None: unknown
    uuid: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "node": self.node,
            "gpu": self.gpu,
            "uuid": self.uuid,
            "pid": self.pid,
            "user": self.user,
            "job_id": self.job_id,
            "name": self.name,
            "memory_bytes": self.memory_bytes,
        }


@dataclass(frozen=True, slots=True)
class ProcessTable:
    node: str
    rows: tuple[GpuProcessRow, ...] = ()
    available: bool = True  # False: the source cannot list processes at all (see note)
    note: str = ""  # why the table is unavailable, or a caveat about what it shows

    def on_gpu(self, index: int) -> tuple[GpuProcessRow, ...]:
        return tuple(r for r in self.rows if r.gpu == index)


def unavailable(node: str, note: str) -> ProcessTable:
    return ProcessTable(node=node, available=False, note=note)


def sort_rows(rows: list[GpuProcessRow]) -> tuple[GpuProcessRow, ...]:
    """GPU order, then the biggest memory holder first, then PID: nvidia-smi's reading order."""
    return tuple(sorted(rows, key=lambda r: (r.gpu, -(r.memory_bytes or 0.0), r.pid)))


@runtime_checkable
class ProcessSource(Protocol):
    """A source that can list one node's GPU processes (blocking I/O: call off the UI loop)."""

    def processes(self, node: str) -> ProcessTable: ...


def processes_of(source: object, node: str) -> ProcessTable:
    """The node's process table, or an unavailable one when the source cannot list processes."""
    if isinstance(source, ProcessSource):
        return source.processes(node)
    return unavailable(node, "this source has no per-process telemetry")
