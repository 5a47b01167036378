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

from factoryctl.energy import GpuKey, JobEnergyAccountant, MonotonicCounter
from factoryctl.exporter.attribution import Attributor
from factoryctl.exporter.backend import Backend, GpuReading, JobRef, XidCount
from factoryctl.exporter.processes import ProcessDescriber, ProcessInfo
from factoryctl.occupancy import IdleStreaks
from factoryctl.rollups import JobRollup, NodeGpus, NodeRollup, is_throttled, rollup

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
    idle_seconds: Mapping[int, float] = field(default_factory=dict)  # GPU index -> spell
    # GPU index -> its processes, named; empty with --no-process-metrics
    processes: Mapping[int, tuple[ProcessInfo, ...]] = field(default_factory=dict)
    jobs: Mapping[str, JobCounters] = field(default_factory=dict)
    xids: Mapping[int, XidCount] = field(default_factory=dict)
    # The node's and its jobs' rollups (``factoryctl.rollups``), computed once per
    # collection so a scrape only formats them; None before the first collection.
    node_rollup: NodeRollup | None = None
    job_rollups: tuple[JobRollup, ...] = ()
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
        energy_interval: float = 0.0,
        process_metrics: bool = True,
    ) -> None:
        self.backend = backend
        self.node = node
        self.attributor = attributor or Attributor()
        self.describer = ProcessDescriber(self.attributor.procs) if process_metrics else None
        self.clock = clock
        self.accountant: JobEnergyAccountant[GpuKey] = JobEnergyAccountant(
            grace_seconds=grace_seconds
        )
        self.energy_interval = energy_interval
        self._gpu_energy: dict[int, MonotonicCounter] = {}
        self._energy_raw: dict[int, float] = {}  # last raw reading per GPU
        self._energy_at: dict[int, float] = {}  # when it was taken
        self._holders: dict[int, tuple[str, ...]] = {}  # job ids at the last collection
        self._no_energy: set[int] = set()  # GPUs fed a stand-in 0 J (no counter yet)
        self._idle = IdleStreaks()
        self._lock = threading.Lock()
        self._snapshot = Snapshot(node=node, backend=backend.name)
        self.skipped = 0
        self._last_failure = ""

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
            idle = self._idle_spells(now, readings, attribution)
            described = self.describer.describe(readings, attribution) if self.describer else {}
        except Exception as exc:
            # Once with the traceback; again only when the failure changes, not every second.
            if repr(exc) != self._last_failure:
                log.exception("collection failed; serving the previous readings")
            self._last_failure = repr(exc)
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
        if self._last_failure:
            log.info("collection recovered")
            self._last_failure = ""
        map_dir = self.attributor.map_dir
        gpu_energy = {i: c.value for i, c in self._gpu_energy.items()}
        xids = self.backend.xids()
        node_rollup, job_rollups = _rollups(now, readings, attribution, gpu_energy, idle, xids)
        snap = Snapshot(
            node=self.node,
            backend=self.backend.name,
            time=now,
            readings=readings,
            gpu_energy=gpu_energy,
            attribution=attribution,
            idle_seconds=idle,
            processes=described,
            jobs={
                job_id: JobCounters(t.energy_joules, t.gpu_seconds, t.active_gpu_seconds)
                for job_id, t in self.accountant.jobs.items()
            },
            xids=xids,
            node_rollup=node_rollup,
            job_rollups=job_rollups,
            nvml_errors=dict(self.backend.error_counts()),
            duration_seconds=time.perf_counter() - started,
            last_success=now,
            collections=prev.collections + 1,
            failures=prev.failures,
            skipped=self.skipped,
            job_map_errors=(0 if map_dir is None else map_dir.errors) + self.attributor.errors,
        )
        self._snapshot = snap
        return snap

    def _idle_spells(
        self,
        now: float,
        readings: tuple[GpuReading, ...],
        attribution: Mapping[int, tuple[JobRef, ...]],
    ) -> dict[int, float]:
        size = max((r.index for r in readings), default=-1) + 1
        util: list[float | None] = [None] * size
        holders: list[object] = [()] * size
        for r in readings:
            if r.up:
                util[r.index] = r.utilization
                holders[r.index] = tuple(ref.job_id for ref in attribution.get(r.index, ()))
        self._idle.observe(now, util, holders)
        spells = self._idle.seconds(now, util)
        return {r.index: s for r in readings if (s := spells[r.index]) is not None}

    def _account(
        self,
        now: float,
        readings: tuple[GpuReading, ...],
        attribution: Mapping[int, tuple[JobRef, ...]],
    ) -> None:
        """Energy is read where it matters: a GPU whose owners changed is read now, so the
        delta since its last reading goes wholly to the previous owners, exactly as if it
        had been read every collection; a GPU whose owners did not change is read only
        every ``energy_interval`` (its delta goes to the same owners either way)."""
        node = self.node
        up = [r for r in readings if r.up]
        holders = {r.index: tuple(ref.job_id for ref in attribution.get(r.index, ())) for r in up}
        due = [
            r.index
            for r in up
            if r.index not in self._energy_at
            or now - self._energy_at[r.index] >= self.energy_interval
            or holders[r.index] != self._holders.get(r.index, ())
        ]
        fresh = self.backend.read_energy(due) if due else {}
        for index in due:
            if index not in fresh:
                # Unsupported (pre-Volta) or failing: retry at the energy interval only.
                self._energy_at[index] = now
        for index, raw in fresh.items():
            if index in self._no_energy:
                # Its stand-in 0 J must not turn into a jump to the device's lifetime total.
                self._no_energy.discard(index)
                self.accountant.forget_gpus([(node, index)])
            counter = self._gpu_energy.get(index)
            if counter is None:
                # Start at the device's own reading so our counter matches NVML until the
                # first driver reload.
                counter = self._gpu_energy[index] = MonotonicCounter(value=raw)
            counter.observe(raw)
            self._energy_raw[index] = raw
            self._energy_at[index] = now
        energy: dict[tuple[str, int], float] = {}
        utilization: dict[tuple[str, int], float] = {}
        for r in up:
            # A GPU not read this time repeats its last reading: no energy, but its
            # GPU-seconds still accrue to its owners.
            if r.index in self._energy_raw:
                energy[(node, r.index)] = self._energy_raw[r.index]
            else:  # no energy counter: GPU-seconds are still owed to its owners
                energy[(node, r.index)] = 0.0
                self._no_energy.add(r.index)
            if r.utilization is not None:
                utilization[(node, r.index)] = r.utilization
        self._holders = holders
        jobs = {(node, i): list(ids) for i, ids in holders.items() if ids}
        self.accountant.observe(now, energy, jobs, utilization)


def _rollups(
    now: float,
    readings: tuple[GpuReading, ...],
    attribution: Mapping[int, tuple[JobRef, ...]],
    gpu_energy: Mapping[int, float],
    idle: Mapping[int, float],
    xids: Mapping[int, XidCount],
) -> tuple[NodeRollup, tuple[JobRollup, ...]]:
    """The rollups of exactly the values this collection exports per GPU."""
    none = XidCount()
    tallies = [xids.get(r.index, none) for r in readings]
    return rollup(
        NodeGpus(
            up=[r.up for r in readings],
            utilization=[r.utilization for r in readings],
            power_watts=[r.power_watts for r in readings],
            temperature_celsius=[r.temperature_celsius for r in readings],
            throttled=[is_throttled(r.clock_events) for r in readings],
            last_xid_time=[t.last_time for t in tallies],
            xid_errors=[float(sum(t.counts.values())) for t in tallies],
            energy_joules=[gpu_energy.get(r.index) for r in readings],
            idle_seconds=[idle.get(r.index) for r in readings],
            memory_used_bytes=[r.memory_used_bytes for r in readings],
            jobs=[
                tuple((ref.job_id, ref.user) for ref in attribution.get(r.index, ()))
                for r in readings
            ],
        ),
        now,
    )


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
