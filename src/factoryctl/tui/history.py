"""A small rolling history for sparklines: every GPU's, every node's and the factory's
utilization and power, and every running job's utilization.

Sources give the present only; the console keeps the last ``capacity`` polls itself.
Each poll is flat float32 arrays (NaN = no sample), so 60 polls of 100,000 GPUs cost
about 48 MB rather than millions of Python objects. A summarized poll (node rollups, no
per-GPU series) has no GPU samples; its node and factory samples are the same figures a
per-GPU poll gives (node mean utilization, node power sum), so the node and factory
sparklines read alike in both modes. ``History`` is immutable: the poller builds the next
one in its thread and hands it over with the snapshot.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from factoryctl.gpu_columns import GpuLayout
from factoryctl.model import FactorySnapshot

NAN = float("nan")
# Polls the jobs' samples are kept for (the job detail's trend is this wide): at 100,000
# GPUs some 6,000 running jobs make each poll's ~0.3 MB, and 60 polls would hold 17 MB.
JOB_SAMPLES = 20


@dataclass(frozen=True, slots=True)
class NodeReadings:
    """One poll's per-node figures, in ``names`` order, and the factory's."""

    names: tuple[str, ...]
    utilization: array  # type: ignore[type-arg]  # node mean, NaN: no GPU says
    power: array  # type: ignore[type-arg]  # node sum, NaN: no GPU says
    factory_utilization: float | None  # mean over the GPUs that report
    factory_power: float | None  # sum over the up GPUs that report (the Overview's)


@dataclass(frozen=True, slots=True)
class Sample:
    time: float
    utilization: array  # type: ignore[type-arg]  # per GPU; empty for a summarized poll
    power: array  # type: ignore[type-arg]
    nodes: NodeReadings | None = None
    # Running jobs' mean utilization (the Jobs view's UTIL), by job id: the same from the
    # (node, job) rollups as from every GPU.
    jobs: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class History:
    capacity: int = 60
    layout: GpuLayout | None = None  # which GPU each sample position is
    samples: tuple[Sample, ...] = ()
    nodes: tuple[str, ...] = ()  # which node each node-sample position is
    node_index: Mapping[str, int] = field(default_factory=dict, compare=False)

    def append(
        self,
        snapshot: FactorySnapshot,
        utilization: array | None = None,  # type: ignore[type-arg]
        power: array | None = None,  # type: ignore[type-arg]
        nodes: NodeReadings | None = None,
        jobs: Mapping[str, float] | None = None,
    ) -> History:
        """``utilization``/``power``: this poll's float32 samples when the caller has
        them already (the frame's one pass over the GPUs), in snapshot order; a
        summarized snapshot has none. ``nodes``: this poll's node and factory figures;
        ``jobs``: its running jobs' mean utilization."""
        kept = self.samples
        layout: GpuLayout | None = None
        util: array | None  # type: ignore[type-arg]
        if snapshot.node_summaries:  # no GPU series: node and factory samples only
            util, power = array("f"), array("f")
            if self.layout is not None:
                kept = ()  # per-GPU polls before: a fresh window, not a mix
        else:
            table = snapshot.columns()
            layout = table.layout
            if self.layout is not None and layout.same(self.layout):
                layout = self.layout  # the one whose lookups are built already
            else:
                kept = ()  # the set of GPUs changed (nodes added or gone): a fresh window
            util = utilization
            if util is None:
                util = array("f", [NAN if u is None else u for u in table.column("utilization")])
            if power is None:
                power = array("f", [NAN if p is None else p for p in table.column("power_watts")])
        names = nodes.names if nodes is not None else ()
        index = self.node_index
        if names != self.nodes:
            kept = ()  # nodes added or gone
            index = {n: i for i, n in enumerate(names)}
        elif nodes is not None and nodes.names is not self.nodes:
            # One tuple of 12,500 names for the whole window, not one per poll (6 MB).
            nodes = replace(nodes, names=self.nodes)
            names = self.nodes
        if kept and kept[-1].time == snapshot.time:
            kept = kept[:-1]  # the same instant polled twice: keep one sample
        sample = Sample(snapshot.time, util, power, nodes, jobs or {})
        samples = (*kept, sample)[-self.capacity :]
        if len(samples) > JOB_SAMPLES and samples[-JOB_SAMPLES - 1].jobs:
            old = samples[-JOB_SAMPLES - 1]  # the one leaving the jobs' window
            samples = (
                *samples[: -JOB_SAMPLES - 1],
                Sample(old.time, old.utilization, old.power, old.nodes),
                *samples[-JOB_SAMPLES:],
            )
        return History(self.capacity, layout, samples, names, index)

    def series(self, node: str, gpu: int, metric: str) -> list[float | None]:
        """One GPU's, oldest first; ``metric`` is "utilization" or "power". Empty where
        the polls held no per-GPU samples (summarized)."""
        i = None if self.layout is None else self.layout.position(node, gpu)
        if i is None:
            return []
        return [_value(getattr(s, metric), i) for s in self.samples]

    def node_series(self, node: str, metric: str) -> list[float | None]:
        """One node's mean utilization or power sum, oldest first."""
        i = self.node_index.get(node)
        if i is None:
            return []
        return [
            None if s.nodes is None else _value(getattr(s.nodes, metric), i) for s in self.samples
        ]

    def factory_series(self, metric: str) -> list[float | None]:
        """The factory's mean utilization or power, oldest first."""
        return [
            None if s.nodes is None else getattr(s.nodes, f"factory_{metric}") for s in self.samples
        ]

    def job_series(self, job_id: str) -> list[float | None]:
        """One job's mean utilization, oldest first (None: not running or not reporting,
        or older than the last ``JOB_SAMPLES`` polls)."""
        return [s.jobs.get(job_id) for s in self.samples]

    @property
    def times(self) -> list[float]:
        return [s.time for s in self.samples]


def _value(values: Sequence[float], i: int) -> float | None:
    if i >= len(values):
        return None
    v = float(values[i])
    return None if math.isnan(v) else v
