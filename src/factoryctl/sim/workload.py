"""GPU physics for one step: what a GPU draws and reports under each kind of workload.

Numbers follow an H100 SXM: 700 W limit, 80 GB, ~60 W at idle P-state, 1980 MHz boost.
``sample`` writes the values held constant until the GPU is next sampled, so the energy
counter, which integrates power over each interval, is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, MutableSequence, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol


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


class Held(Protocol):
    """What holds a GPU (a simulated job): only its workload matters here."""

    @property
    def workload(self) -> Workload: ...


class Readings(NamedTuple):
    """The per-GPU arrays ``sample`` writes: what each GPU reports, held until it is next
    sampled (so the energy counter, which integrates power, is exact)."""

    utilization: MutableSequence[float]
    memory_utilization: MutableSequence[float]
    memory_used: MutableSequence[float]
    power: MutableSequence[float]
    temperature: MutableSequence[float]
    sm_clock: MutableSequence[float]


_TWO_PI = 2 * math.pi
_sin = math.sin


def sample(
    spec: GPUSpec,
    t: float,
    gpus: Iterable[int],
    owners: Sequence[Held | None],
    phase: Sequence[float],
    throttle: Sequence[int],
    rnd: Callable[[], float],
    out: Readings,
) -> None:
    """Each GPU's readings at time ``t``, written into ``out`` at its index. ``phase`` is
    per GPU (0-1); ``rnd`` draws each GPU's noise (one draw per GPU, in the order given).

    One loop over the GPUs with the physics written out: this runs for every GPU at every
    step, 100,000 times a step at scale.
    """
    limit = spec.power_limit_watts
    idle_watts = spec.idle_watts
    mem_total = spec.memory_total_bytes
    idle_clock = spec.idle_sm_clock_hz
    clock_range = spec.max_sm_clock_hz - idle_clock
    inference_base = idle_watts + 25
    inference_range = limit * 0.7 - idle_watts
    top = limit * 1.02
    power_cap = THROTTLE_BITS[THROTTLE_POWER]
    thermal = THROTTLE_BITS[THROTTLE_THERMAL]
    t31 = t / 31.0
    training, inference, idle = Workload.TRAINING, Workload.INFERENCE, Workload.IDLE
    util_out, mem_util_out, mem_used_out, power_out, temp_out, clock_out = out
    sin, two_pi = _sin, _TWO_PI
    for g in gpus:
        job = owners[g]
        workload = job.workload if job is not None else None
        noise = 2 * rnd() - 1
        ph = phase[g]
        if workload is training:
            # A training step has a short dip (all-reduce, data loading) every ~30 s.
            dip = 0.85 if sin(two_pi * (t31 + ph)) > 0.97 else 1.0
            util = (0.95 + 0.03 * noise) * dip
            power = limit * (0.86 + 0.08 * util + 0.02 * noise) * dip
            mem_used = mem_total * (0.72 + 0.1 * ph)
            mem_util = 0.55 + 0.1 * noise
        elif workload is inference:
            # Request bursts with a ~45 s period and a per-GPU phase.
            wave = sin(two_pi * (t / (35.0 + 20.0 * ph) + ph))
            util = 0.75 + 0.15 * noise if wave > 0.2 else 0.08 + 0.05 * abs(noise)
            power = inference_base + util * inference_range
            mem_used = mem_total * (0.35 + 0.2 * ph)
            mem_util = util * 0.6
        elif workload is idle:
            util = 0.0
            power = 60.0 + 30.0 * ph + 2.0 * noise  # 60-90 W held and wasted
            mem_used = 1.5e9 * (1 + ph)
            mem_util = 0.0
        else:  # unallocated (Workload.NONE)
            util = 0.0
            power = idle_watts + 4.0 * noise
            mem_used = 0.0
            mem_util = 0.0
        boost = util * 1.2
        clock = idle_clock + clock_range * (boost if boost < 1.0 else 1.0)
        bits = throttle[g]
        if bits:
            if bits & power_cap:
                power = min(power, limit) if workload is not training else limit
                clock *= 0.8
            if bits & thermal:
                power *= 0.7
                clock *= 0.6
        # max(20.0, min(power, top)) without the two calls
        power = top if power > top else power
        power = power if power > 20.0 else 20.0
        util_out[g] = util if util < 1.0 else 1.0
        mem_util_out[g] = mem_util if mem_util > 0.0 else 0.0
        mem_used_out[g] = mem_used
        power_out[g] = power
        temp_out[g] = 91.0 + noise if bits & 2 else 28.0 + 52.0 * power / limit + 1.5 * noise
        clock_out[g] = clock
