"""The Overview, Node detail and Job detail widgets. They render a ``Frame``; nothing here
computes more than what fits on screen."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from factoryctl.energy import local_midnight
from factoryctl.formats import format_value
from factoryctl.model import GPU, FactorySnapshot
from factoryctl.processes import ProcessTable
from factoryctl.tui import fmt
from factoryctl.tui.frame import Frame
from factoryctl.tui.heatmap import sparkline
from factoryctl.tui.heatmap_widget import HeatMap
from factoryctl.tui.history import JOB_SAMPLES
from factoryctl.tui.overview import CRITICAL, WARNING, Summary
from factoryctl.tui.rows import JOB_COLUMNS

__all__ = ["DetailView", "HeatMap", "OverviewView", "header_text", "job_detail", "node_detail"]

SEVERITY = {CRITICAL: ("CRIT", "bold red"), WARNING: ("WARN", "yellow")}


class OverviewView(Widget):
    DEFAULT_CSS = """
    OverviewView { layout: vertical; }
    OverviewView > Horizontal { height: auto; max-height: 12; }
    OverviewView #totals { width: 44; height: auto; padding: 0 1; }
    OverviewView #problems { width: 1fr; height: auto; padding: 0 1; }
    OverviewView HeatMap { padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Static(id="totals")
            yield Static(id="problems")
        yield HeatMap()

    def show(self, frame: Frame | None) -> None:
        self.query_one("#totals", Static).update(_totals(frame))
        self.query_one("#problems", Static).update(_problems(frame))
        self.query_one(HeatMap).show(frame)


def _totals(frame: Frame | None) -> RenderableType:
    if frame is None:
        return Text("waiting for the first snapshot…", style="dim")
    s = frame.summary
    if not s.node_count:
        return Text("no nodes reported by the source", style="yellow")
    o = s.occupancy
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold")
    grid.add_column()
    states = "  ".join(f"{name} {n}" for name, n in s.nodes_by_state)
    grid.add_row("Nodes", f"{fmt.count(s.node_count)}: {states}")
    grid.add_row("GPUs", f"{fmt.count(o.total)} total, {fmt.count(o.allocated)} allocated")
    grid.add_row("", f"{fmt.count(o.active)} active, {fmt.count(s.down_gpus)} down")
    idle = Text(f"{fmt.count(o.idle_allocated)} idle while allocated")
    if o.idle_allocated:
        idle.stylize("yellow")
    grid.add_row("", idle)
    history = frame.history
    util = history.factory_series("utilization")
    grid.add_row("Util", _trend(fmt.pct(util[-1] if util else None), util, 1.0, "green"))
    grid.add_row("Power", _trend(fmt.watts(s.power_watts), history.factory_series("power")))
    grid.add_row("Energy", _energy_today(s))
    grid.add_row("Jobs", f"{s.jobs_running} running, {s.jobs_pending} pending")
    return grid


# Sparkline cells beside a figure in the Overview's totals (the column is 44 wide), and
# the most polls of a job the history keeps.
TREND = JOB_SAMPLES


def _trend(
    figure: str, values: Sequence[float | None], hi: float | None = None, style: str = "yellow"
) -> Text:
    """A figure and its sparkline over the console's last polls (power: 0 to the highest
    of them, so the shape shows however large the factory)."""
    shown = values[-TREND:]
    top = hi if hi is not None else max((v for v in shown if v is not None), default=0.0)
    text = Text(figure.ljust(6) + " ")
    if len(shown) > 1 and top > 0:
        text.append(sparkline(shown, 0.0, top), style=style)
    return text


def _energy_today(s: Summary) -> str:
    if s.energy_today_joules is None or s.energy_today_since is None:
        # The source cannot say for the factory: what its jobs were measured at.
        return f"{fmt.energy(s.job_energy_joules)} (jobs listed)"
    since = s.energy_today_since
    if since <= local_midnight(since):
        return f"{fmt.energy(s.energy_today_joules)} today"
    return (
        f"{fmt.energy(s.energy_today_joules)} since {time.strftime('%H:%M', time.localtime(since))}"
    )


def _problems(frame: Frame | None) -> RenderableType:
    if frame is None:
        return Text("")
    text = Text("Top problems\n", style="bold")
    if not frame.summary.problems:
        text.append("none", style="green")
    for p in frame.summary.problems:
        label, style = SEVERITY.get(p.severity, ("INFO", "cyan"))
        text.append(f"{label} ", style=style)
        text.append(p.text + "\n")
    text.rstrip()
    return text


class DetailView(VerticalScroll):
    """A scrolling page of text: cheap, since a node has 8 GPUs and a job a few hundred."""

    DEFAULT_CSS = "DetailView { padding: 0 1; } DetailView > Static { width: 100%; }"

    def compose(self) -> ComposeResult:
        yield Static(id="body")

    def set_body(self, renderable: RenderableType) -> None:
        self.query_one("#body", Static).update(renderable)


def _gpu_table(
    frame: Frame,
    keys: list[tuple[str, int]],
    width: int,
    *,
    show_jobs: bool = True,
    lookup: FactorySnapshot | None = None,
) -> Table:
    """``lookup``: where the GPUs are, when not in the frame's snapshot (fetched for a
    detail view of a summarized snapshot)."""
    snap = lookup or frame.snapshot
    spark = max(8, min(frame.history.capacity, (width - 64) // 2))
    table = Table(box=None, padding=(0, 1), header_style="bold", expand=False)
    for name, just in (
        ("NODE", "left"),
        ("GPU", "right"),
        ("UTIL", "right"),
        ("util history", "left"),
        ("POWER", "right"),
        ("power history", "left"),
        ("TEMP", "right"),
        ("MEM", "right"),
        ("XID", "right"),
        ("JOB", "left"),
    ):
        if name == "JOB" and not show_jobs:
            continue
        table.add_column(name, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for node, index in keys:
        gpu = snap.gpu(node, index)
        if gpu is None:
            continue
        util_h = frame.history.series(node, index, "utilization")[-spark:]
        power_h = frame.history.series(node, index, "power")[-spark:]
        limit = gpu.power_limit_watts or max((p for p in power_h if p is not None), default=1.0)
        no_history = Text("n/a", style="dim")
        mem = (
            fmt.pct(gpu.memory_used_bytes / gpu.memory_total_bytes)
            if gpu.memory_used_bytes is not None and gpu.memory_total_bytes
            else fmt.DASH
        )
        xid = f"{gpu.last_xid} ({int(gpu.xid_total or 0)})" if gpu.last_xid else ""
        cells: list[RenderableType] = [
            node,
            str(index),
            fmt.pct(gpu.utilization) if gpu.up else Text("down", style="bold red"),
            Text(sparkline(util_h), style="green") if lookup is None else no_history,
            fmt.watts(gpu.power_watts),
            Text(sparkline(power_h, 0.0, limit), style="yellow") if lookup is None else no_history,
            fmt.celsius(gpu.temperature_celsius),
            mem,
            Text(xid, style="red") if xid else "",
        ]
        if show_jobs:
            cells.append(",".join(gpu.job_ids) or fmt.DASH)
        table.add_row(*cells)
    return table


def _processes(table: ProcessTable | None) -> list[RenderableType]:
    """nvidia-smi's process table plus the job, one block of rows per GPU."""
    if table is None:
        return [Text("Processes: loading…", style="dim")]
    if not table.available:
        return [Text(f"Processes: n/a ({table.note})", style="dim")]
    if not table.rows:
        return [Text("Processes: none on its GPUs", style="dim")]
    procs = Table(box=None, padding=(0, 1), header_style="bold")
    for col, just in (
        ("GPU", "right"),
        ("PID", "right"),
        ("USER", "left"),
        ("JOB", "left"),
        ("NAME", "left"),
        ("MEM", "right"),
    ):
        procs.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    last_gpu = None
    for r in table.rows:
        procs.add_row(
            str(r.gpu) if r.gpu != last_gpu else "",
            str(r.pid),
            r.user or fmt.DASH,
            r.job_id or fmt.DASH,
            r.name or fmt.DASH,
            format_value(r.memory_bytes, "bytes"),
        )
        last_gpu = r.gpu
    return [Text("Processes on its GPUs", style="bold"), procs]


def _detail_gpus(
    frame: Frame, gpus: Sequence[GPU] | None
) -> tuple[FactorySnapshot | None, Text | None]:
    """Where a detail view finds its GPUs: the snapshot itself, or (summarized) the GPUs
    fetched for the view; and what to say while they are not there yet."""
    if not frame.snapshot.node_summaries:
        return None, None
    if gpus is None:
        return FactorySnapshot(time=frame.snapshot.time), Text("GPUs: loading…", style="dim")
    return FactorySnapshot(time=frame.snapshot.time, gpus=tuple(gpus)), None


def node_detail(
    frame: Frame | None,
    name: str,
    width: int,
    processes: ProcessTable | None = None,
    gpus: Sequence[GPU] | None = None,
) -> RenderableType:
    """``gpus``: this node's GPUs, fetched for the view (a summarized snapshot)."""
    if frame is None:
        return Text("waiting for the first snapshot…", style="dim")
    snap = frame.snapshot
    node = snap.node(name)
    if node is None:
        return Text(f"node {name} is not in the current snapshot", style="yellow")
    head = Text()
    head.append(f"{node.name}", style="bold")
    head.append(f"  {node.state.value}")
    held = "n/a" if "gpus_allocated" in snap.unavailable else node.gpus_allocated
    head.append(f"  GPUs {held}/{node.gpu_count} allocated")
    if node.partitions:
        head.append(f"  partitions {','.join(node.partitions)}")
    if node.reason:
        head.append(f"\nreason: {node.reason}", style="yellow")
        if node.reason_time is not None:
            head.append(f" (since {fmt.utc(node.reason_time)})", style="yellow")
    head.append("\n")
    head.append_text(_node_trend(frame, name))
    lookup, loading = _detail_gpus(frame, gpus)
    keys = [g.key for g in (lookup or snap).gpus_of_node(name)]
    jobs = Table(box=None, padding=(0, 1), header_style="bold", title_justify="left")
    for col in ("JOBID", "USER", "GPUS HERE", "RUNTIME", "KWH", "NAME"):
        jobs.add_column(col, no_wrap=True)
    for job in snap.jobs_on_node(name):
        here = sum(a.count for a in job.allocations if a.node == name)
        jobs.add_row(
            job.job_id,
            job.user,
            f"{here}/{job.gpu_count}",
            fmt.duration(job.runtime_seconds(snap.time)),
            fmt.kwh(job.energy_joules),
            job.name,
        )
    table = loading or _gpu_table(frame, keys, width, lookup=lookup)
    parts: list[RenderableType] = [head, Text(""), table]
    if lookup is not None and loading is None:
        parts.append(Text(NO_GPU_HISTORY, style="dim"))
    parts.append(Text(""))
    parts.extend([*_processes(processes), Text("")])
    parts.append(Text("Jobs on this node", style="bold") if jobs.row_count else Text("no jobs"))
    if jobs.row_count:
        parts.append(jobs)
    parts.append(_samples_note(frame))
    return Group(*parts)


def job_detail(
    frame: Frame | None, job_id: str, width: int, gpus: Sequence[GPU] | None = None
) -> RenderableType:
    """``gpus``: the GPUs of this job's (first) nodes, fetched for the view (summarized)."""
    if frame is None:
        return Text("waiting for the first snapshot…", style="dim")
    snap = frame.snapshot
    job = snap.job(job_id)
    if job is None:
        return Text(f"job {job_id} is not in the current snapshot", style="yellow")
    row = next((r for r in frame.jobs if r.key == job_id), None)
    head = Text()
    head.append(f"job {job.job_id}", style="bold")
    head.append(f"  {job.user}  {job.account}  {job.partition}  {job.name}\n")
    head.append(f"state {job.state.value}  GPUs {job.gpu_count}  ")
    head.append(f"runtime {fmt.duration(job.runtime_seconds(snap.time))}  ")
    head.append(f"energy {fmt.energy(job.energy_joules)}")
    if row is not None:
        cell = dict(zip((c.name for c in JOB_COLUMNS), row.cells, strict=True))
        head.append(f"  mean util {cell['UTIL']}  idle GPUs {cell['IDLE']}")
        if cell["FOR"] != fmt.DASH:
            head.append(f" for {cell['FOR']}")
        if cell["FLAG"]:
            head.append(f"  {cell['FLAG']}", style="bold yellow")
    head.append(f"\nnodes {','.join(job.nodes) or fmt.DASH}")
    util = frame.history.job_series(job.job_id)[-TREND:]
    if not job.state.finished:
        head.append("\njob   util ")
        head.append(sparkline(util) or fmt.DASH, style="green")
        head.append(f" {fmt.pct(util[-1] if util else None)} over the console's polls")
    parts: list[RenderableType] = [head, Text("")]
    if job.state.finished:
        parts.append(Text("finished: its GPUs may now belong to other jobs", style="dim"))
    else:
        lookup, loading = _detail_gpus(frame, gpus)
        if lookup is None:
            keys = list(job.gpu_keys())
        else:  # a summarized job holds GPU counts per node: its GPUs say they are its
            keys = [g.key for g in lookup.gpus if job.job_id in g.job_ids]
        parts.append(loading or _gpu_table(frame, keys, width, show_jobs=False, lookup=lookup))
        if lookup is not None and loading is None:
            parts.append(Text(NO_JOB_GPU_HISTORY, style="dim"))
    parts.append(_samples_note(frame))
    return Group(*parts)


def _node_trend(frame: Frame, name: str) -> Text:
    """The node's mean utilization and power over the console's polls: from its GPUs'
    readings or its rollups, the same figures."""
    util = frame.history.node_series(name, "utilization")[-TREND:]
    power = frame.history.node_series(name, "power")[-TREND:]
    top = max((p for p in power if p is not None), default=0.0)
    text = Text("node  util ")
    text.append(sparkline(util) or fmt.DASH, style="green")
    text.append(f" {fmt.pct(util[-1] if util else None)}  power ")
    text.append((sparkline(power, 0.0, top) if top > 0 else "") or fmt.DASH, style="yellow")
    text.append(f" {fmt.watts(power[-1] if power else None)}")
    return text


# Said under a summarized snapshot's GPU table, whose history columns read n/a: the
# polls read node rollups, and these GPUs are fetched for the view alone.
NO_GPU_HISTORY = "per-GPU history n/a: the polls read node rollups (node history above)"
NO_JOB_GPU_HISTORY = "per-GPU history n/a: the polls read node rollups (see each node's detail)"


def _samples_note(frame: Frame) -> Text:
    n = len(frame.history.samples)
    return Text(f"\nhistory: last {n} poll(s), kept by this console", style="dim")


def header_text(snap: FactorySnapshot | None) -> str:
    if snap is None:
        return "factoryctl top"
    return f"factoryctl top · {snap.source or 'source'} · {fmt.utc(snap.time)}"
