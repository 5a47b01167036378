"""``factoryctl rollout start|status|pause|resume|abort|list``: maintenance campaigns.

The plan goes to stdout (a table, or one JSON line with ``-o json``); progress goes to
stderr as one line per step, or to stdout as one JSON event per line with ``-o json``.
The engine is ``factoryctl.actions.rollout_runner`` and its sibling ``rollout_*`` modules.
"""

from __future__ import annotations

import time
from typing import Any

import click

from factoryctl import hostlists
from factoryctl.actions.guards import RefusedError
from factoryctl.actions.outcome import operator
from factoryctl.actions.rollout_journal import Store
from factoryctl.actions.rollout_phases import (
    ABORTED,
    PAUSED,
    TERMINAL,
    TERMINAL_STATUS,
    campaigns_in_slurm,
    new_campaign_id,
)
from factoryctl.actions.rollout_plan import RolloutSpec, build_rollout_plan, create, refusal
from factoryctl.actions.rollout_runner import control, write_events
from factoryctl.actions.timespec import parse_duration
from factoryctl.cli.actions import audit_log, blast_radius
from factoryctl.cli.common import get_env
from factoryctl.cli.env import Environment
from factoryctl.cli.rollout_output import (
    LIST_COLUMNS,
    STATUS_COLUMNS,
    local_time,
    render_plan,
)
from factoryctl.cli.rollout_session import (
    campaign_gate,
    campaign_store,
    confirm_or_refuse,
    finish_campaign,
    gate_telemetry,
    log_refusal,
    run_campaign,
)
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.formats import render_json, render_table


@click.group()
def rollout() -> None:
    """Maintenance campaigns: drain, work, reboot, check and resume nodes in waves."""


