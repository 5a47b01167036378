"""GPU physics for one step: what a GPU draws and reports under each kind of workload.

Numbers follow an H100 SXM: 700 W limit, 80 GB, ~60 W at idle P-state, 1980 MHz boost.
The step function returns the values held constant until the next step, so the energy
counter, which integrates power over each step, is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Workload(StrEnum):
    NONE = "none"  # unallocated
    TRAINING = "training"  # steady, near the power limit
    INFERENCE = "inference"  # bursty
    IDLE = "idle"  # holds GPUs, does nothing (60-90 W): the waste we hunt


@dataclass(frozen=True, slots=True)
class GPUSpec:
    model: str = "NVIDIA H100 80GB HBM3"
    power_limit_watts: float = 700.0
    memory_total_bytes: float = 80 * 1024**3
    idle_watts: float = 55.0
    max_sm_clock_hz: float = 1.98e9
    idle_sm_clock_hz: float = 3.45e8
    mem_clock_hz: float = 2.619e9


H100 = GPUSpec()

# NVML clock-event reason names (nvmlClocksEventReason*), the ones the simulator raises.
THROTTLE_POWER = "sw_power_cap"
THROTTLE_THERMAL = "hw_thermal_slowdown"
THROTTLE_BITS = {THROTTLE_POWER: 1, THROTTLE_THERMAL: 2}


# (utilization, memory-bandwidth utilization, memory used bytes, power W, temperature C,
# SM clock Hz). A plain tuple: this runs once per GPU per step, 100,000 times at scale.
Reading = tuple[float, float, float, float, float, float]

_TWO_PI = 2 * math.pi
_sin = math.sin


def step(
    spec: GPUSpec, workload: Workload, t: float, phase: float, noise: float, throttle: int
) -> Reading:
    """One GPU's reading at time ``t``. ``phase`` is per GPU (0-1), ``noise`` in [-1, 1]."""
    limit = spec.power_limit_watts
    if workload is Workload.TRAINING:
        # A training step has a short dip (all-reduce, data loading) every ~30 s.
        dip = 0.85 if _sin(_TWO_PI * (t / 31.0 + phase)) > 0.97 else 1.0
        util = (0.95 + 0.03 * noise) * dip
        power = limit * (0.86 + 0.08 * util + 0.02 * noise) * dip
        mem_used = spec.memory_total_bytes * (0.72 + 0.1 * phase)
        mem_util = 0.55 + 0.1 * noise
    elif workload is Workload.INFERENCE:
        # Request bursts with a ~45 s period and a per-GPU phase.
        wave = _sin(_TWO_PI * (t / (35.0 + 20.0 * phase) + phase))
        util = 0.75 + 0.15 * noise if wave > 0.2 else 0.08 + 0.05 * abs(noise)
        power = spec.idle_watts + 25 + util * (limit * 0.7 - spec.idle_watts)
        mem_used = spec.memory_total_bytes * (0.35 + 0.2 * phase)
        mem_util = util * 0.6
    elif workload is Workload.IDLE:
        util = 0.0
        power = 60.0 + 30.0 * phase + 2.0 * noise  # 60-90 W held and wasted
        mem_used = 1.5e9 * (1 + phase)
        mem_util = 0.0
    else:
        util = 0.0
        power = spec.idle_watts + 4.0 * noise
        mem_used = 0.0
        mem_util = 0.0
    boost = util * 1.2
    clock = spec.idle_sm_clock_hz + (spec.max_sm_clock_hz - spec.idle_sm_clock_hz) * (
        boost if boost < 1.0 else 1.0
    )
    if throttle:
        if throttle & THROTTLE_BITS[THROTTLE_POWER]:
            power = min(power, limit) if workload is not Workload.TRAINING else limit
            clock *= 0.8
        if throttle & THROTTLE_BITS[THROTTLE_THERMAL]:
            power *= 0.7
            clock *= 0.6
    power = max(20.0, min(power, limit * 1.02))
    temp = 91.0 + noise if throttle & 2 else 28.0 + 52.0 * power / limit + 1.5 * noise
    return (
        util if util < 1.0 else 1.0,
        mem_util if mem_util > 0.0 else 0.0,
        mem_used,
        power,
        temp,
        clock,
    )
