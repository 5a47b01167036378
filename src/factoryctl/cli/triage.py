"""``factoryctl triage``: one page for on-call, most urgent first."""

from __future__ import annotations

from typing import Any

import click

from factoryctl.cli.common import document, get_env, warn_snapshot
from factoryctl.cli.env import Environment
from factoryctl.durations import parse_duration, parse_time
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.formats import render_csv, render_json, render_table
from factoryctl.model import GPU_TELEMETRY, FactorySnapshot
from factoryctl.telemetry.source import FactorySource
from factoryctl.triage import Alert, Severity, triage, worst
from factoryctl.views import Column

COLUMNS = (
    Column("severity", "SEVERITY"),
    Column("node", "NODE"),
    Column("gpu", "GPU", "int"),
    Column("summary", "PROBLEM"),
    Column("users", "USERS"),
    Column("action", "SUGGESTED ACTION"),
)
EXIT_CODES = {
    Severity.INFO: ExitStatus.OK,
    Severity.WARNING: ExitStatus.TRIAGE_WARNING,
    Severity.CRITICAL: ExitStatus.TRIAGE_CRITICAL,
}


@click.command("triage")
@click.option(
    "--since", metavar="TIME", help="Only XIDs and alerts newer than this (2h, or an ISO time)."
)
@click.option(
    "--drained-hours",
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="A drain by factoryctl becomes a problem after this long.",
)
@click.option(
    "--exit-code",
    is_flag=True,
    help=f"Exit {int(ExitStatus.TRIAGE_WARNING)} on warnings and {int(ExitStatus.TRIAGE_CRITICAL)} "
    "on critical problems (0 when healthy).",
)
def triage_command(since: str | None, drained_hours: str, exit_code: bool) -> int:
    """What is broken, which jobs and users it hurts, and what to do about it.

    A scheduler that could not be read (unreachable, or output not understood) is a
    critical problem; without GPU telemetry, a warning says GPU faults were not checked.
    """
    env = get_env()
    source = env.source()
    snap = _snapshot(env, source)
    warn_snapshot(env, snap)
    alerts: list[Alert] = []
    fetch = getattr(source, "alerts", None)
    if callable(fetch):
        alerts = list(fetch())
    since_ts = parse_time(since, snap.time, "--since") if since else None
    problems = triage(
        snap, alerts, since=since_ts, drained_hours=parse_duration(drained_hours) / 3600
    )
    items: list[dict[str, Any]] = [p.to_dict() for p in problems]
    if env.output == "json":
        env.write(
            render_json(
                document(
                    "triage",
                    snap,
                    status=worst(problems).name.lower() if problems else "healthy",
                    items=items,
                )
            )
        )
    elif env.output == "csv":
        env.write(
            render_csv(
                [
                    {
                        **i,
                        "users": ",".join(i["users"]),
                        "jobs": ",".join(j["job_id"] for j in i["jobs"]),
                    }
                    for i in items
                ]
            )
        )
    elif not problems:
        env.write("healthy: no problems found")
    else:
        rows = [{**i, "users": ",".join(i["users"])} for i in items]
        env.write(render_table(rows, COLUMNS, wide=True))
    return int(EXIT_CODES[worst(problems)]) if exit_code and problems else int(ExitStatus.OK)


def _snapshot(env: Environment, source: FactorySource) -> FactorySnapshot:
    """The source's snapshot; where the scheduler could not be read and nothing else was
    (the scheduler is the only source), an empty one that says so: triage reports it as
    a critical problem (exit 21 with --exit-code), never as "healthy"."""
    try:
        return source.snapshot()
    except FactoryctlError as err:
        if err.status not in (ExitStatus.SCHEDULER_UNREACHABLE, ExitStatus.SCHEDULER_ERROR):
            raise
        return FactorySnapshot(
            time=env.clock(),
            source=str(getattr(getattr(source, "scheduler", None), "name", "scheduler")),
            unavailable=frozenset({GPU_TELEMETRY}),
            warnings=(f"could not read the scheduler: {err.message}",),
            scheduler_error=err.message,
        )
