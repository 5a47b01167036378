"""Snapshot sources the console wraps: the live demo follows a clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from factoryctl.model import FactorySnapshot, JobState
from factoryctl.processes import ProcessTable
from factoryctl.scheduler.base import Scheduler
from factoryctl.telemetry.demo import DemoSource


@dataclass
class LiveDemoSource:
    """The demo factory moving with the wall clock: advance, then snapshot.

    Long gaps (a suspended laptop) are crossed in coarse steps so one poll stays cheap.
    The lock is shared with ``SimActionBackend`` because the simulator is not thread-safe.
    """

    demo: DemoSource
    clock: Callable[[], float] = time.time
    lock: threading.Lock = field(default_factory=threading.Lock)
    max_catch_up: float = 600.0

    def snapshot(self) -> FactorySnapshot:
        with self.lock:
            now = self.clock()
            sim = self.demo.sim
            if now - sim.now > self.max_catch_up:
                self.demo.advance_to(now - self.max_catch_up, step_seconds=60.0)
            self.demo.advance_to(now, step_seconds=5.0)
            return self.demo.snapshot()

    def processes(self, node: str) -> ProcessTable:
        # The simulator as it stands: the poll moves it, this only reads it.
        with self.lock:
            return self.demo.processes(node)


@dataclass
class SchedulerSource:
    """Nodes and jobs from the scheduler alone, for a site without Prometheus (yet).

    GPU telemetry is unavailable, so utilization, power and energy show as unknown
    rather than 0. The lock is shared with the action backend when both drive one
    scheduler object that is not thread-safe (the demo scheduler).
    """

    scheduler: Scheduler
    clock: Callable[[], float] = time.time
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> FactorySnapshot:
        with self.lock:
            nodes = tuple(self.scheduler.nodes())
            jobs = tuple(j for j in self.scheduler.jobs() if j.state is not JobState.UNKNOWN)
        return FactorySnapshot(
            time=self.clock(),
            nodes=nodes,
            jobs=jobs,
            source=getattr(self.scheduler, "name", "scheduler"),
            unavailable=frozenset({"gpu_telemetry"}),
            warnings=("no GPU telemetry: configure [prometheus] url",),
        )
