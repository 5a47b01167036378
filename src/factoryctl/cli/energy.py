"""``factoryctl energy``: energy by job, user or account over a time range, from Prometheus.

Joules are measured, never estimated from power averages: the exporter's per-job counters
where they exist, otherwise each allocated GPU's energy counter over exactly the part of
the job inside the range. kWh, cost and CO2 are derived with the ``[energy]`` settings.
"""

from __future__ import annotations

from typing import Any

import click

from factoryctl.cli.common import get_env
from factoryctl.durations import parse_time
from factoryctl.energy import joules_to_kwh
from factoryctl.errors import ConfigError, UsageError
from factoryctl.formats import render_csv, render_json, render_table
from factoryctl.views import Column, Row, note_line, sort_rows

GROUPS = ("job", "user", "account", "partition")
# Clocks differ by a little between hosts; "until" slightly ahead of now is not the future.
FUTURE_SLACK = 60.0


def columns(by: str, cost: bool, co2: bool) -> tuple[Column, ...]:
    head = {
        "job": (
            Column("job_id", "JOBID"),
            Column("user", "USER"),
            Column("account", "ACCOUNT"),
            Column("gpus", "GPUS", "int"),
        ),
        "user": (Column("user", "USER"), Column("jobs", "JOBS", "int")),
        "account": (Column("account", "ACCOUNT"), Column("jobs", "JOBS", "int")),
        "partition": (Column("partition", "PARTITION"), Column("jobs", "JOBS", "int")),
    }[by]
    tail = [Column("energy_kwh", "ENERGY", "kwh")]
    if cost:
        tail.append(Column("cost", "COST"))
    if co2:
        tail.append(Column("co2_kg", "CO2 KG"))
    return (*head, *tail)


def time_range(since: str, until: str, now: float) -> tuple[float, float]:
    lo = parse_time(since, now, "--since")
    hi = parse_time(until, now, "--until")
    if lo >= now:
        raise UsageError(f"--since {since!r} is in the future: nothing has been measured yet")
    if hi > now + FUTURE_SLACK:
        raise UsageError(f"--until {until!r} is in the future; use 'now' or an earlier time")
    if lo >= hi:
        raise UsageError(f"empty time range: --since {since!r} is not before --until {until!r}")
    return lo, min(hi, now)


