"""A control directory for ``factoryctl-exporter --simulate``: jobs and faults from outside.

Tests and demos need a simulated node that does exactly what they say: this job, owned by
this user, on these GPUs, doing nothing; an XID 79 on GPU 2, now. With
``--sim-control DIR`` the simulated factory runs no jobs of its own and reads two plain
files in DIR at every collection:

``DIR/jobs``
    The scheduler's truth, one running job per line: ``JOB_ID USER WORKLOAD GPUS``, e.g.
    ``601 ada training 0,1``. WORKLOAD is one of training, inference, idle. A job added
    to the file starts; a job removed from it ends. Like a Slurm prolog's job-map files,
    the file keeps naming a job on a GPU the simulator lost (XID 79): the job holds the GPU
    until the scheduler ends it, and the alert must name it.

``DIR/xids``
    Append-only, one event per line: ``GPU CODE``, e.g. ``2 79``. Each new line injects
    that XID once, through the simulator (79 takes the GPU off the bus, as NVML would).

Lines starting with ``#`` and blank lines are ignored. A malformed line is logged once and
skipped: a typo in a test fixture must be visible, not crash the exporter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from factoryctl.exporter.backend import JobRef
from factoryctl.sim import SimFactory, Workload

log = logging.getLogger("factoryctl.exporter")

JOBS_FILE = "jobs"
XIDS_FILE = "xids"
_WORKLOADS = {w.value: w for w in (Workload.TRAINING, Workload.INFERENCE, Workload.IDLE)}


@dataclass(frozen=True, slots=True)
class ControlJob:
    job_id: str
    user: str
    workload: Workload
    gpus: tuple[int, ...]


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [
        (n, line.strip())
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def parse_jobs(path: Path, gpus: int) -> tuple[dict[str, ControlJob], list[str]]:
    """The jobs in ``path``, and a message per malformed line."""
    jobs: dict[str, ControlJob] = {}
    bad: list[str] = []
    for n, line in _lines(path):
        parts = line.split()
        try:
            job_id, user, workload, gpu_list = parts
            indices = tuple(sorted({int(i) for i in gpu_list.split(",")}))
            if workload not in _WORKLOADS or any(not 0 <= i < gpus for i in indices):
                raise ValueError
        except ValueError:
            bad.append(f"{path}:{n}: expected 'JOB_ID USER training|inference|idle GPU[,GPU]'")
            continue
        jobs[job_id] = ControlJob(job_id, user, _WORKLOADS[workload], indices)
    return jobs, bad


def parse_xids(path: Path, gpus: int) -> tuple[list[tuple[int, int]], list[str]]:
    """Every (GPU, XID code) event in ``path`` in order, and a message per malformed line."""
    events: list[tuple[int, int]] = []
    bad: list[str] = []
    for n, line in _lines(path):
        try:
            gpu, code = (int(p) for p in line.split())
            if not 0 <= gpu < gpus:
                raise ValueError
        except ValueError:
            bad.append(f"{path}:{n}: expected 'GPU XID_CODE'")
            continue
        events.append((gpu, code))
    return events, bad


class SimControl:
    """Applies DIR's jobs and XIDs to one node of a simulator; call ``apply`` per read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.jobs: dict[str, ControlJob] = {}
        self._started: set[str] = set()
        self._xids_applied = 0
        self._warned: set[str] = set()

    def _warn(self, messages: list[str]) -> None:
        for message in messages:
            if message not in self._warned:
                self._warned.add(message)
                log.warning("sim-control %s; line ignored", message)

    def apply(self, sim: SimFactory, node: str) -> None:
        """Start and end jobs to match ``jobs``; inject the XIDs not injected yet."""
        wanted, bad = parse_jobs(self.path / JOBS_FILE, sim.gpn)
        self._warn(bad)
        for job_id in [j for j in self.jobs if j not in wanted]:
            sim.release(job_id)
            self._started.discard(job_id)
        for job_id, job in wanted.items():
            # Once only: a job the simulator ended (an XID 79 killed it) is not restarted,
            # but the file still names it on its GPUs, as the scheduler would until it ends.
            if job_id not in self._started:
                self._started.add(job_id)
                sim.assign(job_id, job.user, node, list(job.gpus), job.workload)
        self.jobs = wanted
        events, bad = parse_xids(self.path / XIDS_FILE, sim.gpn)
        self._warn(bad)
        for gpu, code in events[self._xids_applied :]:
            sim.inject_xid(node, gpu, code)
        self._xids_applied = max(self._xids_applied, len(events))

    def holders(self) -> Mapping[int, tuple[JobRef, ...]]:
        """GPU index -> the jobs the file puts on it."""
        out: dict[int, list[JobRef]] = {}
        for job in self.jobs.values():
            for index in job.gpus:
                out.setdefault(index, []).append(JobRef(job.job_id, job.user))
        return {i: tuple(refs) for i, refs in out.items()}
