"""The demo source: a simulated factory measured the way the exporter measures a real one.

Per-job energy here is not read from the simulator's truth. A ``JobEnergyAccountant``
observes the GPU energy counters and the GPU->job attribution after every simulator step,
exactly as the exporter does on a node, so comparing it with ``SimFactory.true_energy``
checks the accounting method itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import not_

from factoryctl.energy import DayEnergy, JobEnergyAccountant
from factoryctl.model import FactorySnapshot
from factoryctl.occupancy import IdleStreaks
from factoryctl.processes import ProcessTable
from factoryctl.sim import SimConfig, SimFactory
from factoryctl.sim.snapshot import SnapshotCache, build_snapshot
from factoryctl.telemetry.results import gc_paused

DEFAULT_WARMUP = 4 * 3600.0
LIVE_STEP = 5.0  # the console's step (tui.sources.LiveDemoSource)
# A warm-up step costs about one pass over the GPUs (simulate, then observe them the
# exporter's way), so its budget is in GPU-steps: a large factory takes coarser steps and
# starts about as fast as a small one. Energy stays exact at any step (jobs end inside
# steps, on their own GPUs); what coarse steps change is when the scheduler runs (at step
# boundaries: freed GPUs wait for the next one) and how often power is sampled.
COARSE_GPU_STEPS = 300_000
MIN_COARSE_STEP = 300.0
# The last minute in the console's 5 s steps up to 8,000 GPUs, less above, none from 96,000.
FINE_GPU_STEPS = 96_000
MAX_FINE_STEPS = 12
# Every job that ends in the warm-up costs a read of its GPUs: above 50,000 GPUs (some
# 3 jobs ending a second) the warm-up is shortened in proportion, to 2 hours at 100,000.
LONG_WARMUP_GPUS = 50_000
MIN_WARMUP = 3600.0


def warmup_plan(
    gpus: int, warmup: float = DEFAULT_WARMUP, span: float | None = None
) -> tuple[float, float, float]:
    """(warm-up, coarse step, fine seconds) for a factory of ``gpus``: it runs for the
    warm-up, in coarse steps up to ``fine`` seconds before now, then in 5 s steps.
    ``span``: the time the simulator actually covers (it starts on a whole hour, so up to
    an hour more than the warm-up); the coarse steps divide it, not the warm-up."""
    gpus = max(1, gpus)
    if gpus > LONG_WARMUP_GPUS:
        warmup = min(warmup, max(MIN_WARMUP, warmup * LONG_WARMUP_GPUS / gpus))
    fine = LIVE_STEP * min(MAX_FINE_STEPS, FINE_GPU_STEPS // gpus)
    covered = warmup if span is None else span
    coarse = max(MIN_COARSE_STEP, (covered - fine) * gpus / COARSE_GPU_STEPS)
    return warmup, coarse, fine


def demo_start_time(now: float, warmup: float = DEFAULT_WARMUP) -> float:
    # Whole hours, so separate CLI invocations within an hour see the same jobs.
    return (now // 3600) * 3600 - warmup


@dataclass
class DemoSource:
    sim: SimFactory
    # Keyed by the simulator's flat GPU index.
    accountant: JobEnergyAccountant[int] = field(
        default_factory=lambda: JobEnergyAccountant(grace_seconds=6 * 3600)
    )
    _total_energy: dict[str, float] = field(default_factory=dict)
    # Nodes, allocations and finished jobs that did not change are reused between polls.
    _cache: SnapshotCache = field(default_factory=SnapshotCache)
    # Idle spells, observed after every step like the exporter observes its readings.
    _idle: IdleStreaks = field(default_factory=IdleStreaks)
    _today: DayEnergy = field(default_factory=DayEnergy)

    def __post_init__(self) -> None:
        self.sim.listeners.append(self._observe)
        self.sim.release_listeners.append(self._released)
        self._observe(self.sim)

    @classmethod
    def create(
        cls,
        nodes: int = 64,
        gpus_per_node: int = 8,
        seed: int = 0,
        now: float | None = None,
        warmup: float = DEFAULT_WARMUP,
        faults_per_node_day: float = 0.0,
    ) -> DemoSource:
        """A factory that has been running for ``warmup`` seconds up to ``now`` (less
        above 50,000 GPUs: ``warmup_plan``)."""
        wall = time.time() if now is None else now
        warmup = warmup_plan(nodes * gpus_per_node, warmup)[0]
        start = demo_start_time(wall, warmup)
        _, coarse, fine = warmup_plan(nodes * gpus_per_node, warmup, span=wall - start)
        config = SimConfig(
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            seed=seed,
            start_time=start,
            faults_per_node_day=faults_per_node_day,
        )
        # What the warm-up allocates (jobs, readings, the accountant's tables) it keeps, so
        # the cyclic collector's passes over it free nothing; at 100,000 GPUs they cost
        # most of a second. The collector is back on (if it was) once the factory is up.
        with gc_paused():
            source = cls(SimFactory(config))
            # Coarse steps for the past, the console's for the last minute: cheap, exact.
            source.sim.advance_to(wall - fine, step_seconds=coarse)
            source.sim.advance_to(wall, step_seconds=LIVE_STEP)
        return source

    def _observe(self, sim: SimFactory) -> None:
        # Runs after every simulator step, over every GPU (100,000 in the gigafactory): the
        # accountant knows a GPU by its flat index (an int hashes for free; a (node, index)
        # tuple is hashed at every lookup), and the mappings are built by C loops. The
        # demo shows energy only, so it passes no utilization (active GPU-seconds).
        up, counters, owners = sim.up, sim.energy, sim.owner
        gpus = range(sim.gpu_count)
        energy = dict(zip(gpus, counters, strict=True))
        ids = {job: (job.job_id,) for job in dict.fromkeys(owners) if job is not None}
        attribution = dict(
            zip(compress(gpus, owners), map(ids.__getitem__, filter(None, owners)), strict=True)
        )
        for g in compress(gpus, map(not_, up)):  # a lost GPU cannot be read
            del energy[g]
            attribution.pop(g, None)
        self.accountant.observe(sim.now, energy, attribution)
        gpn, reading = sim.gpn, up
        silent = [i for i, a in enumerate(sim.admin) if a.silent]
        if silent:
            reading = bytearray(up)
            for i in silent:
                reading[i * gpn : (i + 1) * gpn] = bytes(gpn)
        self._idle.observe(sim.now, sim.utilization, owners, reading)
        self._today.observe(sim.now, counters)
        # Keep totals past the accountant's grace period for finished jobs still listed.
        for job_id, totals in self.accountant.jobs.items():
            self._total_energy[job_id] = totals.energy_joules

    def _released(self, sim: SimFactory, t: float, gpus: Sequence[int]) -> None:
        """A job released its GPUs between two steps' ends (it ended inside a step, or a
        fault or an operator ended it): they are read then, as the exporter reads a GPU
        whose owners changed, so no later energy is charged to the job."""
        up, owners = sim.up, sim.owner
        live = [g for g in gpus if up[g]]
        self.accountant.observe_gpus(
            t,
            {g: sim.energy[g] for g in live},
            {g: (owner.job_id,) for g in live if (owner := owners[g]) is not None},
        )

    def advance_to(self, t: float, step_seconds: float = 1.0) -> None:
        self.sim.advance_to(t, step_seconds)

    def processes(self, node: str) -> ProcessTable:
        """The processes on one node's GPUs, as the simulated exporter serves them."""
        from factoryctl.sim.processes import node_processes

        if node not in self.sim.node_index:
            return ProcessTable(node=node, available=False, note=f"unknown node {node}")
        return node_processes(self.sim, node)

    def snapshot(self) -> FactorySnapshot:
        return build_snapshot(
            self.sim,
            energy=self._total_energy,
            cache=self._cache,
            idle_seconds=self._idle.seconds(self.sim.now, self.sim.utilization),
            energy_today=None
            if self._today.since is None
            else (self._today.joules, self._today.since),
        )
