"""Table rows for the Nodes and Jobs views, built, sorted and filtered without Textual.

Rows carry both the text the table prints and the raw values it sorts on, so sorting
by power sorts watts and not strings. They are built once per poll (in the poller's
thread) and the table only renders the visible window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from factoryctl.model import FactorySnapshot, Job, JobState
from factoryctl.occupancy import ACTIVE_THRESHOLD, cap_idle
from factoryctl.triage import Problem
from factoryctl.tui import fmt
from factoryctl.tui.commands import RowFilter
from factoryctl.tui.gpuscan import GpuScan, NodeAgg, scan_gpus

SortValue = float | str | None


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    width: int  # 0: takes what is left
    sort_key: str  # the (upper-case) key that sorts on this column
    right: bool = False
    descending_first: bool = False  # numbers: biggest first is what one looks for


@dataclass(frozen=True, slots=True)
class Row:
    key: str  # node name or job id
    cells: tuple[str, ...]
    values: tuple[SortValue, ...]
    style: str = ""  # a style for the whole row (e.g. a down node)
    haystack: str = ""  # what the "/" filter searches

    @property
    def text(self) -> str:
        return self.haystack or " ".join(self.cells)


NODE_COLUMNS = (
    Column("NAME", 10, "N"),
    Column("STATE", 9, "S"),
    Column("GPUS", 5, "G", right=True, descending_first=True),
    Column("UTIL", 5, "U", right=True, descending_first=True),
    Column("POWER", 7, "P", right=True, descending_first=True),
    Column("TEMP", 5, "T", right=True, descending_first=True),
    Column("XID", 4, "X", right=True, descending_first=True),
    Column("REASON", 0, "R"),
)

JOB_COLUMNS = (
    Column("JOBID", 8, "J"),
    Column("USER", 8, "U"),
    Column("STATE", 9, "S"),
    Column("GPUS", 5, "G", right=True, descending_first=True),
    Column("RUNTIME", 8, "R", right=True, descending_first=True),
    Column("UTIL", 5, "M", right=True, descending_first=True),
    Column("IDLE", 4, "I", right=True, descending_first=True),
    Column("FOR", 7, "D", right=True, descending_first=True),  # the longest idle spell
    Column("KWH", 7, "E", right=True, descending_first=True),
    Column("FLAG", 9, "F"),
    Column("NAME", 0, "N"),
)

TRIAGE_COLUMNS = (
    Column("SEV", 4, "V", descending_first=True),
    Column("KIND", 16, "K"),
    Column("NODE", 10, "N"),
    Column("GPU", 3, "G", right=True),
    Column("USERS", 12, "U"),
    Column("SUMMARY", 0, "S"),
)
SEVERITY_LABEL = {0: ("info", "cyan"), 1: ("warn", "yellow"), 2: ("crit", "bold red")}

STATE_STYLE = {
    "down": "bold red",
    "rebooting": "magenta",
    "draining": "yellow",
    "drained": "yellow",
    "maint": "cyan",
    "unknown": "red",
}


def node_rows(snapshot: FactorySnapshot, scan: GpuScan | None = None) -> list[Row]:
    """One row per node from per-node aggregates (``scan``: the frame's one GPU pass)."""
    agg = (scan or scan_gpus(snapshot)).nodes
    rows = []
    empty = NodeAgg()
    # No scheduler and no attribution: state and allocation are unknown (n/a), not 0.
    no_alloc = "gpus_allocated" in snapshot.unavailable
    no_state = "state" in snapshot.unavailable
    for node in snapshot.nodes:
        a = agg.get(node.name, empty)
        util = a.util_sum / a.util_n if a.util_n else None
        power = a.power if a.power_n else None
        gpus = f"{'n/a' if no_alloc else node.gpus_allocated}/{node.gpu_count}"
        reason = node.reason
        state = node.state.value  # once: an enum's .value is a descriptor call
        if no_state and state == "unknown":
            state = "n/a"
        if a.down_gpus and node.state.in_service:
            reason = reason or f"{a.down_gpus} GPU(s) lost"
        cells = (
            node.name,
            state,
            gpus,
            fmt.pct(util),
            fmt.watts(power),
            fmt.celsius(a.temp_max),
            str(int(a.xids)) if a.xids else "",
            reason,
        )
        values: tuple[SortValue, ...] = (
            node.name,
            state,
            None if no_alloc else float(node.gpus_allocated),
            util,
            power,
            a.temp_max,
            a.xids,
            reason,
        )
        rows.append(Row(node.name, cells, values, STATE_STYLE.get(state, "")))
    return rows


def efficiency_flag(mean: float | None, idle: int, gpus: int) -> str:
    """The word an operator scans the Jobs view for: GPUs held and not used."""
    if mean is None or gpus == 0:
        return ""
    if mean < ACTIVE_THRESHOLD:
        return "IDLE"
    if idle:
        return "IDLE-GPUS"
    if mean < 0.30:
        return "LOW"
    return ""


# A job's (mean utilization, idle GPUs, longest idle spell): the Jobs view's UTIL, IDLE
# and FOR, and what the Overview's problems and the history read of each job.
JobFigures = tuple[float | None, int | None, float | None]


def job_rows(snapshot: FactorySnapshot, figures: Sequence[JobFigures] | None = None) -> list[Row]:
    """``figures``: ``job_figures`` of each job in snapshot order, where the caller has
    them (the frame computes them whether or not it builds rows)."""
    if figures is None:
        figures = [job_figures(snapshot, job) for job in snapshot.jobs]
    return [_job_row(snapshot, job, f) for job, f in zip(snapshot.jobs, figures, strict=True)]


def job_figures(snapshot: FactorySnapshot, job: Job) -> JobFigures:
    """(mean utilization, idle GPUs, longest idle spell capped at the job's runtime); all
    None for a job not running, idle 0 and the others None for a running one with no GPU
    reporting."""
    mean: float | None = None
    idle: int | None = None
    spell: float | None = None
    if job.state is JobState.RUNNING and snapshot.node_summaries:
        # A summarized poll: the job's rollups, summed over its nodes by the source.
        summary = snapshot.job_summaries.get(job.job_id)
        if summary is not None:
            mean, idle, spell = summary.mean_utilization, summary.idle_gpus, summary.idle_seconds
        else:
            idle = 0  # as job_utilization: no GPU reporting, none counted idle
    elif job.state is JobState.RUNNING:
        mean, idle, spell = job_utilization(snapshot, job)
    if spell is not None:
        spell = cap_idle(spell, job, snapshot.time)
    return mean, idle, spell


def _job_row(snapshot: FactorySnapshot, job: Job, figures: JobFigures) -> Row:
    mean, idle, spell = figures
    gpu_count = job.gpu_count
    state = job.state.value
    flag = efficiency_flag(mean, idle or 0, gpu_count)
    runtime = job.runtime_seconds(snapshot.time)
    cells = (
        job.job_id,
        job.user,
        state,
        str(gpu_count),
        fmt.duration(runtime),
        fmt.pct(mean),
        fmt.DASH if idle is None else str(idle),
        fmt.DASH if not spell else fmt.duration(spell),
        fmt.kwh(job.energy_joules),
        flag,
        job.name,
    )
    numeric_id: SortValue = float(job.job_id) if job.job_id.isdigit() else job.job_id
    values: tuple[SortValue, ...] = (
        numeric_id,
        job.user,
        state,
        float(gpu_count),
        runtime,
        mean,
        None if idle is None else float(idle),
        spell,
        job.energy_joules,
        flag,
        job.name,
    )
    style = "yellow" if flag else ("dim" if job.state.finished else "")
    return Row(job.job_id, cells, values, style, " ".join((*cells, job.account)))


def job_utilization(snapshot: FactorySnapshot, job: Job) -> tuple[float | None, int, float | None]:
    """(mean utilization, idle GPUs, longest idle spell) over the job's reporting GPUs.

    The same definition as ``occupancy.job_occupancy`` without the percentile, memory
    and power it also computes: this runs for every job on every poll, so it reads the
    utilization column at the job's positions instead of building its GPU objects.
    """
    table = snapshot.columns()
    util, up, spells = table.column("utilization"), table.column("up"), table.column("idle_seconds")
    positions = [p for p in table.job_positions(job) if up[p] and util[p] is not None]
    if not positions:
        return None, 0, None
    known = [util[p] for p in positions]
    spell = [s for p in positions if (s := spells[p]) is not None]
    return (
        sum(known) / len(known),
        sum(1 for u in known if u < ACTIVE_THRESHOLD),
        max(spell) if spell else None,
    )


def triage_rows(problems: Sequence[Problem]) -> list[Row]:
    """One row per triage problem; the key is the problem's position in ``problems``."""
    rows = []
    for i, p in enumerate(problems):
        label, style = SEVERITY_LABEL.get(int(p.severity), ("?", ""))
        users = ",".join(sorted({u for _, u in p.jobs}))
        cells = (
            label,
            p.kind,
            p.node or "",
            "" if p.gpu is None else str(p.gpu),
            users,
            p.summary,
        )
        values: tuple[SortValue, ...] = (
            float(p.severity),
            p.kind,
            p.node or "",
            None if p.gpu is None else float(p.gpu),
            users,
            p.summary,
        )
        haystack = " ".join((*cells, p.action, *(j for j, _ in p.jobs)))
        rows.append(Row(str(i), cells, values, style if int(p.severity) == 2 else "", haystack))
    return rows


def sort_rows(rows: Sequence[Row], column: int, descending: bool) -> list[Row]:
    """Stable sort on one column; unknown values (None) always sink to the bottom."""
    known = [r for r in rows if r.values[column] is not None]
    unknown = [r for r in rows if r.values[column] is None]

    def key(r: Row) -> tuple[int, float | str]:
        v = r.values[column]
        # Mixed numeric/text columns (job ids like "123_4") sort numbers first.
        return (0, v) if isinstance(v, float) else (1, str(v))

    known.sort(key=key, reverse=descending)
    return known + unknown


def filter_rows(rows: Sequence[Row], row_filter: RowFilter) -> list[Row]:
    if row_filter.pattern is None:
        return list(rows)
    keep: Callable[[str], bool] = row_filter.keep
    return [r for r in rows if keep(r.text)]
