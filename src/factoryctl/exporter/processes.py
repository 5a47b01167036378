"""Who each GPU process is: its command name, its user and its job, for the per-process series.

Runs in the collection thread after attribution, never during a scrape. For each PID that
NVML lists it reads ``/proc/PID/comm`` and the owner of ``/proc/PID``, once per PID while
the PID stays on a GPU (a reused PID is looked up afresh, as in ``ProcResolver``). A
process that exits between NVML listing it and us reading ``/proc`` is skipped silently:
it is gone by the time anyone scrapes. A process ``/proc`` hides (``hidepid``, another PID
namespace) keeps its row with an empty name and user: NVML still says it holds memory.

The job comes from the attribution's own PID lookup (cgroup, then environ). A PID it
cannot place on a GPU held by exactly one job (per the job-map directory or the backend)
is that job's: the prolog wrote the map precisely so that nothing else runs there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from factoryctl.exporter.attribution import ProcResolver
from factoryctl.exporter.backend import GpuProcess, GpuReading, JobRef


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    name: str
    user: str
    job_id: str
    memory_bytes: float | None


@dataclass(frozen=True, slots=True)
class _Identity:
    name: str
    user: str


class ProcessDescriber:
    def __init__(self, procs: ProcResolver) -> None:
        self.procs = procs  # shares the attribution's /proc root, user lookup and job cache
        self._ids: dict[int, _Identity] = {}

    def describe(
        self, readings: Sequence[GpuReading], attribution: Mapping[int, tuple[JobRef, ...]]
    ) -> dict[int, tuple[ProcessInfo, ...]]:
        """GPU index -> its processes, for the GPUs that NVML answered for."""
        out: dict[int, tuple[ProcessInfo, ...]] = {}
        live: list[int] = []
        for r in readings:
            if not r.up or r.processes is None:
                continue
            holders = attribution.get(r.index, ())
            only = holders[0] if len(holders) == 1 else None
            rows = []
            for proc in r.processes:
                info = self._one(proc, r.jobs is not None, only)
                if info is not None:
                    live.append(proc.pid)
                    rows.append(info)
            out[r.index] = tuple(rows)
        self._forget_except(live)
        return out

    def _one(
        self, proc: GpuProcess, backend_knows: bool, only: JobRef | None
    ) -> ProcessInfo | None:
        if proc.name is not None and proc.user is not None:
            ident = _Identity(proc.name, proc.user)
        else:
            found = self._identity(proc.pid)
            if found is None:
                return None  # exited between NVML and /proc
            ident = found
        job_id = ""
        if not backend_knows:
            ref = self.procs.resolve(proc.pid)
            if ref is not None:
                job_id = ref.job_id
        if not job_id and only is not None:
            job_id = only.job_id
        user = ident.user or (only.user if only is not None else "")
        return ProcessInfo(proc.pid, ident.name, user, job_id, proc.memory_bytes)

    def _identity(self, pid: int) -> _Identity | None:
        cached = self._ids.get(pid)
        if cached is not None:
            return cached
        base = self.procs.proc_root / str(pid)
        try:
            uid = base.stat().st_uid
            name = (base / "comm").read_text(errors="replace").strip()
        except FileNotFoundError:
            # Exited since NVML listed it (or hidden by hidepid=2, which reads the same:
            # the exporter runs as root for that reason among others).
            return None
        except OSError:
            # There but unreadable to us (EACCES, another namespace): NVML says it holds
            # memory, so its row stays, unnamed.
            return _Identity("", "")
        ident = _Identity(name, self.procs.user_of(uid))
        self._ids[pid] = ident
        return ident

    def _forget_except(self, live: Iterable[int]) -> None:
        keep = set(live)
        for pid in [p for p in self._ids if p not in keep]:
            del self._ids[pid]
