"""Backfill a simulated factory's telemetry into an engine, keeping the truth to check by.

``backfill()`` runs ``factoryctl.sim.SimFactory`` for a span of minutes and hands the
series factoryctl-exporter would have exported, a chunk of steps at a time, to sinks
(``backfill_sinks``: VictoriaMetrics' JSON import, an OpenMetrics file for promtool). The
result holds what a test or benchmark checks a reader against: the samples written, the
time of the last step, the simulator at that step, per-step frames of what the exporters
reported, and per-job energy as the exporter counts it.

Exporter semantics for per-job energy: each step's increase of a GPU's energy counter goes
to the job that held the GPU at the step's start (the exporter charges a collection
interval to the owner it saw when the interval began). That is what a reader of
``factoryctl_job_energy_joules_total`` must find, and it differs from the simulator's exact
``true_energy`` by the part of a step after a job ended, which the next owner's counter
never sees.

Rollups (``factoryctl.rollups``, the per-node and per-(node, job) series) are computed at
each step by the function the exporter uses, from the simulator's state, so a backfilled
factory serves them like a real one. ``factoryctl_job_gpus`` comes from the attribution
(the two agree: the rollup counts the same holders).
"""

from __future__ import annotations

import bisect
import contextlib
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from factoryctl.lab.backfill_sinks import Chunk, Layout, Sink
from factoryctl.occupancy import IdleStreaks
from factoryctl.rollups import rollup
from factoryctl.sim import SimConfig, SimFactory
from factoryctl.sim.rollup_input import node_gpus
from factoryctl.telemetry import schema as m

STEP = 15.0
# The node rollups as series: metric name -> NodeRollup field.
_NODE_FIELDS = (
    (m.NODE_GPUS, "gpus"),
    (m.NODE_GPUS_UP, "gpus_up"),
    (m.NODE_GPUS_ALLOCATED, "gpus_allocated"),
    (m.NODE_GPUS_ACTIVE, "gpus_active"),
    (m.NODE_GPUS_THROTTLED, "gpus_throttled"),
    (m.NODE_GPUS_XID_RECENT, "gpus_xid_recent"),
    (m.NODE_POWER, "power_watts"),
    (m.NODE_UTILIZATION, "utilization"),
    (m.NODE_TEMPERATURE_MAX, "temperature_max_celsius"),
    (m.NODE_XID_ERRORS, "xid_errors"),
    (m.NODE_ENERGY, "energy_joules"),
)
_NODE_NAMES = tuple(name for name, _ in _NODE_FIELDS)
_NODE_VALUES = attrgetter(*(attr for _, attr in _NODE_FIELDS))
CHUNK_STEPS = 20  # steps per import request: 5 minutes at 15 s
# Readers take a series' "latest" value from the last two scrape intervals.
LOOKBACK_STEPS = 2


@dataclass(frozen=True, slots=True)
class Frame:
    """What every exporter reported at one step (per GPU, flat like the simulator)."""

    time: float
    utilization: array[float]
    power: array[float]
    temperature: array[float]
    owners: tuple[str | None, ...]  # the job holding each GPU after the step


