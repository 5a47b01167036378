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

from factoryctl.model import FactorySnapshot

NAN = float("nan")
GpuKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Sample:
    time: float
    utilization: array  # type: ignore[type-arg]
    power: array  # type: ignore[type-arg]


@dataclass(frozen=True, slots=True)
class History:
    capacity: int = 60
    keys: tuple[GpuKey, ...] = ()
    index: dict[GpuKey, int] | None = None
    samples: tuple[Sample, ...] = ()

    def append(
        self,
        snapshot: FactorySnapshot,
        utilization: array | None = None,  # type: ignore[type-arg]
        power: array | None = None,  # type: ignore[type-arg]
    ) -> History:
        """``utilization``/``power``: this poll's float32 samples when the caller has
        them already (the frame's one pass over the GPUs), in snapshot order."""
        keys = tuple([(g.node, g.index) for g in snapshot.gpus])
        if keys == self.keys and self.index is not None:
            index, kept = self.index, self.samples
        else:
            # The set of GPUs changed (nodes added or gone): start a fresh window.
            index, kept = {k: i for i, k in enumerate(keys)}, ()
        if kept and kept[-1].time == snapshot.time:
            kept = kept[:-1]  # the same instant polled twice: keep one sample
        util = utilization
        if util is None:
            util = array(
                "f", [NAN if g.utilization is None else g.utilization for g in snapshot.gpus]
            )
        if power is None:
            power = array(
                "f", [NAN if g.power_watts is None else g.power_watts for g in snapshot.gpus]
            )
        samples = (*kept, Sample(snapshot.time, util, power))[-self.capacity :]
        return History(self.capacity, keys, index, samples)

    def series(self, node: str, gpu: int, metric: str) -> list[float | None]:
        """Oldest first; ``metric`` is "utilization" or "power"."""
        if self.index is None or (node, gpu) not in self.index:
            return []
        i = self.index[(node, gpu)]
        out: list[float | None] = []
        for s in self.samples:
            v = float(getattr(s, metric)[i])
            out.append(None if math.isnan(v) else v)
        return out

    @property
    def times(self) -> list[float]:
        return [s.time for s in self.samples]
