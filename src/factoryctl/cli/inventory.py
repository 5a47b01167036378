"""Read-only commands: nodes, node, gpus, jobs, job."""

from __future__ import annotations

import click

from factoryctl import hostlists
from factoryctl.cli import fetch
from factoryctl.cli.common import (
    about_jobs,
    document,
    emit_rows,
    get_env,
    sort_option,
    warn_snapshot,
)
from factoryctl.cli.env import Environment
from factoryctl.cli.watch import watch_option
from factoryctl.errors import ConfigError, FactoryctlError, NotFoundError
from factoryctl.formats import format_value, render_json, render_table
from factoryctl.model import GPU_TELEMETRY
from factoryctl.processes import ProcessTable, processes_of
from factoryctl.views import (
    GPU_COLUMNS,
    JOB_COLUMNS,
    NODE_COLUMNS,
    NODE_STATES,
    Column,
    Row,
    filter_rows,
    gpu_rows,
    job_row,
    node_rows,
    sort_rows,
)

# nvidia-smi's process table, plus the job.
PROCESS_COLUMNS = (
    Column("gpu", "GPU", "int"),
    Column("pid", "PID", "int"),
    Column("user", "USER"),
    Column("job_id", "JOB"),
    Column("name", "NAME"),
    Column("memory_bytes", "MEM", "bytes"),
    Column("uuid", "UUID", wide_only=True),
)


def _process_rows(table: ProcessTable) -> list[Row]:
    return [{**r.as_dict(), "job_id": r.job_id or None} for r in table.rows]


def _keys(columns: tuple[Column, ...]) -> str:
    return ", ".join(c.key for c in columns)


@click.command()
@click.argument("hostlist", required=False)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(NODE_STATES),
    help="Only nodes in this state (repeatable).",
)
@sort_option("name", _keys(NODE_COLUMNS))
@watch_option
def nodes(hostlist: str | None, states: tuple[str, ...], sort_key: str) -> None:
    """List nodes: state, reason, GPUs allocated/total, utilization and power."""
    env = get_env()
    snap, rows = fetch.node_rows(env)
    if hostlist:
        wanted = set(hostlists.resolve(hostlist, (n.name for n in snap.nodes)))
        rows = [r for r in rows if r["name"] in wanted]
    rows = sort_rows(filter_rows(rows, state=states), sort_key, NODE_COLUMNS)
    emit_rows(env, "nodes", snap, rows, NODE_COLUMNS)


@click.command()
@click.option("--node", "node_list", metavar="HOSTLIST", help="Only GPUs of these nodes.")
@click.option("--job", "job_id", metavar="ID", help="Only GPUs held by this job.")
@sort_option("node", _keys(GPU_COLUMNS))
@watch_option
def gpus(node_list: str | None, job_id: str | None, sort_key: str) -> None:
    """List GPUs with their job, utilization, memory, power and temperature.

    Needs GPU telemetry: Prometheus (or --demo); the scheduler alone knows no GPU.
    """
    env = get_env()
    snap = fetch.snapshot(env, "gpus")
    if GPU_TELEMETRY in snap.unavailable:
        # The scheduler alone knows GPU counts and allocations (``nodes``, ``job ID``),
        # not the GPUs themselves: no list of rows that are n/a in every column.
        raise ConfigError(
            "factoryctl gpus needs GPU telemetry: no Prometheus URL configured (--prometheus"
            " URL or [prometheus] url); nodes, node, jobs and job work from the scheduler alone"
        )
    wanted = set(hostlists.resolve(node_list, (n.name for n in snap.nodes))) if node_list else None
    rows = gpu_rows(snap, wanted)
    if job_id is not None:
        if snap.job(job_id) is None:
            raise NotFoundError(f"unknown job: {job_id}")
        rows = [r for r in rows if job_id in r["job_ids"].split(",")]
    # Natural order within a node: sort by GPU index first, then by the requested key.
    rows = sort_rows(sort_rows(rows, "gpu", GPU_COLUMNS), sort_key, GPU_COLUMNS)
    snap = about_jobs(snap, (j for r in rows if r["job_ids"] for j in r["job_ids"].split(",")))
    emit_rows(env, "gpus", snap, rows, GPU_COLUMNS)


@click.command()
@click.option("--user", "users", multiple=True, help="Only jobs of this user (repeatable).")
@click.option(
    "--account", "accounts", multiple=True, help="Only jobs of this account (repeatable)."
)
@click.option("--state", "states", multiple=True, help="Only jobs in this state (repeatable).")
@click.option("--node", "node_list", metavar="HOSTLIST", help="Only jobs on these nodes.")
@click.option("--all", "include_finished", is_flag=True, help="Include recently finished jobs.")
@sort_option("-gpus", _keys(JOB_COLUMNS))
@watch_option
def jobs(
    users: tuple[str, ...],
    accounts: tuple[str, ...],
    states: tuple[str, ...],
    node_list: str | None,
    include_finished: bool,
    sort_key: str,
) -> None:
    """List jobs: GPUs held, mean utilization, idle GPUs and energy in kWh."""
    env = get_env()
    snap, rows = fetch.job_rows(
        env, include_finished=include_finished or bool(states), node_names=bool(node_list)
    )
    if node_list:
        wanted = set(hostlists.resolve(node_list, (n.name for n in snap.nodes)))
        rows = [r for r in rows if r["nodes"] and wanted & set(hostlists.expand(r["nodes"]))]
    rows = filter_rows(rows, user=users, account=accounts, state=states)
    snap = about_jobs(snap, (r["job_id"] for r in rows))
    emit_rows(env, "jobs", snap, sort_rows(rows, sort_key, JOB_COLUMNS), JOB_COLUMNS)


