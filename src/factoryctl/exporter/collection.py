"""Collection: read the backend, attribute GPUs to jobs, account energy, publish a snapshot.

A collection builds a new frozen ``Snapshot`` and swaps one reference; a scrape only
reads the reference, so it never waits on NVML and never sees half a collection.
``CollectionLoop`` runs collections on a fixed cadence on its own thread. When one runs
longer than the interval, the ticks it overran are skipped and counted, never queued, so
a hung driver cannot pile up work behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from factoryctl.energy import JobEnergyAccountant, MonotonicCounter
from factoryctl.exporter.attribution import Attributor
from factoryctl.exporter.backend import Backend, GpuReading, JobRef, XidCount

log = logging.getLogger("factoryctl.exporter")


@dataclass(frozen=True, slots=True)
class JobCounters:
    energy_joules: float
    gpu_seconds: float
    active_gpu_seconds: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    node: str
    backend: str
    time: float | None = None  # when the readings were taken (None: never yet)
    readings: tuple[GpuReading, ...] = ()
    gpu_energy: Mapping[int, float] = field(default_factory=dict)  # never goes backwards
    attribution: Mapping[int, tuple[JobRef, ...]] = field(default_factory=dict)
    jobs: Mapping[str, JobCounters] = field(default_factory=dict)
    xids: Mapping[int, XidCount] = field(default_factory=dict)
    nvml_errors: Mapping[str, int] = field(default_factory=dict)
    duration_seconds: float = 0.0
    last_success: float | None = None
    collections: int = 0
    failures: int = 0
    skipped: int = 0
    job_map_errors: int = 0


class Exporter:
    """Owns the backend, the attribution and the energy accounting of one node."""

    def __init__(
        self,
        backend: Backend,
        node: str,
        attributor: Attributor | None = None,
        grace_seconds: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.node = node
        self.attributor = attributor or Attributor()
        self.clock = clock
        self.accountant = JobEnergyAccountant(grace_seconds=grace_seconds)
        self._gpu_energy: dict[int, MonotonicCounter] = {}
        self._lock = threading.Lock()
        self._snapshot = Snapshot(node=node, backend=backend.name)
        self.skipped = 0

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def collect_once(self, now: float | None = None) -> Snapshot:
        with self._lock:  # a manual collection (tests) never interleaves with the loop's
            return self._collect(self.clock() if now is None else now)

    def _collect(self, now: float) -> Snapshot:
        prev = self._snapshot
        started = time.perf_counter()
        try:
            readings = tuple(self.backend.read(now))
            attribution = self.attributor.attribute(readings)
            self._account(now, readings, attribution)
        except Exception:
            log.exception("collection failed; serving the previous readings")
            snap = _replace(
                prev,
                duration_seconds=time.perf_counter() - started,
                collections=prev.collections + 1,
                failures=prev.failures + 1,
                skipped=self.skipped,
                xids=self.backend.xids(),
                nvml_errors=dict(self.backend.error_counts()),
            )
            self._snapshot = snap
            return snap
        map_dir = self.attributor.map_dir
        snap = Snapshot(
            node=self.node,
            backend=self.backend.name,
            time=now,
            readings=readings,
            gpu_energy={i: c.value for i, c in self._gpu_energy.items()},
            attribution=attribution,
            jobs={
                job_id: JobCounters(t.energy_joules, t.gpu_seconds, t.active_gpu_seconds)
                for job_id, t in self.accountant.jobs.items()
            },
            xids=self.backend.xids(),
            nvml_errors=dict(self.backend.error_counts()),
            duration_seconds=time.perf_counter() - started,
            last_success=now,
            collections=prev.collections + 1,
            failures=prev.failures,
            skipped=self.skipped,
            job_map_errors=0 if map_dir is None else map_dir.errors,
        )
        self._snapshot = snap
        return snap

    def _account(
        self,
        now: float,
        readings: tuple[GpuReading, ...],
        attribution: Mapping[int, tuple[JobRef, ...]],
    ) -> None:
        node = self.node
        energy: dict[tuple[str, int], float] = {}
        utilization: dict[tuple[str, int], float] = {}
        for r in readings:
            if not r.up or r.energy_joules is None:
                continue
            counter = self._gpu_energy.get(r.index)
            if counter is None:
                # Start at the device's own reading so our counter matches nvidia-smi
                # until the first driver reload.
                counter = self._gpu_energy[r.index] = MonotonicCounter(value=r.energy_joules)
            counter.observe(r.energy_joules)
            energy[(node, r.index)] = r.energy_joules
            if r.utilization is not None:
                utilization[(node, r.index)] = r.utilization
        jobs = {(node, i): [ref.job_id for ref in refs] for i, refs in attribution.items() if refs}
        self.accountant.observe(now, energy, jobs, utilization)


def _replace(snap: Snapshot, **changes: object) -> Snapshot:
    import dataclasses

    return dataclasses.replace(snap, **changes)  # type: ignore[arg-type]


class CollectionLoop(threading.Thread):
    def __init__(self, exporter: Exporter, interval: float = 1.0) -> None:
        super().__init__(name="factoryctl-collect", daemon=True)
        self.exporter = exporter
        self.interval = interval
        self._stop_event = threading.Event()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        interval = self.interval
        next_tick = time.monotonic()
        while not self._stop_event.is_set():
            self.exporter.collect_once()
            next_tick += interval
            now = time.monotonic()
            if now > next_tick:
                missed = int((now - next_tick) // interval) + 1
                self.exporter.skipped += missed
                next_tick += missed * interval
            self._stop_event.wait(max(0.0, next_tick - time.monotonic()))
