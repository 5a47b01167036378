"""A simulated node's GPUs as ``rollups.rollup`` takes them: the one place that reads the
simulator's arrays for it (the lab's backfill, the simulated exporter and the tests that
check the summaries against them all roll up the same input)."""

from __future__ import annotations

from collections.abc import Sequence

from factoryctl.rollups import THROTTLE_REASONS, NodeGpus
from factoryctl.sim.factory import SimFactory
from factoryctl.sim.workload import THROTTLE_BITS

# The throttle bits a rollup counts (hardware and thermal slowdowns, not a power cap).
HW_THROTTLE_MASK = sum(bit for name, bit in THROTTLE_BITS.items() if name in THROTTLE_REASONS)


def node_gpus(sim: SimFactory, node: int, idle_seconds: Sequence[float | None]) -> NodeGpus:
    """Node number ``node``'s GPUs now; ``idle_seconds``: every GPU's idle spell."""
    lo, hi = node * sim.gpn, (node + 1) * sim.gpn
    return NodeGpus(
        up=sim.up[lo:hi],
        utilization=sim.utilization[lo:hi],
        power_watts=sim.power[lo:hi],
        temperature_celsius=sim.temperature[lo:hi],
        throttled=[t & HW_THROTTLE_MASK for t in sim.throttle[lo:hi]],
        last_xid_time=sim.last_xid_time[lo:hi],
        xid_errors=sim.xid_total[lo:hi],
        energy_joules=sim.energy[lo:hi],
        idle_seconds=idle_seconds[lo:hi],
        memory_used_bytes=sim.memory_used[lo:hi],
        jobs=[((o.job_id, o.user),) if o is not None else () for o in sim.owner[lo:hi]],
    )