@click.command()
@click.option("--by", type=click.Choice(GROUPS), default="job", show_default=True)
@click.option("--since", default="24h", show_default=True, metavar="TIME", help="2h, or ISO.")
@click.option("--until", default="now", show_default=True, metavar="TIME", help="2h, or ISO.")
@click.option("--user", "users", multiple=True, help="Only jobs of this user (repeatable).")
@click.option("--account", "accounts", multiple=True, help="Only this account (repeatable).")
def energy(
    by: str, since: str, until: str, users: tuple[str, ...], accounts: tuple[str, ...]
) -> None:
    """Energy by job, user, account or partition between --since and --until (kWh)."""
    env = get_env()
    lo, hi = time_range(since, until, env.clock())
    source = env.source()
    report = getattr(source, "energy_report", None)
    if report is None:
        from factoryctl.telemetry.scheduler_source import SchedulerSource

        if isinstance(source, SchedulerSource):
            raise ConfigError(
                "factoryctl energy reads Prometheus: no Prometheus URL configured"
                " (--prometheus URL or [prometheus] url)"
            )
        raise UsageError("factoryctl energy reads Prometheus: pass --prometheus URL (not --demo)")
    limits: list[str] = []  # what the report could not read (accounting down)
    missing: set[str] = set()  # job fields no source here gives (no scheduler: partition)
    jobs, measured = report(lo, hi, warnings=limits, unavailable=missing)
    settings = env.settings.get("energy", {})
    price = float(settings.get("price_per_kwh", 0.0))
    currency = str(settings.get("currency", ""))
    co2_rate = float(settings.get("co2_g_per_kwh", 0.0))
    rows: list[Row] = []
    notes: dict[str, list[str]] = {}  # note -> job ids: one line per note, not per job
    for job in jobs:
        if (users and job.user not in users) or (accounts and job.account not in accounts):
            continue
        e = measured.get(job.job_id)
        joules = e.joules if e is not None else None
        if e is not None and e.note:
            notes.setdefault(e.note, []).append(job.job_id)
        rows.append(
            {
                "job_id": job.job_id,
                # What cannot be known here is null (and in ``unavailable``), never "".
                "user": None if "user" in missing else job.user,
                "account": None if "account" in missing else job.account,
                "partition": None if "partition" in missing else job.partition,
                "gpus": job.gpu_count,
                "jobs": 1,
                "start_time": job.start_time,
                "end_time": job.end_time,
                "energy_joules": joules,
                "method": e.method if e is not None else "none",
                # Where the figure came from (admin-comment: Slurm's record, when
                # Prometheus holds nothing for the job).
                "energy_source": e.method if e is not None and joules is not None else "none",
            }
        )
    warnings = [*limits, *(note_line(ids, note) for note, ids in notes.items())]
    if by != "job":
        rows = _group(rows, by)
    for row in rows:
        joules = row["energy_joules"]
        kwh = None if joules is None else joules_to_kwh(joules)
        row["energy_kwh"] = kwh
        row["cost"] = None if kwh is None or not price else round(kwh * price, 2)
        row["currency"] = currency if price else None
        row["co2_kg"] = None if kwh is None or not co2_rate else kwh * co2_rate / 1000.0
    rows = sort_rows(rows, "-energy_kwh", columns(by, True, True))
    for warning in warnings:
        env.warn(f"warning: {warning}")
    cols = columns(by, bool(price), bool(co2_rate))
    if env.output == "json":
        known = [r["energy_joules"] for r in rows if r["energy_joules"] is not None]
        unknown = sum(r.get("unknown_jobs", r["energy_joules"] is None) for r in rows)
        # A total over unknown values is unknown: null, with what was measured beside it.
        total = None if unknown else sum(known)
        describe = getattr(source, "describe", None)
        unavailable = [k for k, on in (("cost", price), ("co2_kg", co2_rate)) if not on]
        unavailable += sorted(missing & {"user", "account", "partition"})
        doc: dict[str, Any] = {
            "kind": "energy",
            "time": hi,
            "source": describe(hi) if callable(describe) else "",
            "unavailable": unavailable,
            "warnings": warnings,
            "by": by,
            "since": lo,
            "until": hi,
            "total_joules": total,
            "total_kwh": None if total is None else joules_to_kwh(total),
            "measured_joules": sum(known),
            "unknown_jobs": unknown,
            "items": rows,
        }
        env.write(render_json(doc))
    elif env.output == "csv":
        env.write(render_csv(rows))
    else:
        text_rows = [{**r, "cost": _money(r["cost"], currency)} for r in rows]
        env.write(render_table(text_rows, cols, wide=env.output == "wide"))


def _group(rows: list[Row], by: str) -> list[Row]:
    groups: dict[str, Row] = {}
    for row in rows:
        key = row[by] or "(unknown)"
        g = groups.setdefault(key, {by: key, "jobs": 0, "energy_joules": None, "unknown_jobs": 0})
        g["jobs"] += 1
        g["unknown_jobs"] += row["energy_joules"] is None
        g["measured_joules"] = (g.get("measured_joules") or 0.0) + (row["energy_joules"] or 0.0)
    for g in groups.values():
        # A group with a job of unknown energy has an unknown total (null), never a part.
        g["energy_joules"] = None if g["unknown_jobs"] else g["measured_joules"]
    return list(groups.values())


def _money(value: float | None, currency: str) -> str | None:
    return None if value is None else f"{value:.2f} {currency}".strip()
