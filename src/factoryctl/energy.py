"""Energy: unit conversion, counter arithmetic and exact per-job accounting. Pure.

``JobEnergyAccountant`` is the at-the-source method the exporter uses (and the demo
source, so both are checked against the simulator's truth): each collection takes every
GPU's energy-counter delta since the previous collection and charges it to the jobs the
GPU was attributed to *over that interval*. A PromQL join of GPU counters with job info
cannot do this; it charges a window to whichever job holds the GPU at its end.
"""

from __future__ import annotations

import itertools
import operator
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

JOULES_PER_KWH = 3_600_000.0

GpuKey = tuple[str, int]  # a GPU as the exporter names it: (node, index)
# What JobEnergyAccountant keys its GPUs by: GpuKey for the exporter, the simulator's flat
# GPU index for the demo (an int hashes for free; 100,000 tuples a step do not).
K = TypeVar("K", bound=Hashable)


def local_midnight(t: float) -> float:
    """The start of ``t``'s day in local time (the day an operator means by "today")."""
    day = time.localtime(t)
    return time.mktime((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0, 0, 0, -1))


class DayEnergy:
    """Energy a set of counters gained since local midnight, step by step.

    ``observe`` takes every GPU's counter at once (a reset counts its new value as the
    gain, as ``counter_increase`` does); at midnight the sum starts again from 0.
    """

    __slots__ = ("_day", "_prev", "joules", "since")

    def __init__(self) -> None:
        self._day: float | None = None
        self._prev: list[float] = []
        self.joules = 0.0
        self.since: float | None = None

    def observe(self, now: float, counters: Sequence[float]) -> None:
        day = local_midnight(now)
        if self._day != day:
            # A new day (or the first reading): count from here.
            self._day, self.joules = day, 0.0
            self.since = day if self._prev else now
        prev = self._prev
        if len(prev) == len(counters):
            gains = list(map(operator.sub, counters, prev))
            if min(gains, default=0.0) < 0:  # a reset: that counter's gain is its value
                gains = [g if g >= 0 else c for g, c in zip(gains, counters, strict=True)]
            self.joules += sum(gains)
        self._prev = list(counters)


def joules_to_kwh(joules: float) -> float:
    return joules / JOULES_PER_KWH


def counter_increase(values: Sequence[float]) -> float:
    """Increase of a monotonic counter over samples, treating any drop as a reset to 0.

    This is Prometheus's ``increase()`` without its extrapolation, which is what we want
    for energy: an exact sum of deltas between real samples.
    """
    total = 0.0
    for prev, cur in itertools.pairwise(values):
        total += cur - prev if cur >= prev else cur
    return total


@dataclass(slots=True)
class MonotonicCounter:
    """Turns a source counter that can reset (driver reload) into one that never goes back."""

    value: float = 0.0
    _last_raw: float | None = None

    def observe(self, raw: float) -> float:
        """Feed the raw reading; returns the delta added (0 on the first reading)."""
        if self._last_raw is None:
            delta = 0.0
        elif raw >= self._last_raw:
            delta = raw - self._last_raw
        else:
            delta = raw  # reset: the counter restarted from zero
        self._last_raw = raw
        self.value += delta
        return delta


@dataclass(slots=True)
class JobTotals:
    energy_joules: float = 0.0
    gpu_seconds: float = 0.0
    active_gpu_seconds: float = 0.0  # utilization-weighted: sum(util * dt)
    first_seen: float | None = None
    last_seen: float | None = None