@rollout.command("start")
@click.argument("hostlist", metavar="HOSTLIST")
@click.option(
    "--reason", required=True, help="Why (stored as 'factoryctl rollout ID: REASON (USER)')."
)
@click.option(
    "--max-unavailable",
    default="1",
    show_default=True,
    metavar="N|P%",
    help="Most nodes of the partition out of service at once, counting those out already.",
)
@click.option(
    "--exec", "exec_cmd", metavar="'CMD {node}'", help="Work per drained node; exit 0 = done."
)
@click.option("--reboot", is_flag=True, help="Reboot each node through Slurm after the work.")
@click.option(
    "--next-state",
    type=click.Choice(["resume", "down"]),
    default="resume",
    show_default=True,
    help="After a passed check: resume the node, or leave it down.",
)
@click.option("--check", "check_cmd", metavar="'CMD {node}'", help="Health gate; exit 0 = pass.")
@click.option(
    "--drain-timeout",
    default="2h",
    show_default=True,
    metavar="DURATION",
    help="Skip a node whose jobs outlive this (drain undone; jobs never killed).",
)
@click.option(
    "--reboot-timeout",
    default="30m",
    show_default=True,
    metavar="DURATION",
    help="A node not back this long after its reboot fails.",
)
@click.option(
    "--step-timeout",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="An --exec or --check running longer fails.",
)
@click.option(
    "--max-failures",
    type=int,
    metavar="K",
    help="Circuit breaker: after K failed nodes no new node starts; the campaign pauses.",
)
@click.option(
    "--no-telemetry-gate",
    is_flag=True,
    help="Do not gate resumes on GPU telemetry (the plan says the gate is off).",
)
@click.option(
    "--gpu-wait",
    default="2m",
    show_default=True,
    metavar="DURATION",
    help="Telemetry gate: how long a node's GPUs may take to report before it fails.",
)
@click.option("--force", is_flag=True, help="Override the blast-radius guard.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
@click.option(
    "-o", "--output", "output", type=click.Choice(["table", "json"]), help="Output format."
)
def start(
    hostlist: str,
    reason: str,
    max_unavailable: str,
    exec_cmd: str | None,
    reboot: bool,
    next_state: str,
    check_cmd: str | None,
    drain_timeout: str,
    reboot_timeout: str,
    step_timeout: str,
    max_failures: int | None,
    no_telemetry_gate: bool,
    gpu_wait: str,
    force: bool,
    dry_run: bool,
    yes: bool,
    output: str | None,
) -> int:
    """Start a campaign over HOSTLIST: plan, confirm, then run it to the end.

    Each node: drain (reason 'factoryctl rollout ID: REASON (USER)'), wait until DRAINED
    (jobs outliving --drain-timeout: skipped, drain undone, never killed), --exec, --reboot
    and wait for slurmd to register, --check, the telemetry gate (with a Prometheus
    configured: the GPUs Slurm expects report, no new XID or uncorrectable ECC since the
    drain), then resume. A node failing a step stays
    drained with the step in its reason; the campaign goes on. At most --max-unavailable
    nodes of the partition are out of service at once, counting those out already. The
    journal ($XDG_STATE_HOME/factoryctl/rollouts/ID.jsonl) makes it crash-safe:
    'factoryctl rollout resume' continues after a kill, checking cut-off steps against
    Slurm. Details and worked examples: docs/rollout.md.
    """
    import sys

    env = get_env()
    if output:
        env.output = output
    argv = list(sys.argv)
    spec = RolloutSpec(
        hostlist=hostlist,
        reason=reason,
        user=operator(env.environ),
        max_unavailable=max_unavailable,
        exec_cmd=exec_cmd,
        reboot=reboot,
        next_state=next_state,
        check_cmd=check_cmd,
        drain_timeout=parse_duration(drain_timeout),
        reboot_timeout=parse_duration(reboot_timeout),
        step_timeout=parse_duration(step_timeout),
        max_failures=max_failures,
        force=force,
        gpu_wait=parse_duration(gpu_wait),
        **_gate_spec(env, no_telemetry_gate),
    )
    store = campaign_store(env)
    scheduler = env.scheduler()
    radius = blast_radius(env)
    cid = new_campaign_id()
    plan = build_rollout_plan(spec, scheduler, radius, env.environ, cid, store.held_nodes())
    if env.output == "json":
        write_events(env.stdout)({"event": "plan", **plan, "dry_run": dry_run})
    else:
        env.write(render_plan(plan))
    refused = refusal(plan)
    if refused is not None:
        if not dry_run:
            log_refusal(env, plan, refused.message, argv)
        raise refused
    if dry_run:
        env.stderr.write("factoryctl: dry run: nothing changed\n")
        return int(ExitStatus.OK)
    if not plan["order"]:
        env.stderr.write(
            f"factoryctl: rollout: nothing to do: no node of {hostlist} is in service\n"
        )
        return int(ExitStatus.OK)
    try:
        confirm_or_refuse(env, f"start rollout {cid} over {len(plan['order'])} node(s)?", yes)
    except RefusedError as err:
        log_refusal(env, plan, err.message, argv)
        raise
    with store.registry_lock():
        # Fresh state under the lock: another operator may have acted while we asked.
        plan = build_rollout_plan(spec, scheduler, radius, env.environ, cid, store.held_nodes())
        refused = refusal(plan)
        if refused is not None:
            log_refusal(env, plan, refused.message, argv)
            raise refused
        campaign = create(store, plan, argv, env.clock())
        audit_log(env).append(
            {
                "id": cid,
                "event": "start",
                "time": env.clock(),
                "user": spec.user,
                "verb": "rollout",
                "nodes": hostlists.collect(plan["order"]),
                "reason": plan["stored_reason"],
                "argv": argv,
                "plan": plan,
            }
        )
    return run_campaign(env, store, campaign, campaign_gate(env, campaign.spec))


def _gate_spec(env: Environment, off: bool) -> dict[str, Any]:
    url = env.settings.get("prometheus", {}).get("url")
    if off:
        return {"telemetry": None, "telemetry_off": "--no-telemetry-gate"}
    if not url:
        return {"telemetry": None, "telemetry_off": "no Prometheus configured"}
    return {"telemetry": gate_telemetry(env).describe()}


def _campaign_id(store: Store, campaign_id: str | None) -> str:
    return campaign_id or store.latest()


@rollout.command("resume")
@click.argument("campaign_id", metavar="[ID]", required=False)
@click.option("--reason", default="", help="Why (recorded in the journal and audit log).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
@click.option(
    "-o", "--output", "output", type=click.Choice(["table", "json"]), help="Output format."
)
def resume_command(campaign_id: str | None, reason: str, yes: bool, output: str | None) -> int:
    """Continue a paused, breaker-tripped or cut-off campaign (default: the latest)."""
    env = get_env()
    if output:
        env.output = output
    store = campaign_store(env)
    campaign = store.load(_campaign_id(store, campaign_id))
    if campaign.status in TERMINAL_STATUS:
        raise RefusedError(f"campaign {campaign.id} is {campaign.status}: nothing to resume")
    if store.running(campaign.id):
        raise RefusedError(f"campaign {campaign.id} is running in another process")
    gate = campaign_gate(env, campaign.spec)  # before anything is written: refused means untouched
    left = len(campaign.nodes) - campaign.count(*TERMINAL)
    confirm_or_refuse(env, f"resume rollout {campaign.id} ({left} node(s) left)?", yes)
    control(store, campaign.id, "resume", operator(env.environ), reason, env.clock())
    campaign = store.load(campaign.id)
    campaign.spec["resumed"] = True
    return run_campaign(env, store, campaign, gate)


@rollout.command("pause")
@click.argument("campaign_id", metavar="[ID]", required=False)
@click.option("--reason", default="", help="Why (recorded in the journal).")
def pause(campaign_id: str | None, reason: str) -> int:
    """Let nodes in flight finish and start no more (default: the latest campaign)."""
    env = get_env()
    store = campaign_store(env)
    campaign = store.load(_campaign_id(store, campaign_id))
    if campaign.status in TERMINAL_STATUS:
        raise RefusedError(f"campaign {campaign.id} is {campaign.status}: nothing to pause")
    control(store, campaign.id, "pause", operator(env.environ), reason, env.clock())
    if not store.running(campaign.id):
        store.journal(campaign.id).append(
            {"event": "status", "status": PAUSED, "message": "paused", "time": env.clock()}
        )
    env.stderr.write(
        f"factoryctl: rollout {campaign.id}: pause requested: nodes in flight finish, "
        "no new node starts\n"
    )
    return int(ExitStatus.OK)


@rollout.command("abort")
@click.argument("campaign_id", metavar="[ID]", required=False)
@click.option("--reason", default="", help="Why (recorded in the journal).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
@click.option(
    "--timeout",
    "timeout_text",
    default="2m",
    show_default=True,
    metavar="DURATION",
    help="How long to wait for a running campaign to stop.",
)
def abort(campaign_id: str | None, reason: str, yes: bool, timeout_text: str) -> int:
    """Stop a campaign now; report which nodes are left drained and why."""
    env = get_env()
    store = campaign_store(env)
    campaign = store.load(_campaign_id(store, campaign_id))
    timeout = parse_duration(timeout_text)
    if campaign.status in TERMINAL_STATUS:
        raise RefusedError(f"campaign {campaign.id} is {campaign.status} already")
    confirm_or_refuse(env, f"abort rollout {campaign.id}?", yes)
    control(store, campaign.id, "abort", operator(env.environ), reason, env.clock())
    if not store.running(campaign.id):
        return run_campaign(env, store, store.load(campaign.id))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        campaign = store.load(campaign.id)
        if campaign.status == ABORTED:
            return finish_campaign(env, ExitStatus.ROLLOUT_ABORTED, campaign)
        time.sleep(0.2)
    raise FactoryctlError(
        f"campaign {campaign.id}: abort requested, but its runner has not stopped within "
        f"{timeout:.0f}s",
        ExitStatus.TIMEOUT,
    )


@rollout.command("status")
@click.argument("campaign_id", metavar="[ID]", required=False)
@click.option(
    "-o", "--output", "output", type=click.Choice(["table", "json"]), help="Output format."
)
def status(campaign_id: str | None, output: str | None) -> int:
    """Where a campaign stands, node by node (default: the latest)."""
    env = get_env()
    if output:
        env.output = output
    store = campaign_store(env)
    campaign = store.load(_campaign_id(store, campaign_id))
    summary = {**campaign.summary(), "status": store.effective_status(campaign)}
    nodes = [
        {
            "name": n,
            "phase": r.phase,
            "step": r.step,
            "since": r.since or None,
            "note": r.note,
        }
        for n, r in campaign.nodes.items()
    ]
    if env.output == "json":
        env.write(
            render_json({"kind": "rollout", **summary, "node_list": nodes, "spec": campaign.spec})
        )
        return int(ExitStatus.OK)
    env.write(
        f"rollout {campaign.id} by {summary['user']}: {summary['status']}"
        + (f": {summary['message']}" if summary["message"] else "")
        + f"\n{summary['done']} done, {summary['failed']} failed, {summary['skipped']} skipped, "
        f"{len(summary['in_flight'])} in flight, {summary['pending']} pending of {summary['total']}"
    )
    rows = [{**n, "since": local_time(n["since"])} for n in nodes]
    env.write(render_table(rows, STATUS_COLUMNS))
    return int(ExitStatus.OK)


@rollout.command("list")
@click.option(
    "-o", "--output", "output", type=click.Choice(["table", "json"]), help="Output format."
)
def list_command(output: str | None) -> int:
    """Every campaign: this state directory's (every operator's who shares it), and those
    of other state directories that Slurm's node reasons name (status 'elsewhere')."""
    env = get_env()
    if output:
        env.output = output
    store = campaign_store(env)
    items = []
    for c in store.campaigns():
        s = c.summary()
        s["status"] = store.effective_status(c)
        items.append(s)
    known = {i["id"] for i in items}
    try:
        seen = campaigns_in_slurm(env.scheduler().nodes())
    except FactoryctlError:
        seen = {}  # the journals alone, when Slurm cannot be asked
    for cid, entry in sorted(seen.items()):
        if cid not in known:
            # Another state directory's campaign: Slurm's reasons are all we know of it.
            items.append(
                {
                    "id": cid,
                    "user": entry["user"],
                    "host": "?",
                    "status": "elsewhere",
                    "message": "journal not in this state directory; seen in node reasons",
                    "nodes": hostlists.collect(entry["nodes"]),
                    "total": None,
                    "done": None,
                    "failed": None,
                    "reason": "",
                }
            )
    if env.output == "json":
        env.write(render_json({"kind": "rollouts", "items": items}))
        return int(ExitStatus.OK)
    if not items:
        env.write("No campaigns.")
        return int(ExitStatus.OK)
    rows = [
        {**i, "progress": "-" if i["total"] is None else f"{i['done']}/{i['failed']}/{i['total']}"}
        for i in items
    ]
    env.write(render_table(rows, LIST_COLUMNS))
    return int(ExitStatus.OK)
