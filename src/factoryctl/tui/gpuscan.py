"""One pass over every GPU of a snapshot for everything a frame needs from them.

At 100,000 GPUs each pass costs ~50-100 ms in Python, and the frame used to make five
(node rows, the Overview's scan, heat-map values, history, occupancy). This one pass
gathers per-node aggregates, the Overview's problem lists and power, and the per-GPU
values the heat map and the history keep.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from factoryctl.model import GPU, FactorySnapshot

HOT_CELSIUS = 85.0
NAN = float("nan")


@dataclass(slots=True)
class NodeAgg:
    util_sum: float = 0.0
    util_n: int = 0
    power: float = 0.0
    power_n: int = 0
    temp_max: float | None = None
    xids: float = 0.0
    down_gpus: int = 0


@dataclass(slots=True)
class GpuScan:
    nodes: dict[str, NodeAgg] = field(default_factory=dict)
    # The Overview's inputs: power of the GPUs that report, and problem GPUs.
    power: float = 0.0
    power_known: int = 0
    down: list[GPU] = field(default_factory=list)
    xid: list[GPU] = field(default_factory=list)
    hot: list[GPU] = field(default_factory=list)
    throttled: list[GPU] = field(default_factory=list)
    # Per GPU in snapshot order: heat-map values (None: down or silent) and the
    # history's float32 samples (NaN: no sample).
    utilization: list[float | None] = field(default_factory=list)
    power_ratio: list[float | None] = field(default_factory=list)
    history_utilization: array = field(default_factory=lambda: array("f"))  # type: ignore[type-arg]
    history_power: array = field(default_factory=lambda: array("f"))  # type: ignore[type-arg]


def scan_gpus(snapshot: FactorySnapshot) -> GpuScan:
    scan = GpuScan()
    nodes = scan.nodes
    heat_util, heat_power = scan.utilization, scan.power_ratio
    hist_util, hist_power = [], []
    down, xid, hot, throttled = scan.down, scan.xid, scan.hot, scan.throttled
    power_total, power_known = 0.0, 0
    last_node: str | None = None
    a = NodeAgg()
    for gpu in snapshot.gpus:
        if gpu.node != last_node:  # GPUs come node by node: one lookup per node
            last_node = gpu.node
            found = nodes.get(last_node)
            if found is None:
                found = nodes[last_node] = NodeAgg()
            a = found
        u = gpu.utilization
        p = gpu.power_watts
        t = gpu.temperature_celsius
        # Node rows count whatever the GPU reported, up or not.
        if u is not None:
            a.util_sum += u
            a.util_n += 1
            hist_util.append(u)
        else:
            hist_util.append(NAN)
        if p is not None:
            a.power += p
            a.power_n += 1
            hist_power.append(p)
        else:
            hist_power.append(NAN)
        if t is not None and (a.temp_max is None or t > a.temp_max):
            a.temp_max = t
        if gpu.xid_total:
            a.xids += gpu.xid_total
        if not gpu.up:
            a.down_gpus += 1
            down.append(gpu)
            heat_util.append(None)
            heat_power.append(None)
            continue
        heat_util.append(u)
        limit = gpu.power_limit_watts
        heat_power.append(p / limit if p is not None and limit else None)
        if p is not None:
            power_total += p
            power_known += 1
        if gpu.last_xid:
            xid.append(gpu)
        if t is not None and t >= HOT_CELSIUS:
            hot.append(gpu)
        if gpu.throttle_reasons:
            throttled.append(gpu)
    scan.power, scan.power_known = power_total, power_known
    scan.history_utilization = array("f", hist_util)
    scan.history_power = array("f", hist_power)
    return scan