@dataclass(slots=True)
class JobEnergyAccountant(Generic[K]):
    """Per-job energy, GPU-seconds and active GPU-seconds, accumulated at the source.

    Sharing rule: when several jobs hold one GPU (MPS, time-slicing, or an overlapping
    prolog), the GPU's delta is split equally between them. Equal split is what Slurm's
    own TRES accounting does for shared resources and never charges more than was used.

    Attribution and utilization for an interval are the ones observed at its *start* (the
    previous collection), the way the simulator holds a step's values; a job's first
    interval begins when it is first seen. On real hardware the error is bounded by one
    collection interval at a job's edges, unless the GPUs whose owners change are read
    when they change (``observe_gpus``).
    """

    grace_seconds: float = 600.0
    jobs: dict[str, JobTotals] = field(default_factory=dict)
    # Each GPU's last raw counter reading: a delta is the increase since, or the new value
    # after a drop (a reset); a GPU's first reading has none (MonotonicCounter's rule).
    _last_raw: dict[K, float] = field(default_factory=dict)
    _prev_attribution: dict[K, tuple[str, ...]] = field(default_factory=dict)
    _prev_utilization: dict[K, float] = field(default_factory=dict)
    _prev_time: float | None = None
    _ended: dict[str, float] = field(default_factory=dict)
    # GPUs read by observe_gpus since the last observe: when their interval began.
    _gpu_since: dict[K, float] = field(default_factory=dict)

    def observe(
        self,
        now: float,
        energy: Mapping[K, float],
        attribution: Mapping[K, Sequence[str]],
        utilization: Mapping[K, float] | None = None,
    ) -> None:
        """One collection: raw energy counters (J), GPU->jobs, and utilization (0-1).

        Written for 100,000 GPUs a collection (the demo's gigafactory): one loop over the
        GPUs held at the interval's start, the usual single holder charged without the
        share arithmetic, the rest done by dict and zip in C."""
        dt = 0.0 if self._prev_time is None else max(0.0, now - self._prev_time)
        last, held, util_at = self._last_raw, self._prev_attribution, self._prev_utilization
        jobs, since, reading = self.jobs, self._gpu_since, energy.get
        # Only a held GPU's delta is charged: walk those, then keep every reading.
        for key, holders in held.items():
            raw = reading(key)
            if raw is None:  # not read this time
                continue
            before = last.get(key)
            delta = 0.0 if before is None else raw - before if raw >= before else raw
            interval = dt if not since or key not in since else max(0.0, now - since[key])
            if len(holders) == 1:
                totals = jobs[holders[0]]
                totals.energy_joules += delta
                totals.gpu_seconds += interval
                util = util_at.get(key)
                if util is not None:
                    totals.active_gpu_seconds += interval * util
            else:
                self._charge(holders, delta, interval, util_at.get(key))
        last.update(energy)
        since.clear()
        live = dict.fromkeys(itertools.chain.from_iterable(attribution.values()))
        for job_id in live:
            seen = jobs.get(job_id)
            if seen is None:
                seen = jobs[job_id] = JobTotals(first_seen=now)
            seen.last_seen = now
        ended = self._ended
        for job_id in [j for j in ended if j in live]:
            del ended[job_id]
        for job_id in jobs:
            if job_id not in live and job_id not in ended:
                ended[job_id] = now
        # Keep a finished job's counters for the grace period so its final value gets
        # scraped, then forget it: series stay bounded under job churn.
        for job_id, end in list(ended.items()):
            if now - end >= self.grace_seconds:
                del ended[job_id]
                del jobs[job_id]
        prev = dict(zip(attribution, map(tuple, attribution.values()), strict=True))
        if not all(prev.values()):
            prev = {k: v for k, v in prev.items() if v}
        self._prev_attribution = prev
        self._prev_utilization = dict(utilization) if utilization is not None else {}
        self._prev_time = now

    def observe_gpus(
        self,
        now: float,
        energy: Mapping[K, float],
        attribution: Mapping[K, Sequence[str]],
        utilization: Mapping[K, float] | None = None,
    ) -> None:
        """An off-cycle reading of some GPUs, taken when their owners change between two
        collections (a job ends): each one's counter delta and time since its last reading
        go to the jobs that held it, and its new owners and utilization hold from ``now``.
        The other GPUs, and which jobs are live or ended, wait for the next ``observe``."""
        for key, raw in energy.items():
            before = self._last_raw.get(key)
            self._last_raw[key] = raw
            delta = 0.0 if before is None else raw - before if raw >= before else raw
            start = self._gpu_since.get(key, self._prev_time)
            interval = 0.0 if start is None else max(0.0, now - start)
            holders = self._prev_attribution.pop(key, ())
            if holders:
                self._charge(holders, delta, interval, self._prev_utilization.get(key))
            self._gpu_since[key] = now
            new = tuple(attribution.get(key, ()))
            if new:
                self._prev_attribution[key] = new
            for job_id in new:
                totals = self.jobs.get(job_id)
                if totals is None:
                    totals = self.jobs[job_id] = JobTotals(first_seen=now)
                totals.last_seen = now
                self._ended.pop(job_id, None)
            util = None if utilization is None else utilization.get(key)
            if util is None:
                self._prev_utilization.pop(key, None)
            else:
                self._prev_utilization[key] = util

    def _charge(
        self, holders: Sequence[str], delta: float, interval: float, util: float | None
    ) -> None:
        share = 1.0 / len(holders)
        for job_id in holders:
            totals = self.jobs[job_id]
            totals.energy_joules += delta * share
            totals.gpu_seconds += interval * share
            if util is not None:
                totals.active_gpu_seconds += interval * share * util

    def energy_of(self, job_id: str) -> float | None:
        totals = self.jobs.get(job_id)
        return None if totals is None else totals.energy_joules

    def forget_gpus(self, keys: Iterable[K]) -> None:
        for key in keys:
            self._last_raw.pop(key, None)
