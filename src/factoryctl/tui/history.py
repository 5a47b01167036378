"""A small rolling history of every GPU's utilization and power, for sparklines.

Sources give the present only; the console keeps the last ``capacity`` polls itself.
Each poll is two flat float32 arrays (NaN = no sample), so 60 polls of 100,000 GPUs
cost about 48 MB rather than millions of Python objects. ``History`` is immutable:
the poller builds the next one in its thread and hands it over with the snapshot.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

from factoryctl.gpu_columns import GpuLayout
from factoryctl.model import FactorySnapshot

NAN = float("nan")


@dataclass(frozen=True, slots=True)
class Sample:
    time: float
    utilization: array  # type: ignore[type-arg]
    power: array  # type: ignore[type-arg]


@dataclass(frozen=True, slots=True)
class History:
    capacity: int = 60
    layout: GpuLayout | None = None  # which GPU each sample position is
    samples: tuple[Sample, ...] = ()

    def append(
        self,
        snapshot: FactorySnapshot,
        utilization: array | None = None,  # type: ignore[type-arg]
        power: array | None = None,  # type: ignore[type-arg]
    ) -> History:
        """``utilization``/``power``: this poll's float32 samples when the caller has
        them already (the frame's one pass over the GPUs), in snapshot order."""
        table = snapshot.columns()
        layout, kept = table.layout, self.samples
        if self.layout is not None and layout.same(self.layout):
            layout = self.layout  # the one whose lookups are built already
        else:
            kept = ()  # the set of GPUs changed (nodes added or gone): a fresh window
        if kept and kept[-1].time == snapshot.time:
            kept = kept[:-1]  # the same instant polled twice: keep one sample
        util = utilization
        if util is None:
            util = array("f", [NAN if u is None else u for u in table.column("utilization")])
        if power is None:
            power = array("f", [NAN if p is None else p for p in table.column("power_watts")])
        samples = (*kept, Sample(snapshot.time, util, power))[-self.capacity :]
        return History(self.capacity, layout, samples)

    def series(self, node: str, gpu: int, metric: str) -> list[float | None]:
        """Oldest first; ``metric`` is "utilization" or "power"."""
        i = None if self.layout is None else self.layout.position(node, gpu)
        if i is None:
            return []
        out: list[float | None] = []
        for s in self.samples:
            v = float(getattr(s, metric)[i])
            out.append(None if math.isnan(v) else v)
        return out

    @property
    def times(self) -> list[float]:
        return [s.time for s in self.samples]
