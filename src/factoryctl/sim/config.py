"""What a simulated factory is made of: its size, names, seed and workload mix.

Its own module so the job generator (``jobs``) and the factory (``factory``) both read it
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from factoryctl.sim.workload import H100, GPUSpec


@dataclass(frozen=True, slots=True)
class SimConfig:
    nodes: int = 64
    gpus_per_node: int = 8
    seed: int = 0
    start_time: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    node_prefix: str = "gpu"
    node_names: tuple[str, ...] = ()  # overrides nodes/node_prefix when given
    partition: str = "gpu"
    target_occupancy: float = 0.85
    jobs: bool = True  # False: GPUs are assigned from outside (exporter lab mode)
    faults_per_node_day: float = 0.0  # random faults; 0 keeps tests deterministic
    spec: GPUSpec = H100
