"""The factory as the scheduler alone sees it: for a site without Prometheus (yet).

``factoryctl nodes|node|jobs|job`` and the console read nodes (state, reason, GPUs
allocated) and jobs (user, allocation, runtime) from Slurm. What only GPU telemetry can
say (utilization, power, temperature, energy, idle GPUs) is ``None`` and listed in the
snapshot's ``unavailable``, so it shows as n/a, never as 0; one warning says why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import GPU_TELEMETRY, FactorySnapshot, JobState
from factoryctl.telemetry.metrics import GPU_FIELDS
from factoryctl.telemetry.scheduler_view import SchedulerView

# Every field of a node, GPU or job row that comes from telemetry.
TELEMETRY_FIELDS = frozenset(
    {
        GPU_TELEMETRY,
        *GPU_FIELDS,
        "temperature_max_celsius",
        "mean_utilization",
        "low_utilization",
        "min_utilization",
        "idle_gpus",
        "idle_seconds",
        "energy_kwh",
    }
)
NO_TELEMETRY = (
    "no GPU telemetry: no Prometheus URL configured (--prometheus URL or [prometheus] url);"
    " nodes and jobs from the scheduler, utilization, power and energy n/a"
)


@dataclass
class SchedulerSource:
    """Nodes and jobs from the scheduler alone.

    The lock is shared with the console's action backend when both drive one scheduler
    object that is not thread-safe (the demo scheduler)."""

    scheduler: SchedulerView
    clock: Callable[[], float] = time.time
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> FactorySnapshot:
        return self._read(with_jobs=True)

    def snapshot_for_view(self, view: str) -> FactorySnapshot:
        """The nodes view shows no job: it skips ``squeue`` (0.4 s at 3,000 jobs)."""
        return self._read(with_jobs=view != "nodes")

    def _read(self, with_jobs: bool) -> FactorySnapshot:
        try:
            with self.lock:
                nodes = tuple(self.scheduler.nodes())
                jobs = (
                    tuple(j for j in self.scheduler.jobs() if j.state is not JobState.UNKNOWN)
                    if with_jobs
                    else ()
                )
        except FactoryctlError as err:
            if err.status is not ExitStatus.SCHEDULER_UNREACHABLE:
                raise
            # Nothing else to show: say what else would have worked.
            raise FactoryctlError(
                f"{err.message} (no Prometheus configured either: --prometheus URL, or --demo)",
                err.status,
            ) from err
        return FactorySnapshot(
            time=self.clock(),
            nodes=nodes,
            jobs=jobs,
            source=str(getattr(self.scheduler, "name", "scheduler")),
            unavailable=TELEMETRY_FIELDS,
            warnings=(NO_TELEMETRY,),
        )
