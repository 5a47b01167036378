"""One poll's worth of everything the screen shows, built off the event loop.

The poller builds a ``Frame`` in its thread (snapshot, rows, summary, heat-map values,
history) and posts it; the app sets it as its one reactive and widgets only render it.
The table rows (12,500 nodes and ~6,800 jobs at 100,000 GPUs: ~0.1 s of a poll's CPU)
are built only for a view that shows them: a frame without them (``rows=False``) gets
them from ``with_rows`` when such a view is shown, and is otherwise the same frame.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from factoryctl.model import FactorySnapshot
from factoryctl.tui.gpuscan import GpuScan, NodeAgg, scan_gpus, scan_summaries
from factoryctl.tui.history import NAN, History, NodeReadings
from factoryctl.tui.overview import Summary, summarize
from factoryctl.tui.rows import Row, job_figures, job_rows, node_rows


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
    # False: ``nodes`` and ``jobs`` are empty because they were not built (``with_rows``),
    # not because the factory has none.
    rows_built: bool = True
    # Each node's aggregates from the frame's one GPU pass, kept only while the rows are
    # not built: what ``with_rows`` builds the node rows from without a second pass.
    node_aggs: Mapping[str, NodeAgg] = field(default_factory=dict, compare=False, repr=False)


def build_frame(
    snapshot: FactorySnapshot, history: History, fetched_at: float, rows: bool = True
) -> Frame:
    """``rows=False``: no table rows (``nodes``, ``jobs`` empty); all else the same."""
    summarized = bool(snapshot.node_summaries)
    gpn = 0 if summarized else max((n.gpu_count for n in snapshot.nodes), default=0)
    # The one pass over every GPU, or over every node's summary.
    scan = scan_summaries(snapshot) if summarized else scan_gpus(snapshot)
    # Each job's idle GPUs and longest idle spell (the problem list) and mean utilization
    # (the history): the Jobs view's figures, computed whether or not its rows are built.
    figures = [job_figures(snapshot, job) for job in snapshot.jobs]
    job_util: dict[str, float] = {}
    job_idle: dict[str, int] = {}
    job_idle_for: dict[str, float] = {}
    for job, (mean, idle, spell) in zip(snapshot.jobs, figures, strict=True):
        if mean is not None:
            job_util[job.job_id] = mean
        if idle is not None:
            job_idle[job.job_id] = idle
        if spell is not None:
            job_idle_for[job.job_id] = spell
    return Frame(
        snapshot=snapshot,
        nodes=tuple(node_rows(snapshot, scan)) if rows else (),
        jobs=tuple(job_rows(snapshot, figures)) if rows else (),
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
        rows_built=rows,
        node_aggs={} if rows else scan.nodes,
    )


def with_rows(frame: Frame) -> Frame:
    """The same frame with its table rows: what ``build_frame(..., rows=True)`` gives."""
    if frame.rows_built:
        return frame
    snapshot = frame.snapshot
    return replace(
        frame,
        nodes=tuple(node_rows(snapshot, GpuScan(nodes=dict(frame.node_aggs)))),
        jobs=tuple(job_rows(snapshot)),
        rows_built=True,
        node_aggs={},
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
