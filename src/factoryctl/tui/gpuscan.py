"""Everything a frame needs from every GPU, computed column by column.

The snapshot's GPUs as columns (``FactorySnapshot.columns()``: free for the simulator,
one pass per field for a source that built GPU objects) spare the poller building
100,000 GPU objects. Over columns, the frame uses built-ins (``sum``/``max`` over each
node's slice, ``compress`` to find the few problem GPUs), which costs about what one
Python loop over GPU objects did (~65 ms at 100,000 GPUs) and builds GPU objects only
for the problem lists. The results are the ones a GPU-by-GPU pass gives
(``test_tui_gpuscan`` compares them on snapshots with every kind of gap).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import ge, is_, not_, truediv
from typing import Any

from factoryctl.gpu_columns import GpuColumns
from factoryctl.model import GPU, FactorySnapshot
from factoryctl.summaries import HOT_CELSIUS
from factoryctl.tui import fmt

__all__ = ["HOT_CELSIUS", "GpuScan", "NodeAgg", "scan_gpus", "scan_summaries"]
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
    utilization: Sequence[float | None] = ()
    power_ratio: Sequence[float | None] = ()
    history_utilization: array = field(default_factory=lambda: array("f"))  # type: ignore[type-arg]
    history_power: array = field(default_factory=lambda: array("f"))  # type: ignore[type-arg]
    # What ``power_ratio`` is, where it is not each GPU's power over its limit ("" then).
    power_note: str = ""


def _nones(values: Sequence[Any]) -> list[int]:
    """Positions holding None (few: GPUs that do not report), found without a Python
    loop over all of them."""
    return list(compress(range(len(values)), map(is_, values, repeat(None))))


def _patched(values: Sequence[Any], at: Sequence[int], value: Any) -> Sequence[Any]:
    if not at:
        return values
    out = list(values)
    for i in at:
        out[i] = value
    return out


def scan_gpus(snapshot: FactorySnapshot) -> GpuScan:
    table = snapshot.columns()
    col = table.column
    up, util, power = col("up"), col("utilization"), col("power_watts")
    temp, xids = col("temperature_celsius"), col("xid_total")
    util_nones, power_nones, temp_nones = _nones(util), _nones(power), _nones(temp)
    # None becomes a value that changes no sum (0.0) or max (-inf); counts come apart.
    util0 = _patched(util, util_nones, 0.0)
    power0 = _patched(power, power_nones, 0.0)
    temp0 = _patched(temp, temp_nones, float("-inf"))
    xids0 = _patched(xids, _nones(xids), 0.0)
    util_known = _patched([True] * len(util), util_nones, False) if util_nones else None
    power_known = _patched([True] * len(power), power_nones, False) if power_nones else None
    down = list(compress(range(len(up)), map(not_, up)))

    scan = GpuScan()
    _node_aggregates(scan.nodes, table, util0, util_known, power0, power_known, temp0, xids0)
    # Node rows count whatever a GPU reported, up or not; the Overview only up GPUs.
    scan.power = sum(compress(power0, up))
    scan.power_known = sum(compress(power_known, up)) if power_known else len(up) - len(down)
    is_up = up.__getitem__
    scan.down = [table[g] for g in down]
    scan.xid = [table[g] for g in compress(range(len(up)), col("last_xid")) if is_up(g)]
    hot = compress(range(len(up)), map(ge, temp0, repeat(HOT_CELSIUS)))
    scan.hot = [table[g] for g in hot if is_up(g)]
    throttled = compress(range(len(up)), col("throttle_reasons"))
    scan.throttled = [table[g] for g in throttled if is_up(g)]
    scan.utilization = _patched(util, down, None)
    scan.power_ratio = _power_ratio(power0, power_nones, col("power_limit_watts"), down)
    scan.history_utilization = array("f", _patched(util0, util_nones, NAN))
    scan.history_power = array("f", _patched(power0, power_nones, NAN))
    return scan


def scan_summaries(snapshot: FactorySnapshot) -> GpuScan:
    """A summarized snapshot's scan: per node from its summary, the problem lists from
    the few GPUs it holds, and the heat map's values one per node (in node order)."""
    scan = scan_gpus(snapshot)  # the problem GPUs only: cheap
    nodes: dict[str, NodeAgg] = {}
    power, power_known = 0.0, 0
    utilization: list[float | None] = []
    # 12,500 nodes at 100,000 GPUs: the lookups bound once, not once per node.
    summary_of, add, agg = snapshot.node_summaries.get, utilization.append, NodeAgg
    for node in snapshot.nodes:
        name = node.name
        s = summary_of(name)
        if s is None:  # the scheduler names it, telemetry never saw it
            add(None)
            continue
        up, util, watts = s.gpus_up, s.utilization, s.power_watts
        util_n = up if util is not None else 0
        power_n = up if watts is not None else 0
        nodes[name] = agg(
            (util or 0.0) * util_n,
            util_n,
            watts or 0.0,
            power_n,
            s.temperature_max_celsius,
            s.xid_total or 0.0,
            s.gpus - up,
        )
        power += watts or 0.0
        power_known += power_n
        add(util)
    scan.nodes, scan.power, scan.power_known = nodes, power, power_known
    scan.utilization = utilization
    scan.power_ratio, scan.power_note = _node_power_ratio(snapshot)
    return scan


