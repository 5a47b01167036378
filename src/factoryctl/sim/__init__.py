"""The simulated factory: deterministic from a seed, driven by a clock the caller owns."""

from factoryctl.sim.config import SimConfig
from factoryctl.sim.factory import SimFactory, XidEvent
from factoryctl.sim.jobs import SimJob
from factoryctl.sim.workload import H100, GPUSpec, Workload

__all__ = ["H100", "GPUSpec", "SimConfig", "SimFactory", "SimJob", "Workload", "XidEvent"]
