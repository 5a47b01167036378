"""Tabular views of a snapshot: rows in base units, shared by the CLI and the console.

A row is a plain dict whose values stay in base units (or None for "cannot say"), so
JSON output is exact and stable; ``formats`` turns them into text only at the edge.
Filtering by field value and sorting live here too (the console's regex filter is its own,
in ``factoryctl.tui.rows``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from factoryctl.energy import joules_to_kwh
from factoryctl.hostlists import collect, numbered
from factoryctl.model import FactorySnapshot, Job, NodeState
from factoryctl.occupancy import job_occupancy, mean_utilization, node_power

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    header: str
    kind: str = "text"  # text | int | ratio | watts | joules | kwh | bytes | celsius | time | duration | spell
    wide_only: bool = False


NODE_COLUMNS = (
    Column("name", "NODE"),
    Column("state", "STATE"),
    Column("gpus_allocated", "ALLOC", "int"),
    Column("gpus_total", "GPUS", "int"),
    Column("utilization", "UTIL", "ratio"),
    Column("power_watts", "POWER", "watts"),
    Column("temperature_max_celsius", "TEMP", "celsius", wide_only=True),
    Column("xid_total", "XIDS", "int", wide_only=True),
    Column("partitions", "PARTITION", wide_only=True),
    Column("reason", "REASON"),
)

GPU_COLUMNS = (
    Column("node", "NODE"),
    Column("gpu", "GPU", "int"),
    Column("up", "UP"),
    Column("job_ids", "JOB"),
    Column("utilization", "UTIL", "ratio"),
    Column("memory_used_bytes", "MEM", "bytes"),
    Column("power_watts", "POWER", "watts"),
    Column("temperature_celsius", "TEMP", "celsius"),
    Column("sm_clock_hz", "SM CLOCK", "hertz", wide_only=True),
    Column("throttle_reasons", "THROTTLE", wide_only=True),
    Column("last_xid", "LAST XID", "int", wide_only=True),
    Column("uuid", "UUID", wide_only=True),
)

JOB_COLUMNS = (
    Column("job_id", "JOBID"),
    Column("user", "USER"),
    Column("account", "ACCOUNT", wide_only=True),
    Column("partition", "PARTITION", wide_only=True),
    Column("name", "NAME", wide_only=True),
    Column("state", "STATE"),
    Column("gpus", "GPUS", "int"),
    Column("runtime_seconds", "RUNTIME", "duration"),
    Column("mean_utilization", "UTIL", "ratio"),
    Column("low_utilization", "P10 UTIL", "ratio", wide_only=True),
    Column("min_utilization", "MIN UTIL", "ratio", wide_only=True),
    Column("idle_gpus", "IDLE", "int"),
    Column("idle_seconds", "IDLE FOR", "spell"),
    Column("power_watts", "POWER", "watts", wide_only=True),
    Column("energy_kwh", "ENERGY", "kwh"),
    Column("nodes", "NODES"),
)


def node_rows(snapshot: FactorySnapshot) -> list[Row]:
    rows = []
    no_state = "state" in snapshot.unavailable
    no_alloc = "gpus_allocated" in snapshot.unavailable
    for node in snapshot.nodes:
        gpus = snapshot.gpus_of_node(node.name)
        temps = [g.temperature_celsius for g in gpus if g.temperature_celsius is not None]
        xids = [g.xid_total for g in gpus if g.xid_total is not None]
        rows.append(
            {
                "name": node.name,
                # Unknown (no scheduler, no attribution): null, never a guessed "idle"/0;
                # a node whose exporter is silent is still down, which telemetry knows.
                "state": None if no_state and node.state is NodeState.UNKNOWN else node.state.value,
                "reason": node.reason,
                "reason_time": node.reason_time,
                "partitions": ",".join(node.partitions),
                "gpus_total": node.gpu_count or len(gpus),
                "gpus_allocated": None if no_alloc else node.gpus_allocated,
                "utilization": mean_utilization(gpus),
                "power_watts": node_power(gpus),
                "temperature_max_celsius": max(temps) if temps else None,
                "xid_total": int(sum(xids)) if xids else None,
            }
        )
    return rows


def gpu_rows(snapshot: FactorySnapshot, nodes: set[str] | None = None) -> list[Row]:
    throttle_unknown = "throttle_reasons" in snapshot.unavailable
    return [
        {
            "node": g.node,
            "gpu": g.index,
            "uuid": g.uuid,
            "model": g.model,
            "up": g.up,
            "job_ids": ",".join(g.job_ids),
            "utilization": g.utilization,
            "memory_utilization": g.memory_utilization,
            "memory_used_bytes": g.memory_used_bytes,
            "memory_total_bytes": g.memory_total_bytes,
            "power_watts": g.power_watts,
            "power_limit_watts": g.power_limit_watts,
            "energy_joules": g.energy_joules,
            "temperature_celsius": g.temperature_celsius,
            "sm_clock_hz": g.sm_clock_hz,
            # dcgm-exporter cannot say (n/a), nor can a GPU that is not reporting: null.
            "throttle_reasons": None
            if throttle_unknown or not g.up
            else ",".join(g.throttle_reasons),
            "ecc_uncorrected_total": g.ecc_uncorrected_total,
            "xid_total": g.xid_total,
            "last_xid": g.last_xid,
        }
        for g in snapshot.gpus
        if nodes is None or g.node in nodes
    ]


def job_note_lines(notes: Mapping[str, str], job_ids: Iterable[str]) -> list[str]:
    """One warning line per distinct note about the given jobs (the ones a view shows):
    identical notes collapse into one line naming the jobs."""
    by_note: dict[str, list[str]] = {}
    for job_id in dict.fromkeys(job_ids):
        note = notes.get(job_id)
        if note:
            by_note.setdefault(note, []).append(job_id)
    return [note_line(ids, note) for note, ids in by_note.items()]


def note_line(job_ids: Sequence[str], note: str) -> str:
    if len(job_ids) == 1:
        return f"job {job_ids[0]}: {note}"
    shown = ", ".join(job_ids[:5]) + (", ..." if len(job_ids) > 5 else "")
    return f"{len(job_ids)} jobs ({shown}): {note}"


def job_identity(job: Job, now: float) -> Row:
    """The fields of a job row that come from the scheduler, whatever the telemetry source."""
    return {
        "job_id": job.job_id,
        "user": job.user,
        "account": job.account,
        "partition": job.partition,
        "name": job.name,
        "state": job.state.value,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "runtime_seconds": job.runtime_seconds(now),
        "gpus": job.gpu_count,
        "nodes": collect(job.nodes) if job.nodes else "",
    }


def job_row(snapshot: FactorySnapshot, job: Job) -> Row:
    occ = job_occupancy(job, snapshot.gpus_of_job(job), now=snapshot.time)
    running = not job.state.finished
    return {
        **job_identity(job, snapshot.time),
        # Utilization and power describe the present: only for jobs still running.
        "mean_utilization": occ.mean_utilization if running else None,
        "low_utilization": occ.low_utilization if running else None,
        "min_utilization": occ.min_utilization if running else None,
        # No GPU of the job reporting (no telemetry, exporters down): how many idle is unknown.
        "idle_gpus": occ.idle_gpus if running and occ.reporting else None,
        "idle_seconds": occ.idle_seconds if running else None,
        "memory_used_bytes": occ.memory_used_bytes if running else None,
        "power_watts": occ.power_watts if running else None,
        "energy_joules": job.energy_joules,
        "energy_kwh": None if job.energy_joules is None else joules_to_kwh(job.energy_joules),
        "energy_source": job.energy_source or "none",
    }


def job_rows(snapshot: FactorySnapshot, include_finished: bool = False) -> list[Row]:
    return [job_row(snapshot, j) for j in snapshot.jobs if include_finished or not j.state.finished]


# -- filters and sorting --------------------------------------------------------------------
def filter_rows(rows: Iterable[Row], **equals: Iterable[str] | None) -> list[Row]:
    """Keep rows whose field is one of the given values (None: no constraint)."""
    wanted = {k: set(v) for k, v in equals.items() if v}
    return [r for r in rows if all(str(r.get(k)) in vals for k, vals in wanted.items())]


def sort_rows(rows: list[Row], key: str, columns: Sequence[Column]) -> list[Row]:
    """Sort by ``key`` (``-key`` for descending); unknown values (None) always last."""
    descending = key.startswith("-")
    name = key.lstrip("-")
    if name not in {c.key for c in columns} and (not rows or name not in rows[0]):
        from factoryctl.errors import UsageError

        valid = ", ".join(c.key for c in columns)
        raise UsageError(f"cannot sort by {name!r}; valid keys: {valid}")
    present = [r for r in rows if r.get(name) is not None]
    missing = [r for r in rows if r.get(name) is None]
    natural = isinstance(present[0][name] if present else "", str)
    if natural and numbered([r[name] for r in present]) is not None:
        natural = False  # gpu00001..gpu12500: string order is natural order, ~8x cheaper
    sort_key: Callable[[Row], Any] = (
        (lambda r: _natural(r[name])) if natural else (lambda r: r[name])
    )
    present.sort(key=sort_key, reverse=descending)
    return present + missing


_DIGITS = re.compile(r"(\d+)")


def _natural(value: str) -> list[Any]:
    # gpu2 before gpu10, job 999 before 1000.
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(value)]


NODE_STATES = tuple(s.value for s in NodeState)