def _details(pairs: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in pairs)


def _row_details(row: Row, columns: tuple[Column, ...], unavailable: frozenset[str]) -> str:
    return _details(
        [
            (c.header.title(), format_value(row.get(c.key), c.kind, c.key in unavailable))
            for c in columns
        ]
    )


@click.command()
@click.argument("job_id")
def job(job_id: str) -> None:
    """Show one job: its allocation, occupancy, energy and each of its GPUs."""
    env = get_env()
    snap = env.source().snapshot()
    found = snap.job(job_id)
    if found is None:
        try:
            accounted = fetch.accounted_job(env, snap, job_id)
        except FactoryctlError as err:  # a site without slurmdbd: sacct has nothing to ask
            raise NotFoundError(
                f"unknown job: {job_id} (squeue does not list it, and Slurm's accounting"
                f" could not be asked: {err.message})"
            ) from None
        if accounted is None:
            raise NotFoundError(f"unknown job: {job_id}")
        found, snap = accounted
    snap = about_jobs(snap, [job_id])
    warn_snapshot(env, snap)
    row = job_row(snap, found)
    gpus = [r for r in gpu_rows(snap, set(found.nodes)) if job_id in r["job_ids"].split(",")]
    if env.output == "json":
        blind = GPU_TELEMETRY in snap.unavailable  # null, not an empty list: nothing measured
        # The scheduler's allocation: which GPUs on which node, with or without telemetry.
        allocations = [
            {"node": a.node, "gpus": list(a.gpu_indices), "count": a.count}
            for a in found.allocations
        ]
        doc = document("job", snap, job=row, allocations=allocations)
        doc["gpus"] = None if blind else gpus
        env.write(render_json(doc))
        return
    env.write(_row_details(row, JOB_COLUMNS, snap.unavailable))
    if gpus:
        env.write("")
        env.write(
            render_table(gpus, GPU_COLUMNS, wide=env.output == "wide", unavailable=snap.unavailable)
        )


@click.command()
@click.argument("name")
def node(name: str) -> None:
    """Show one node: state and reason, each GPU, the processes on its GPUs (PID, user,
    job, command, device memory) and the jobs running on it."""
    env = get_env()
    snap = env.source().snapshot()
    hostlists.resolve(name, (n.name for n in snap.nodes))
    snap = about_jobs(snap, (j.job_id for j in snap.jobs_on_node(name)))
    warn_snapshot(env, snap)
    row = next(r for r in node_rows(snap) if r["name"] == name)
    running = [job_row(snap, j) for j in snap.jobs_on_node(name)]
    if GPU_TELEMETRY in snap.unavailable:
        # The scheduler alone: no GPU or process was measured (the warning says why).
        if env.output == "json":
            doc = document("node", snap, node=row, gpus=None, jobs=running)
            doc["processes"], doc["processes_note"] = None, "no GPU telemetry"
            env.write(render_json(doc))
            return
        env.write(_row_details(row, NODE_COLUMNS, snap.unavailable))
        env.write("")
        env.write("GPUS       n/a\nPROCESSES  n/a")
        _write_jobs(env, running, snap.unavailable)
        return
    gpus = gpu_rows(snap, {name})
    # Only this node's processes, and only now that someone asked for this node.
    procs = processes_of(env.source(), name)
    if env.output == "json":
        doc = document("node", snap, node=row, gpus=gpus, jobs=running)
        doc["processes"] = [r.as_dict() for r in procs.rows] if procs.available else None
        doc["processes_note"] = procs.note
        env.write(render_json(doc))
        return
    env.write(_row_details(row, NODE_COLUMNS, snap.unavailable))
    env.write("")
    env.write(
        render_table(gpus, GPU_COLUMNS, wide=env.output == "wide", unavailable=snap.unavailable)
    )
    env.write("")
    if not procs.available:
        env.write("PROCESSES  n/a")
        env.warn(f"note: processes: {procs.note}")
    elif procs.rows:
        rows = _process_rows(procs)
        env.write(render_table(rows, PROCESS_COLUMNS, wide=env.output == "wide"))
    else:
        env.write("PROCESSES  none on its GPUs")
    _write_jobs(env, running, snap.unavailable)


def _write_jobs(env: Environment, running: list[Row], unavailable: frozenset[str]) -> None:
    if running:
        env.write("")
        env.write(
            render_table(running, JOB_COLUMNS, wide=env.output == "wide", unavailable=unavailable)
        )
