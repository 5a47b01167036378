"""The demo source: a simulated factory measured the way the exporter measures a real one.

Per-job energy here is not read from the simulator's truth. A ``JobEnergyAccountant``
observes the GPU energy counters and the GPU->job attribution after every simulator step,
exactly as the exporter does on a node, so comparing it with ``SimFactory.true_energy``
checks the accounting method itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from factoryctl.energy import DayEnergy, GpuKey, JobEnergyAccountant
from factoryctl.model import FactorySnapshot
from factoryctl.occupancy import IdleStreaks
from factoryctl.processes import ProcessTable
from factoryctl.sim import SimConfig, SimFactory
from factoryctl.sim.snapshot import SnapshotCache, build_snapshot

DEFAULT_WARMUP = 4 * 3600.0


def demo_start_time(now: float, warmup: float = DEFAULT_WARMUP) -> float:
    # Whole hours, so separate CLI invocations within an hour see the same jobs.
    return (now // 3600) * 3600 - warmup


@dataclass
class DemoSource:
    sim: SimFactory
    accountant: JobEnergyAccountant = field(
        default_factory=lambda: JobEnergyAccountant(grace_seconds=6 * 3600)
    )
    _total_energy: dict[str, float] = field(default_factory=dict)
    # Nodes, allocations and finished jobs that did not change are reused between polls.
    _cache: SnapshotCache = field(default_factory=SnapshotCache)
    _keys: list[GpuKey] = field(default_factory=list)
    # Idle spells, observed after every step like the exporter observes its readings.
    _idle: IdleStreaks = field(default_factory=IdleStreaks)
    _today: DayEnergy = field(default_factory=DayEnergy)

    def __post_init__(self) -> None:
        self.sim.listeners.append(self._observe)
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
        """A factory that has been running for ``warmup`` seconds up to ``now``."""
        wall = time.time() if now is None else now
        config = SimConfig(
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            seed=seed,
            start_time=demo_start_time(wall, warmup),
            faults_per_node_day=faults_per_node_day,
        )
        source = cls(SimFactory(config))
        # Coarse steps for the past, fine ones for the last minutes: cheap and still exact.
        source.sim.advance_to(wall - 300, step_seconds=60.0)
        source.sim.advance_to(wall, step_seconds=5.0)
        return source

    def _observe(self, sim: SimFactory) -> None:
        # Runs after every simulator step: at 100,000 GPUs the (node, index) keys are
        # built once, not 100,000 tuples per step.
        keys = self._keys
        if len(keys) != sim.gpu_count:
            gpn, names = sim.gpn, sim.node_names
            keys = self._keys = [(names[g // gpn], g % gpn) for g in range(sim.gpu_count)]
        up, counters, utilization, owners = sim.up, sim.energy, sim.utilization, sim.owner
        energy: dict[GpuKey, float] = {}
        attribution: dict[GpuKey, tuple[str, ...]] = {}
        util: dict[GpuKey, float] = {}
        for g, key in enumerate(keys):
            if not up[g]:
                continue
            energy[key] = counters[g]
            util[key] = utilization[g]
            owner = owners[g]
            if owner is not None:
                attribution[key] = (owner.job_id,)
        self.accountant.observe(sim.now, energy, attribution, util)
        gpn = sim.gpn
        silent = [a.silent for a in sim.admin]
        reading = up if not any(silent) else [u and not silent[g // gpn] for g, u in enumerate(up)]
        self._idle.observe(sim.now, utilization, owners, reading)
        self._today.observe(sim.now, counters)
        # Keep totals past the accountant's grace period for finished jobs still listed.
        for job_id, totals in self.accountant.jobs.items():
            self._total_energy[job_id] = totals.energy_joules

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
