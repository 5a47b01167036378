"""One poll's worth of everything the screen shows, built off the event loop.

The poller builds a ``Frame`` in its thread (snapshot, rows, summary, heat-map values,
history) and posts it; the app sets it as its one reactive and widgets only render it.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from factoryctl.model import FactorySnapshot
from factoryctl.tui.gpuscan import GpuScan, scan_gpus, scan_summaries
from factoryctl.tui.history import NAN, History, NodeReadings
from factoryctl.tui.overview import Summary, summarize
from factoryctl.tui.rows import JOB_COLUMNS, Row, job_rows, node_rows


@dataclass(frozen=True, slots=True)
class Frame:
    snapshot: FactorySnapshot
    nodes: tuple[Row, ...]
    jobs: tuple[Row, ...]
    summary: Summary
    gpu_utilization: tuple[float | None, ...]  # node order; None: down or silent
    gpu_power: tuple[float | None, ...]  # power / power limit, same order
    gpus_per_node: int  # 0: the values above are one per node (a summarized snapshot)
    history: History
    fetched_at: float  # clock time the poll finished
    # What ``gpu_power`` holds where it is not power / power limit ("" where it is).
    power_note: str = ""


def build_frame(snapshot: FactorySnapshot, history: History, fetched_at: float) -> Frame:
    summarized = bool(snapshot.node_summaries)
    gpn = 0 if summarized else max((n.gpu_count for n in snapshot.nodes), default=0)
    # The one pass over every GPU, or over every node's summary.
    scan = scan_summaries(snapshot) if summarized else scan_gpus(snapshot)
    jobs = tuple(job_rows(snapshot))
    names = [c.name for c in JOB_COLUMNS]
    idle_column, for_column = names.index("IDLE"), names.index("FOR")
    util_column = names.index("UTIL")
    # The job rows already hold each job's idle GPUs and longest idle spell: the problem
    # list reuses them.
    job_idle = {r.key: int(v) for r in jobs if isinstance(v := r.values[idle_column], float)}
    job_idle_for = {r.key: v for r in jobs if isinstance(v := r.values[for_column], float)}
    job_util = {r.key: v for r in jobs if isinstance(v := r.values[util_column], float)}
    return Frame(
        snapshot=snapshot,
        nodes=tuple(node_rows(snapshot, scan)),
        jobs=jobs,
        summary=summarize(snapshot, job_idle=job_idle, scan=scan, job_idle_for=job_idle_for),
        gpu_utilization=tuple(scan.utilization),
        gpu_power=tuple(scan.power_ratio),
        gpus_per_node=gpn,
        # A summarized poll has no per-GPU samples: node and factory ones only.
        history=history.append(
            snapshot, scan.history_utilization, scan.history_power, node_readings(scan), job_util
        ),
        fetched_at=fetched_at,
        power_note=scan.power_note,
    )


def node_readings(scan: GpuScan) -> NodeReadings:
    """Each node's mean utilization and power sum, and the factory's, from the scan (per
    GPU or from the summaries: the same figures either way)."""
    aggs = scan.nodes.values()
    util_sum = sum(a.util_sum for a in aggs)
    util_n = sum(a.util_n for a in aggs)
    return NodeReadings(
        names=tuple(scan.nodes),
        utilization=array("f", [a.util_sum / a.util_n if a.util_n else NAN for a in aggs]),
        power=array("f", [a.power if a.power_n else NAN for a in aggs]),
        factory_utilization=util_sum / util_n if util_n else None,
        factory_power=scan.power if scan.power_known else None,
    )
