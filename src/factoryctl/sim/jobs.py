"""Simulated jobs and the deterministic arrival process that keeps the factory busy."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from factoryctl.model import JobState
from factoryctl.sim import names
from factoryctl.sim.config import SimConfig
from factoryctl.sim.workload import Workload

T = TypeVar("T")

# (GPUs, weight). Whole nodes beyond 8 GPUs, as large training jobs ask for.
_SIZES = [(1, 22), (2, 10), (4, 14), (8, 26), (16, 12), (32, 8), (64, 5), (128, 3)]
_WORKLOADS = [(Workload.TRAINING, 55), (Workload.INFERENCE, 27), (Workload.IDLE, 18)]
_JOB_NAMES = {
    Workload.TRAINING: ["pretrain", "finetune", "rlhf", "sweep"],
    Workload.INFERENCE: ["serve", "eval", "batch-infer"],
    Workload.IDLE: ["notebook", "interactive", "debug"],
}


@dataclass(eq=False)
class SimJob:
    job_id: str
    user: str
    account: str
    gpus: int
    duration: float
    workload: Workload
    name: str = ""
    partition: str = "gpu"
    state: JobState = JobState.PENDING
    submit_time: float = 0.0
    start_time: float | None = None
    end_time: float | None = None
    slots: list[int] = field(default_factory=list)  # flat GPU indices while running

    @property
    def ends(self) -> float:
        """When it is due to end (inf until it starts, and for a job with no duration)."""
        return float("inf") if self.start_time is None else self.start_time + self.duration


def _weighted(rng: random.Random, table: Sequence[tuple[T, int]]) -> T:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


class JobGenerator:
    """Poisson arrivals sized so that the factory settles near ``target_occupancy``."""

    MEDIAN_HOURS = 1.5

    def __init__(self, config: SimConfig, rng: random.Random, total_gpus: int) -> None:
        self.config = config
        self.rng = rng
        self.total_gpus = total_gpus
        # No single job above 1/8 of the factory: on a small demo factory one 128-GPU job
        # ending would otherwise swing occupancy by a quarter.
        self.max_gpus = max(config.gpus_per_node, total_gpus // 8)
        self.next_id = 1000 + rng.randrange(9000)
        self.users = max(4, min(400, total_gpus // 24))
        sizes = [(g, w) for g, w in _SIZES if g <= self.max_gpus]
        mean_gpus = sum(g * w for g, w in sizes) / sum(w for _, w in sizes)
        # Lognormal durations: mean = median * exp(sigma^2 / 2).
        self.sigma = 0.9
        mean_duration = self.MEDIAN_HOURS * 3600 * math.exp(self.sigma**2 / 2)
        # Real factories run with a backlog: submit ~40% more than fits, and let users stop
        # submitting while the queue is long (``SimFactory`` caps pending jobs), so freed
        # GPUs refill at once and occupancy sits near the target instead of swinging.
        self.rate = 1.4 * config.target_occupancy * total_gpus / (mean_gpus * mean_duration)
        self.max_pending = max(8, total_gpus // 16)
        self._sizes = sizes
        self._last = config.start_time

    def _new(self, now: float) -> SimJob:
        rng = self.rng
        gpus = _weighted(rng, self._sizes)
        workload = _weighted(rng, _WORKLOADS)
        if workload is Workload.IDLE and gpus > 8:
            # Forgotten notebooks hold a node at most; large allocations do run something.
            workload = Workload.TRAINING
        user_i = min(int(rng.paretovariate(1.2)) - 1, self.users - 1)
        duration = min(
            48 * 3600.0,
            max(600.0, rng.lognormvariate(math.log(self.MEDIAN_HOURS * 3600), self.sigma)),
        )
        job = SimJob(
            job_id=str(self.next_id),
            user=names.user_name(user_i),
            account=names.account_name(user_i // 3),
            gpus=gpus,
            duration=round(duration),
            workload=workload,
            name=f"{rng.choice(_JOB_NAMES[workload])}-{rng.randrange(100):02d}",
            partition=self.config.partition,
            submit_time=now,
        )
        self.next_id += 1
        return job

    def initial(self, now: float) -> list[SimJob]:
        """Enough jobs to fill the factory to its target at once."""
        jobs, held = [], 0
        while held < self.config.target_occupancy * self.total_gpus:
            job = self._new(now)
            jobs.append(job)
            held += job.gpus
        return jobs

    def arrivals(self, now: float) -> list[SimJob]:
        dt, self._last = now - self._last, now
        if dt <= 0:
            return []
        count = 0
        remaining = self.rate * dt
        # Poisson count by inversion: cheap and deterministic from the rng. In parts of at
        # most 100 expected arrivals (a sum of Poisson counts is one), because exp(-lam)
        # underflows for the thousands a coarse warm-up step expects at 100,000 GPUs.
        while remaining > 0:
            lam = min(remaining, 100.0)
            remaining -= lam
            part, p, threshold = 0, 1.0, math.exp(-lam)
            while True:
                p *= self.rng.random()
                if p <= threshold or part > 10 * lam + 10:
                    break
                part += 1
            count += part
        return [self._new(now) for _ in range(count)]
