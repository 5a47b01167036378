"""``factoryctl maintenance create|list|delete`` (MAINT reservations) and ``factoryctl audit``."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from factoryctl.actions.audit import summarize
from factoryctl.actions.outcome import Request, operator
from factoryctl.actions.plan import Verb
from factoryctl.actions.timespec import parse_duration, parse_start
from factoryctl.cli.actions import action_options, audit_log, run_action
from factoryctl.cli.common import get_env
from factoryctl.formats import render_csv, render_json, render_table
from factoryctl.views import Column

RESERVATION_COLUMNS = (
    Column("name", "NAME"),
    Column("state", "STATE"),
    Column("start", "START"),
    Column("end", "END"),
    Column("nodes", "NODES"),
    Column("flags", "FLAGS"),
)
AUDIT_COLUMNS = (
    Column("when", "TIME"),
    Column("id", "ID"),
    Column("user", "USER"),
    Column("verb", "ACTION"),
    Column("nodes", "NODES"),
    Column("status", "STATUS"),
    Column("reason", "REASON"),
)


def _local(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


@click.group()
def maintenance() -> None:
    """Maintenance windows: Slurm MAINT reservations (Flags=MAINT,IGNORE_JOBS)."""


@maintenance.command("create")
@click.option("--nodes", "nodes", required=True, metavar="HOSTLIST", help="Nodes in the window.")
@click.option("--start", default="now", show_default=True, help="now, now+2h, ISO time or epoch.")
@click.option("--duration", required=True, help="e.g. 4h, 90m, 1d.")
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@click.option("--name", default="", help="Reservation name (default maint-USER-TIME).")
@click.option("--users", default="root", show_default=True, help="Users allowed in the window.")
@action_options
def create(
    nodes: str,
    start: str,
    duration: str,
    reason: str,
    name: str,
    users: str,
    yes: bool,
    dry_run: bool,
    force: bool,
) -> int:
    """Create a maintenance window on NODES."""
    env = get_env()
    user = operator(env.environ)
    start_time = parse_start(start, env.clock())
    seconds = parse_duration(duration)
    name = name or f"maint-{user}-{time.strftime('%Y%m%dT%H%M%S', time.localtime(env.clock()))}"
    params: dict[str, Any] = {
        "name": name,
        "start_time": start_time,
        "duration_seconds": seconds,
        "users": [u for u in users.split(",") if u],
    }
    request = Request(Verb.MAINTENANCE, nodes, reason, user, force, params)
    return run_action(request, yes, dry_run)


@maintenance.command("list")
def list_() -> None:
    """List reservations (maintenance windows first)."""
    env = get_env()
    items = sorted(env.scheduler().reservations(), key=lambda r: (not r.maintenance, r.start_time))
    rows = [
        {
            "name": r.name,
            "state": r.state.lower(),
            "start": _local(r.start_time),
            "end": _local(r.end_time),
            "start_time": r.start_time,
            "end_time": r.end_time,
            "nodes": ",".join(r.nodes) if len(r.nodes) < 4 else _collect(r.nodes),
            "node_list": list(r.nodes),
            "flags": ",".join(r.flags),
            "maintenance": r.maintenance,
            "users": list(r.users),
        }
        for r in items
    ]
    if env.output == "json":
        env.write(render_json({"kind": "reservations", "time": env.clock(), "items": rows}))
    elif env.output == "csv":
        env.write(render_csv(rows))
    elif rows:
        env.write(render_table(rows, RESERVATION_COLUMNS))
    else:
        env.stderr.write("factoryctl: no reservations\n")


def _collect(nodes: tuple[str, ...]) -> str:
    from factoryctl import hostlists

    return hostlists.collect(nodes)


@maintenance.command("delete")
@click.argument("name")
@click.option("--reason", default="", help="Why (recorded in the audit log).")
@action_options
def delete(name: str, reason: str, yes: bool, dry_run: bool, force: bool) -> int:
    """Delete the reservation NAME (its nodes go back into service)."""
    env = get_env()
    request = Request(
        Verb.MAINTENANCE_DELETE, "", reason, operator(env.environ), force, {"name": name}
    )
    return run_action(request, yes, dry_run)


@click.command()
@click.option("-n", "--limit", default=20, show_default=True, help="Show the last N actions.")
@click.option("--raw", is_flag=True, help="Print the raw JSON lines records.")
def audit(limit: int, raw: bool) -> None:
    """The audit log: who changed what, when, why, and how it ended."""
    env = get_env()
    log = audit_log(env)
    records = log.records()
    if raw:
        for rec in records[-limit:] if limit else records:
            env.write(json.dumps(rec, sort_keys=True))
        return
    refused = [dict(r, status="refused") for r in records if r.get("event") == "refused"]
    actions = sorted(summarize(records) + refused, key=lambda r: float(r.get("time", 0)))
    actions = actions[-limit:] if limit else actions
    if env.output == "json":
        env.write(render_json({"kind": "audit", "path": str(log.path), "items": actions}))
        return
    rows = [
        {
            "when": _local(float(a.get("time", 0))),
            "id": a.get("id", ""),
            "user": a.get("user", ""),
            "verb": a.get("verb", ""),
            "nodes": a.get("nodes", ""),
            "status": a.get("status", ""),
            "reason": a.get("reason", ""),
        }
        for a in actions
    ]
    if rows:
        env.write(render_table(rows, AUDIT_COLUMNS))
    else:
        env.stderr.write(f"factoryctl: the audit log {log.path} is empty\n")