@dataclass
class Backfill:
    sim: SimFactory  # the simulator at the last step
    start: float  # the simulator's start; the first sample is one step later
    end: float  # time of the last sample
    step: float
    samples: int = 0
    frames: list[Frame] = field(default_factory=list)  # steps at or after ``record_from``
    # Per job: sample times and the job's counter (summed over its nodes) at each.
    counter_times: dict[str, array[float]] = field(default_factory=dict)
    counter_values: dict[str, array[float]] = field(default_factory=dict)
    # Per job: first and last step at which the exporters attributed a GPU to it.
    attributed: dict[str, tuple[float, float]] = field(default_factory=dict)

    def frame_at(self, t: float) -> Frame:
        """The frame a query at ``t`` sees: the newest step at or before ``t``."""
        i = bisect.bisect_right([f.time for f in self.frames], round(t, 3)) - 1
        if i < 0:
            raise LookupError(f"no frame recorded at or before {t:.3f}")
        if t - self.frames[i].time > LOOKBACK_STEPS * self.step:
            raise LookupError(f"{t:.3f} is past the backfilled data (ends {self.end:.3f})")
        return self.frames[i]

    def held_at(self, t: float) -> dict[str, set[int]]:
        """GPUs per job as a query at ``t`` sees them: attributed at any step in
        (t - 2 steps, t], the readers' lookback for "latest" (a job that ended a step ago
        still holds its GPUs there, on both engines)."""
        lo = round(t - LOOKBACK_STEPS * self.step, 3)
        if not self.frames or self.frames[0].time > lo + self.step:
            raise LookupError(f"frames start after the lookback of {t:.3f}")
        held: dict[str, set[int]] = {}
        for frame in self.frames:
            if lo < frame.time <= round(t, 3):
                for g, job in enumerate(frame.owners):
                    if job is not None:
                        held.setdefault(job, set()).add(g)
        return held

    def nodes_at(self, t: float) -> dict[str, dict[str, float]]:
        """What ``factoryctl nodes`` must show at ``t``: per node GPUs, GPUs held by a job,
        mean utilization, power sum and hottest GPU."""
        frame, gpn, names = self.frame_at(t), self.sim.gpn, self.sim.node_names
        allocated = [0] * len(names)
        for g in set().union(*self.held_at(t).values()):
            allocated[g // gpn] += 1
        out = {}
        for i, name in enumerate(names):
            lo, hi = i * gpn, (i + 1) * gpn
            out[name] = {
                "gpus_total": gpn,
                "gpus_allocated": allocated[i],
                "utilization": sum(frame.utilization[lo:hi]) / gpn,
                "power_watts": sum(frame.power[lo:hi]),
                "temperature_max_celsius": max(frame.temperature[lo:hi]),
            }
        return out

    def jobs_at(self, t: float) -> dict[str, dict[str, float]]:
        """What ``factoryctl jobs`` must show at ``t`` (telemetry only): per job its GPUs,
        their mean and least utilization and the job's energy counter."""
        util = self.frame_at(t).utilization
        return {
            job: {
                "gpus": len(gpus),
                "mean_utilization": sum(util[g] for g in gpus) / len(gpus),
                "min_utilization": min(util[g] for g in gpus),
                "energy_joules": self.job_counter(job, t),
            }
            for job, gpus in self.held_at(t).items()
        }

    def job_counter(self, job_id: str, t: float) -> float:
        """The job's energy counter (J, all nodes) as of ``t``; 0 before its first sample."""
        times = self.counter_times.get(job_id)
        if times is None:
            return 0.0
        i = bisect.bisect_right(times, t) - 1
        return self.counter_values[job_id][i] if i >= 0 else 0.0

    def job_energy(self, since: float, until: float) -> dict[str, float]:
        """Joules the exporters charged to each job over steps ending in (since, until]."""
        out = {}
        for job_id, times in self.counter_times.items():
            if times[0] <= until and times[-1] > since:
                out[job_id] = self.job_counter(job_id, until) - self.job_counter(job_id, since)
        return out

    def jobs_attributed(self, since: float, until: float) -> set[str]:
        """Jobs the exporters attributed a GPU to at some step in (since, until]."""
        return {
            j for j, (first, last) in self.attributed.items() if first <= until and last > since
        }


def backfill(
    sinks: Sequence[Sink],
    gpus: int,
    minutes: float,
    end: float,
    *,
    gpus_per_node: int = 8,
    step: float = STEP,
    seed: int = 1,
    record_from: float | None = None,
    chunk_steps: int = CHUNK_STEPS,
    rollups: bool = True,
) -> Backfill:
    """Simulate ``minutes`` ending at ``end`` (aligned down to ``step``), write it to every
    sink and close them. Frames are kept for steps at or after ``record_from`` (None:
    none), so a 100,000-GPU hour does not hold every step's arrays. ``rollups=False``
    leaves out the node and (node, job) rollups (a reader of raw series only: about a
    third less to compute and a fifth fewer samples)."""
    start = (end - minutes * 60) // step * step
    nodes = gpus // gpus_per_node
    sim = SimFactory(
        SimConfig(nodes=nodes, gpus_per_node=gpus_per_node, seed=seed, start_time=start)
    )
    layout = Layout.of(sim)
    result = Backfill(sim=sim, start=start, end=start, step=step)
    exporters = _Exporters(sim, result, rollups)
    try:
        chunk = Chunk.empty(exporters.gauges)
        for _ in range(int(minutes * 60 / step)):
            sim.advance(step, step)
            exporters.observe(chunk)
            if record_from is not None and sim.now >= record_from:
                result.frames.append(exporters.frame())
            if len(chunk.stamps) >= chunk_steps:
                result.samples += _flush(sinks, layout, chunk)
                chunk = Chunk.empty(exporters.gauges)
        if chunk.stamps:
            result.samples += _flush(sinks, layout, chunk)
    except BaseException:
        for sink in sinks:
            with contextlib.suppress(Exception):
                sink.close()
        raise
    for sink in sinks:
        sink.close()
    result.end = sim.now
    return result


class _Exporters:
    """What every node's factoryctl-exporter would export at each step, into a chunk,
    and the per-job truth beside it."""

    def __init__(self, sim: SimFactory, result: Backfill, rollups: bool = True) -> None:
        self.sim, self.result, self.rollups = sim, result, rollups
        self.gauges = {
            m.GPU_UTILIZATION: sim.utilization,
            m.GPU_POWER: sim.power,
            m.GPU_ENERGY: sim.energy,
            m.GPU_TEMPERATURE: sim.temperature,
            m.GPU_MEMORY_USED: sim.memory_used,
        }
        self.prev = array("d", sim.energy)
        self.owner: list[str | None] = [o.job_id if o else None for o in sim.owner]
        self.totals: dict[tuple[int, str], float] = {}  # the counter per (node, job)
        self.cum: dict[str, float] = {}  # per job, all nodes
        self.idle = IdleStreaks()  # each GPU's idle spell, as its exporter keeps it
        # The simulator's throttle bits that count as throttled (hardware/thermal reasons).

    def observe(self, chunk: Chunk) -> None:
        sim, result, prev, prev_owner, totals = (
            self.sim,
            self.result,
            self.prev,
            self.owner,
            self.totals,
        )
        ts = round(sim.now * 1000)
        t = ts / 1000
        chunk.stamps.append(ts)
        for name, values in self.gauges.items():
            chunk.gauges[name].extend(values)  # step-major: one memcpy per metric
        chunk.up.extend(sim.up)
        touched: set[tuple[int, str]] = set()
        charged: dict[str, float] = {}
        gpn, energy, owner, info = sim.gpn, sim.energy, sim.owner, chunk.info
        for g in range(len(energy)):
            cur, before = energy[g], prev[g]
            prev[g] = cur
            job = prev_owner[g]
            if job is not None:  # the step is charged to the owner at its start
                delta = cur - before if cur >= before else cur  # a reset restarts at 0
                key = (g // gpn, job)
                totals[key] = totals.get(key, 0.0) + delta
                charged[job] = charged.get(job, 0.0) + delta
                touched.add(key)
            now = owner[g]
            if now is None:
                prev_owner[g] = None
                continue
            prev_owner[g] = now.job_id
            info.setdefault((g, now.job_id, now.user), []).append(ts)
            touched.add((g // gpn, now.job_id))
            charged.setdefault(now.job_id, 0.0)
        for key in touched:
            tsl, vals = chunk.job_energy.setdefault(key, ([], []))
            tsl.append(ts)
            vals.append(totals.get(key, 0.0))
        for job, joules in charged.items():
            self.cum[job] = self.cum.get(job, 0.0) + joules
            result.counter_times.setdefault(job, array("d")).append(t)
            result.counter_values.setdefault(job, array("d")).append(self.cum[job])
        for job in {o for o in prev_owner if o is not None}:
            result.attributed[job] = (result.attributed.get(job, (t, t))[0], t)
        if self.rollups:
            self._rollups(chunk, ts)

    def _rollups(self, chunk: Chunk, ts: int) -> None:
        sim, jobs_out = self.sim, chunk.job_rollups
        now, up, util = sim.now, sim.up, sim.utilization
        self.idle.observe(now, util, self.owner, up)
        spells = self.idle.seconds(now, util)
        nodes = []
        for i in range(len(sim.node_names)):
            node, held = rollup(
                node_gpus(sim, i, spells),
                now,
            )
            nodes.append(node)
            for j in held:
                for name, value in (
                    (m.JOB_GPUS_ACTIVE, j.gpus_active),
                    (m.JOB_UTILIZATION_SUM, j.utilization_sum),
                    (m.JOB_POWER, j.power_watts),
                    (m.JOB_IDLE_SECONDS, j.idle_seconds),
                    (m.JOB_UTILIZATION_MIN, j.utilization_min),
                    (m.JOB_MEMORY_USED, j.memory_used_bytes),
                ):
                    if value is not None:
                        series = jobs_out.get((name, i, j.job_id, j.user))
                        if series is None:
                            series = jobs_out[(name, i, j.job_id, j.user)] = ([], [])
                        series[0].append(ts)
                        series[1].append(value)
        # One column per node rollup, appended whole (NaN: absent at this step).
        columns = zip(*map(_NODE_VALUES, nodes), strict=True)
        for name, column in zip(_NODE_NAMES, columns, strict=True):
            values = chunk.node_rollups.get(name)
            if values is None:
                values = chunk.node_rollups[name] = array("d")
            if None in column:
                chunk.sparse.add(name)
                values.extend([math.nan if v is None else v for v in column])
            else:
                values.extend(column)

    def frame(self) -> Frame:
        sim = self.sim
        return Frame(
            time=round(sim.now, 3),
            utilization=array("d", sim.utilization),
            power=array("d", sim.power),
            temperature=array("d", sim.temperature),
            owners=tuple(self.owner),
        )


def _flush(sinks: Sequence[Sink], layout: Layout, chunk: Chunk) -> int:
    for sink in sinks:
        sink.write(layout, chunk)
    return chunk.samples(layout.gpu_count, layout.gpn)