def _node_power_ratio(snapshot: FactorySnapshot) -> tuple[list[float | None], str]:
    """The power layer from node rollups, one value per node in node order: the power
    sum over the up GPUs' power limits summed (the per-GPU layer's mean, where a node's
    GPUs share one limit). An engine's rollups carry no limit: then watts per up GPU,
    scaled to the highest node's, and a note saying so (real figures, a relative scale)."""
    summaries = snapshot.node_summaries
    rows = [summaries.get(n.name) for n in snapshot.nodes]
    reading = [s for s in rows if s is not None and s.power_watts is not None and s.gpus_up]
    if all(s.power_limit_watts for s in reading):
        return [
            s.power_watts / s.power_limit_watts
            if s is not None and s.power_watts is not None and s.power_limit_watts and s.gpus_up
            else None
            for s in rows
        ], ""
    per_gpu = [
        s.power_watts / s.gpus_up
        if s is not None and s.power_watts is not None and s.gpus_up
        else None
        for s in rows
    ]
    top = max((w for w in per_gpu if w is not None), default=0.0)
    if top <= 0:
        return per_gpu, ""
    note = f"no power limit in the rollups: W per GPU up, {fmt.watts(top)} = top"
    return [None if w is None else w / top for w in per_gpu], note


def _node_aggregates(
    nodes: dict[str, NodeAgg],
    table: GpuColumns,
    util: Sequence[float],
    util_known: Sequence[bool] | None,
    power: Sequence[float],
    power_known: Sequence[bool] | None,
    temp: Sequence[float],
    xids: Sequence[float],
) -> None:
    """Per node, over each run of its GPUs: a few built-ins per node, none per GPU."""
    up = table.column("up")
    for name, lo, hi in table.layout.runs():
        count = hi - lo
        t = max(temp[lo:hi])
        a = NodeAgg(
            sum(util[lo:hi]),
            count if util_known is None else sum(util_known[lo:hi]),
            sum(power[lo:hi]),
            count if power_known is None else sum(power_known[lo:hi]),
            None if t == float("-inf") else t,
            sum(xids[lo:hi]),
            count - sum(up[lo:hi]),
        )
        seen = nodes.get(name)
        if seen is None:
            nodes[name] = a
        else:  # the node's GPUs come in more than one run
            seen.util_sum += a.util_sum
            seen.util_n += a.util_n
            seen.power += a.power
            seen.power_n += a.power_n
            if a.temp_max is not None and (seen.temp_max is None or a.temp_max > seen.temp_max):
                seen.temp_max = a.temp_max
            seen.xids += a.xids
            seen.down_gpus += a.down_gpus


def _power_ratio(
    power: Sequence[float], power_nones: Sequence[int], limit: Sequence[Any], down: Sequence[int]
) -> Sequence[float | None]:
    """Power / power limit per GPU; None where either is unknown (or 0) or the GPU is down."""
    no_limit = list(compress(range(len(limit)), map(not_, limit)))
    ratio: list[float | None] = list(map(truediv, power, _patched(limit, no_limit, 1.0)))
    for g in (*power_nones, *no_limit, *down):
        ratio[g] = None
    return ratio
