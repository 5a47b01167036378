"""Cluster-changing commands: drain, resume, reboot (maintenance and audit live beside).

Every one shows its plan first, asks for confirmation on a TTY (``--yes`` otherwise),
honours ``--dry-run``, logs to the audit log and returns a distinct exit status. The plan
and the results are data (stdout); confirmation prompts and progress are diagnostics
(stderr), so ``-o json`` output stays parseable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from factoryctl.actions.audit import AuditLog, default_audit_path
from factoryctl.actions.execute import execute, prepare, record_refusal
from factoryctl.actions.guards import BlastRadius, RefusedError, refusal_error
from factoryctl.actions.outcome import Outcome, Request, operator
from factoryctl.actions.plan import Plan, Step, Verb
from factoryctl.actions.timespec import parse_duration
from factoryctl.actions.waiting import wait
from factoryctl.cli.common import get_env
from factoryctl.cli.env import Environment
from factoryctl.errors import ExitStatus
from factoryctl.formats import render_csv, render_json, render_table
from factoryctl.views import Column

PLAN_COLUMNS = (
    Column("name", "NODE"),
    Column("state", "STATE"),
    Column("gpus", "GPUS"),
    Column("jobs", "JOBS"),
    Column("step", "ACTION"),
    Column("note", "NOTE"),
)
JOB_COLUMNS = (
    Column("job_id", "JOB"),
    Column("user", "USER"),
    Column("name", "NAME"),
    Column("gpus", "GPUS", "int"),
    Column("nodes", "NODES"),
    Column("effect", "WHAT HAPPENS"),
)
RESULT_COLUMNS = (
    Column("name", "NODE"),
    Column("result", "RESULT"),
    Column("state", "STATE NOW"),
)


def action_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in (
        click.option(
            "--force", is_flag=True, help="Override the blast-radius and ownership guards."
        ),
        click.option("--dry-run", is_flag=True, help="Print the plan; change nothing."),
        click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (scripts)."),
    ):
        func = option(func)
    return func


def audit_log(env: Environment) -> AuditLog:
    configured = str(env.settings["actions"].get("audit_log") or "")
    path = Path(configured).expanduser() if configured else default_audit_path(env.environ)
    return AuditLog(path)


def blast_radius(env: Environment) -> BlastRadius:
    a = env.settings["actions"]
    return BlastRadius(ratio=float(a["blast_radius_ratio"]), max_nodes=int(a["blast_radius_nodes"]))


def render_plan(plan: Plan) -> str:
    verb = plan.verb.value
    acting = len(plan.targets)
    head = f"{verb}: {acting} of {len(plan.nodes)} node(s) will change"
    if plan.stored_reason:
        head += f"; reason stored as {plan.stored_reason!r}"
    rows = [
        {
            "name": n.name,
            "state": n.state.value,
            "gpus": f"{n.gpus_allocated}/{n.gpus}",
            "jobs": ",".join(n.jobs) or "-",
            "step": verb if n.step is Step.ACT else n.step.value,
            "note": n.note,
        }
        for n in plan.nodes
    ]
    parts = [head, render_table(rows, PLAN_COLUMNS)]
    if plan.jobs:
        job_rows = [
            {
                "job_id": j.job_id,
                "user": j.user,
                "name": j.name,
                "gpus": j.gpus,
                "nodes": ",".join(j.nodes),
                "effect": j.effect,
            }
            for j in plan.jobs
        ]
        users = sorted({j.user for j in plan.jobs})
        parts.append(f"running jobs affected: {len(plan.jobs)} (users: {', '.join(users)})")
        parts.append(render_table(job_rows, JOB_COLUMNS))
    elif plan.verb is not Verb.RESUME:
        parts.append("running jobs affected: none")
    if plan.gpus_out_of_service:
        parts.append(f"GPUs taken out of service: {plan.gpus_out_of_service}")
    if plan.gpus_back_in_service:
        parts.append(f"GPUs back in service: {plan.gpus_back_in_service}")
    for refusal in plan.refusals:
        parts.append(f"REFUSED: {refusal}")
    return "\n".join(parts)


def confirm(env: Environment, plan: Plan, yes: bool) -> None:
    if yes:
        return
    if not env.stdin_isatty:
        raise RefusedError("no terminal to confirm on: pass --yes to act without confirmation")
    prompt = f"{plan.verb.value} {len(plan.targets)} node(s)?"
    if not click.confirm(prompt, default=False, err=True):
        raise RefusedError("not confirmed: nothing changed")


def _progress(env: Environment) -> Callable[[int, int, str], None]:
    tty = bool(getattr(env.stderr, "isatty", lambda: False)())
    last: list[int] = [-1]

    def show(done: int, total: int, verb: str) -> None:
        if tty:
            env.stderr.write(f"\rwaiting: {verb} {done}/{total} node(s) done")
            if done == total:
                env.stderr.write("\n")
            env.stderr.flush()
        elif done != last[0]:
            env.stderr.write(f"factoryctl: waiting: {verb} {done}/{total} node(s) done\n")
        last[0] = done

    return show


def emit_outcome(env: Environment, outcome: Outcome) -> int:
    if env.output == "json":
        env.write(render_json(outcome.to_dict()))
    elif env.output == "csv":
        env.write(render_csv([{"name": n, **r} for n, r in outcome.results.items()]))
    else:
        rows = [{"name": n, **r} for n, r in outcome.results.items()]
        if rows:
            env.write(render_table(rows, RESULT_COLUMNS))
    stream = "" if outcome.status is ExitStatus.OK else "error: "
    env.stderr.write(f"factoryctl: {stream}{outcome.message}\n")
    return int(outcome.status)


def run_action(
    request: Request,
    yes: bool,
    dry_run: bool,
    wait_timeout: float | None = None,
    argv: list[str] | None = None,
) -> int:
    env = get_env()
    scheduler = env.scheduler()
    radius = blast_radius(env)
    plan = prepare(scheduler, request, radius)
    refused = refusal_error(plan)
    if env.output == "json" and dry_run:
        env.write(render_json({"kind": "plan", "dry_run": True, **plan.to_dict()}))
    elif env.output != "json":
        env.write(render_plan(plan))
    if refused is not None and not dry_run:
        record_refusal(audit_log(env), plan, refused.message, argv or [])
        if env.output == "json":
            # Scripts get the per-node "why" as data too, not only the one-line error.
            env.write(render_json(Outcome("", plan, refused.status, refused.message).to_dict()))
    if refused is not None:
        raise refused
    if dry_run:
        env.stderr.write("factoryctl: dry run: nothing changed\n")
        return int(ExitStatus.OK)
    if plan.targets:
        try:
            confirm(env, plan, yes)
        except RefusedError as err:
            record_refusal(audit_log(env), plan, err.message, argv or [])
            raise
    outcome = execute(scheduler, request, radius, audit_log(env), argv or [])
    if wait_timeout is not None and outcome.status is ExitStatus.OK:
        outcome = wait(scheduler, outcome, wait_timeout, audit_log(env), progress=_progress(env))
    return emit_outcome(env, outcome)


def _argv() -> list[str]:
    import sys

    return list(sys.argv)


def _timeout_option(default: str) -> Callable[..., Any]:
    return click.option(
        "--timeout",
        "timeout_text",
        default=default,
        show_default=True,
        metavar="DURATION",
        help="With --wait: give up after this long (exit status 7).",
    )


@click.command()
@click.argument("nodes", metavar="NODES")
@click.option("--reason", required=True, help="Why (stored as 'factoryctl: REASON (USER)').")
@click.option("--wait", "wait_flag", is_flag=True, help="Block until every node is DRAINED.")
@_timeout_option("1h")
@action_options
def drain(
    nodes: str,
    reason: str,
    wait_flag: bool,
    timeout_text: str,
    yes: bool,
    dry_run: bool,
    force: bool,
) -> int:
    """Drain NODES (a hostlist): running jobs finish, no new jobs start."""
    env = get_env()
    timeout = parse_duration(timeout_text)
    request = Request(Verb.DRAIN, nodes, reason, operator(env.environ), force)
    return run_action(request, yes, dry_run, timeout if wait_flag else None, _argv())


@click.command()
@click.argument("nodes", metavar="NODES")
@click.option("--reason", default="", help="Why (recorded in the audit log).")
@action_options
def resume(nodes: str, reason: str, yes: bool, dry_run: bool, force: bool) -> int:
    """Resume NODES that factoryctl drained (others need --force)."""
    env = get_env()
    request = Request(Verb.RESUME, nodes, reason, operator(env.environ), force)
    return run_action(request, yes, dry_run, None, _argv())


@click.command()
@click.argument("nodes", metavar="NODES")
@click.option("--reason", required=True, help="Why (stored as 'factoryctl: REASON (USER)').")
@click.option("--asap", is_flag=True, help="Drain now and reboot as soon as jobs end.")
@click.option(
    "--next-state",
    type=click.Choice(["resume", "down"]),
    default="resume",
    show_default=True,
    help="State after the reboot.",
)
@click.option("--wait", "wait_flag", is_flag=True, help="Block until the reboot completes.")
@_timeout_option("30m")
@action_options
def reboot(
    nodes: str,
    reason: str,
    asap: bool,
    next_state: str,
    wait_flag: bool,
    timeout_text: str,
    yes: bool,
    dry_run: bool,
    force: bool,
) -> int:
    """Reboot NODES through Slurm (RebootProgram) once they are idle."""
    env = get_env()
    timeout = parse_duration(timeout_text)
    params = {"asap": asap, "next_state": next_state}
    request = Request(Verb.REBOOT, nodes, reason, operator(env.environ), force, params)
    return run_action(request, yes, dry_run, timeout if wait_flag else None, _argv())
