"""TEST-ONLY: the simulator follows a real Slurm, and keeps what the truth needs.

``SlurmFollower`` polls the scheduler's ``jobs()`` (``squeue --json``: the running jobs'
GPU indices from their GRES detail, in every Slurm generation) every ``interval`` seconds
in a thread. A job Slurm started is put on exactly the GPUs Slurm gave it (one simulator
job per Slurm job, multi-node included, with the workload its name asks for); a job Slurm
ended or cancelled releases them. What the exporter does on a job change is done at the
same instant (``observe``: attribution from then on), as ``telemetry_lab``'s scenario does.

``CounterHistory`` records every GPU's energy counter and power after each simulator step.
Power is constant between steps (``SimFactory``), so a GPU's counter at any past instant is
exact: the counter at the step before it plus that step's power times the time since.
That is the truth a dcgm-exporter site can be held to: the allocated GPUs' counters over
Slurm's own [start, end], which a simulator job's ``true_energy`` (assign..release, a few
tenths of a second later at both ends) is not.

Both are used by ``test_slurm_scene``; stop the follower (``stop``, or ``with``) even when
a test fails: its thread is joined.
"""

from __future__ import annotations

import threading
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

from factoryctl.errors import FactoryctlError
from factoryctl.model import Job, JobState
from factoryctl.sim import SimFactory, Workload
from factoryctl.sim.jobs import SimJob
from tests.integration.simexpo import SimTargets


class CounterHistory:
    """Each GPU's counter and power after every step of ``sim`` (a listener). Holds the
    simulator's lock's discipline: create it and read it with that lock held."""

    def __init__(self, sim: SimFactory) -> None:
        self.sim = sim
        self.times: list[float] = []
        self.energy: list[array[float]] = []
        self.power: list[array[float]] = []
        self.record(sim)
        sim.listeners.append(self.record)

    def record(self, sim: SimFactory) -> None:
        # A reset (driver reload) or a job ending inside a step would break "constant
        # power since the last record"; the scene has neither, and this says so if not.
        self.times.append(sim.now)
        self.energy.append(array("d", sim.energy))
        self.power.append(array("d", sim.power))

    def counter(self, node: str, gpu: int, t: float) -> float:
        """The GPU's energy counter (joules) at ``t``, exactly."""
        if not self.times[0] <= t <= self.times[-1]:
            raise ValueError(f"{t} is outside the recorded [{self.times[0]}, {self.times[-1]}]")
        g = self.sim.gpu_slot(node, gpu)
        i = bisect_right(self.times, t) - 1
        return self.energy[i][g] + self.power[i][g] * (t - self.times[i])

    def between(self, keys: list[tuple[str, int]], start: float, end: float) -> float:
        """The increase of these GPUs' counters over [start, end]."""
        return sum(self.counter(n, k, end) - self.counter(n, k, start) for n, k in keys)


@dataclass
class Followed:
    """A Slurm job as the follower played it."""

    job_id: str
    keys: list[tuple[str, int]]  # the GPUs Slurm gave it (GRES detail)
    assigned: float  # simulator time it started drawing the workload's power
    released: float | None = None
    state: JobState | None = None  # Slurm's final state


@dataclass
class SlurmFollower:
    scheduler: object  # a SchedulerView (``SlurmCLI``): ``jobs()``
    targets: SimTargets  # the native targets: their ``observe`` is the exporter's
    workload: Callable[[Job], Workload] = lambda _job: Workload.TRAINING
    interval: float = 0.25
    followed: dict[str, Followed] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    polls: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="slurm-follower", daemon=True)

    def start(self) -> SlurmFollower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def __enter__(self) -> SlurmFollower:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.poll()
            except FactoryctlError as err:  # a slow squeue under load: try again
                self.errors.append(str(err))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def poll(self) -> None:
        jobs = {j.job_id: j for j in self.scheduler.jobs()}  # type: ignore[attr-defined]
        self.polls += 1
        sim, lock = self.targets.sim, self.targets.lock
        for job in jobs.values():
            if (
                job.state is JobState.RUNNING
                and job.job_id not in self.followed
                and job.allocations
                and all(len(a.gpu_indices) == a.count for a in job.allocations)
            ):
                with lock:
                    self.targets.sync()
                    self._start(sim, job)
                    self.targets.observe(sim)
        for job_id, f in self.followed.items():
            now = jobs.get(job_id)
            if f.released is None and (now is None or now.state.finished):
                state = now.state if now is not None else JobState.COMPLETED
                with lock:
                    self.targets.sync()
                    sim.release(job_id, state)
                    self.targets.observe(sim)
                    f.released, f.state = sim.now, state

    def _start(self, sim: SimFactory, job: Job) -> None:
        keys = list(job.gpu_keys())
        placement = [(sim.node_index[a.node], list(a.gpu_indices)) for a in job.allocations]
        played = SimJob(job.job_id, job.user, job.account, len(keys), float("inf"),
                        self.workload(job), name=job.name)  # fmt: skip
        sim.jobs[job.job_id] = played
        sim.start_job(played, placement)
        self.followed[job.job_id] = Followed(job.job_id, keys, sim.now)
