"""Snapshot sources the console wraps: the live demo follows a clock.

The scheduler-only source (no Prometheus) is ``factoryctl.telemetry.scheduler_source``:
the CLI uses it too, and must not import the console for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from factoryctl.model import FactorySnapshot
from factoryctl.processes import ProcessTable
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
