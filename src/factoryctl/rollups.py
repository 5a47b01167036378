"""Rollups: one node's GPUs summed up into a node row and one row per (node, job). Pure.

The exporter computes them once per collection from its own readings, the lab's backfill
from the simulator at each step; both call ``rollup`` so a backfilled factory holds what
a real site would. The names they go out under are ``telemetry.schema``'s "Rollups" block.

Definitions (the contract the console and the dcgm recording rules follow):

- *up*: NVML answers for the GPU. Every mean, sum and max below is over up GPUs only.
- *allocated*: attributed to at least one job, up or lost (a lost GPU's job still holds it
  until the scheduler ends the job).
- *active*: up, with a utilization >= ``occupancy.ACTIVE_THRESHOLD``.
- *throttled*: up, with a hardware clock-event reason active (``THROTTLE_REASONS``). A
  software power cap is normal under load and does not count.
- *xid_recent*: an XID (any code) within ``XID_RECENT_SECONDS`` before ``now``, up or lost.
- A node with no up GPU has counts but no power, utilization or temperature: absent
  (``None``), never a 0 that reads as an idle, cold node.
- Counters (XID events, energy) sum every GPU's counter, up or lost, so the sum never
  goes backwards when a GPU drops out.
- A job's idle spell is the longest among its up GPUs (0 when none is idle), as
  ``occupancy.job_occupancy`` defines it; ``None`` when no GPU of it can say.
- A job's lowest utilization is the minimum over its up GPUs here: the job-wide minimum
  is the minimum over its nodes, exact. (A job-wide 10th percentile is not: no per-node
  figure gives it, so the rollup path of ``factoryctl jobs`` reports the minimum instead.)
- A job's memory in use sums its up GPUs' used framebuffer here (a GPU two jobs share
  counts for both, as every per-job figure does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from factoryctl.occupancy import ACTIVE_THRESHOLD

# nvmlClocksEventReason* names as the exporter labels them (exporter/nvml.py): slowdowns
# the hardware or the driver's thermal protection imposes, i.e. a GPU not running at the
# speed asked of it for a reason that is not the workload's own.
THROTTLE_REASONS = frozenset(
    {"hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "sw_thermal_slowdown"}
)
XID_RECENT_SECONDS = 3600.0

JobKey = tuple[str, str]  # (job_id, user)


def is_throttled(clock_events: Mapping[str, bool] | None) -> bool:
    """Whether any of ``THROTTLE_REASONS`` is active in a reason -> active mapping."""
    if not clock_events:
        return False
    return any(clock_events.get(reason) for reason in THROTTLE_REASONS)


@dataclass(frozen=True, slots=True)
class NodeGpus:
    """One node's GPUs at one instant, a column per field, one entry per GPU.

    ``None`` (or, for ``last_xid_time``, 0) means unknown or never; values of a GPU
    that is not up are ignored except where the definitions above say otherwise.
    """

    up: Sequence[int | bool]
    utilization: Sequence[float | None]
    power_watts: Sequence[float | None]
    temperature_celsius: Sequence[float | None]
    throttled: Sequence[int | bool]
    last_xid_time: Sequence[float | None]  # unix seconds of the GPU's latest XID
    xid_errors: Sequence[float]  # XID events counted on the GPU (all codes)
    energy_joules: Sequence[float | None]  # the GPU's energy counter
    idle_seconds: Sequence[float | None]  # current idle spell (0 while active)
    jobs: Sequence[tuple[JobKey, ...]]  # the jobs holding the GPU
    memory_used_bytes: Sequence[float | None]  # framebuffer in use


@dataclass(frozen=True, slots=True)
class NodeRollup:
    gpus: int
    gpus_up: int
    gpus_allocated: int
    gpus_active: int
    gpus_throttled: int
    gpus_xid_recent: int
    power_watts: float | None  # sum over up GPUs
    utilization: float | None  # mean over up GPUs
    temperature_max_celsius: float | None  # hottest up GPU
    xid_errors: float  # sum of the counters
    energy_joules: float | None  # sum of the known counters


@dataclass(frozen=True, slots=True)
class JobRollup:
    job_id: str
    user: str
    gpus: int  # GPUs the job holds here, up or lost
    gpus_active: int
    utilization_sum: float | None
    power_watts: float | None
    idle_seconds: float | None  # longest spell among its up GPUs
    utilization_min: float | None  # the least busy of its up GPUs
    memory_used_bytes: float | None  # sum over its up GPUs


def _known(
    values: Sequence[float | None], up: Sequence[int | bool], all_up: bool
) -> Sequence[float]:
    # The common case (every GPU up, every value known) is taken whole: the lab's
    # backfill calls this for every node of a 100,000-GPU factory at every step.
    if all_up and None not in values:
        return values  # type: ignore[return-value]
    return [v for v, u in zip(values, up, strict=True) if u and v is not None]


def _count(flags: Sequence[object]) -> int:
    return sum(1 for f in flags if f)


def rollup(
    gpus: NodeGpus, now: float, threshold: float = ACTIVE_THRESHOLD
) -> tuple[NodeRollup, tuple[JobRollup, ...]]:
    """The node's rollup and its jobs' (sorted by job id, then user)."""
    up = gpus.up
    n_up = _count(up)
    all_up = n_up == len(up)
    utils = _known(gpus.utilization, up, all_up)
    powers = _known(gpus.power_watts, up, all_up)
    temps = _known(gpus.temperature_celsius, up, all_up)
    recent_after = now - XID_RECENT_SECONDS
    energy = [e for e in gpus.energy_joules if e is not None]
    throttled = gpus.throttled
    node = NodeRollup(
        gpus=len(up),
        gpus_up=n_up,
        gpus_allocated=_count(gpus.jobs),
        gpus_active=sum(1 for v in utils if v >= threshold),
        gpus_throttled=(
            _count(throttled)
            if all_up
            else sum(1 for u, t in zip(up, throttled, strict=True) if u and t)
        ),
        gpus_xid_recent=sum(1 for t in gpus.last_xid_time if t and t >= recent_after),
        power_watts=sum(powers) if powers else None,
        utilization=sum(utils) / len(utils) if utils else None,
        temperature_max_celsius=max(temps) if temps else None,
        xid_errors=float(sum(gpus.xid_errors)),
        energy_joules=sum(energy) if energy else None,
    )
    if node.gpus_allocated == 0:
        return node, ()
    return node, _jobs(gpus, threshold)


def _jobs(gpus: NodeGpus, threshold: float) -> tuple[JobRollup, ...]:
    holders: dict[JobKey, list[int]] = {}
    for i, held in enumerate(gpus.jobs):
        for key in held:
            mine = holders.get(key)
            if mine is None:
                holders[key] = [i]
            else:
                mine.append(i)
    up, util, power, idle = gpus.up, gpus.utilization, gpus.power_watts, gpus.idle_seconds
    memory = gpus.memory_used_bytes
    out = []
    for (job_id, user), mine in sorted(holders.items()):
        live = [i for i in mine if up[i]]
        utils = [u for i in live if (u := util[i]) is not None]
        powers = [p for i in live if (p := power[i]) is not None]
        spells = [s for i in live if (s := idle[i]) is not None]
        used = [b for i in live if (b := memory[i]) is not None]
        out.append(
            JobRollup(
                job_id=job_id,
                user=user,
                gpus=len(mine),
                gpus_active=sum(1 for u in utils if u >= threshold),
                utilization_sum=sum(utils) if utils else None,
                power_watts=sum(powers) if powers else None,
                idle_seconds=max(spells) if spells else None,
                utilization_min=min(utils) if utils else None,
                memory_used_bytes=sum(used) if used else None,
            )
        )
    return tuple(out)
