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
from factoryctl.actions.rollout_gate import TelemetryGate
from factoryctl.actions.rollout_journal import Campaign, Store
from factoryctl.actions.rollout_phases import (
    ABORTED,
    PAUSED,
    TERMINAL,
    TERMINAL_STATUS,
    campaigns_in_slurm,
    new_campaign_id,
)
from factoryctl.actions.rollout_plan import RolloutSpec, build_rollout_plan, create, refusal
from factoryctl.actions.rollout_records import Emit
from factoryctl.actions.rollout_runner import Runner, control, write_events
from factoryctl.actions.timespec import parse_duration
from factoryctl.cli.actions import audit_log, blast_radius
from factoryctl.cli.common import get_env
from factoryctl.cli.env import Environment
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.formats import render_json, render_table
from factoryctl.views import Column

PLAN_COLUMNS = (
    Column("name", "NODE"),
    Column("state", "STATE"),
    Column("wave", "WAVE"),
    Column("jobs", "JOBS (USERS)"),
    Column("step", "ACTION"),
    Column("note", "NOTE"),
)
STATUS_COLUMNS = (
    Column("name", "NODE"),
    Column("phase", "PHASE"),
    Column("since", "SINCE"),
    Column("note", "NOTE"),
)
LIST_COLUMNS = (
    Column("id", "ID"),
    Column("user", "USER"),
    Column("host", "HOST"),
    Column("status", "STATUS"),
    Column("progress", "DONE/FAILED/TOTAL"),
    Column("nodes", "NODES"),
    Column("reason", "REASON"),
)


def _store(env: Environment) -> Store:
    return Store(audit_log(env).path.parent / "rollouts")


def _when(t: Any) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(float(t))) if t else "-"


def render_plan(plan: dict[str, Any]) -> str:
    order = plan["order"]
    head = (
        f"rollout {plan['id']}: {len(order)} of {len(plan['nodes'])} node(s) in "
        f"{len(plan['waves'])} wave(s) of up to {len(plan['waves'][0]) if plan['waves'] else 0}"
        f"; steps: {' -> '.join(plan['steps'])}"
    )
    rows = [
        {
            "name": n["name"],
            "state": n["state"],
            "wave": n["wave"] or "-",
            "jobs": ",".join(n["jobs"]) + (f" ({','.join(n['users'])})" if n["users"] else "")
            or "-",
            "step": n["step"],
            "note": n["note"],
        }
        for n in plan["nodes"]
    ]
    out = plan["out_of_service_now"]
    lines = [
        head,
        render_table(rows, PLAN_COLUMNS),
        f"reason stored as {plan['stored_reason']!r}",
        f"capacity: {plan['partition_nodes']} node(s) in the partition, at most "
        f"{plan['max_unavailable']} out of service at once (counting "
        f"{len(out)} out now{': ' + hostlists.collect(out) if out else ''}); "
        f"at least {plan['floor']} stay in service",
        f"waves are rolling: a node starts when another finishes; jobs are never killed: a "
        f"node whose jobs outlive --drain-timeout ({plan['drain_timeout']:.0f}s) is skipped",
        f"a node that fails a step {plan['on_failure']}",
        _gate_line(plan.get("telemetry_gate") or {"on": False, "why": "not recorded"}),
    ]
    if plan["jobs"]:
        users = sorted({j["user"] for j in plan["jobs"]})
        lines.append(
            f"running jobs on these nodes: {len(plan['jobs'])} (users: {', '.join(users)})"
        )
    for why in plan["refusals"]:
        lines.append(f"REFUSED: {why}")
    return "\n".join(lines)


def _gate_line(gate: dict[str, Any]) -> str:
    if gate.get("on"):
        return (
            f"telemetry gate: before resuming, the GPUs Slurm expects report ({gate['source']}; "
            f"waiting up to {float(gate['gpu_wait']):.0f}s after the work) and no new XID or "
            "uncorrectable ECC since the node was drained"
        )
    return f"telemetry gate: off ({gate.get('why', '')}): GPU telemetry is not checked"


def _telemetry(env: Environment) -> Any:
    """The gate's reader over the configured Prometheus (joined with nothing: Slurm's
    Gres count comes from the runner's own reads)."""
    from factoryctl.telemetry.gpu_health import PromGpuTelemetry
    from factoryctl.telemetry.prom_open import open_prometheus_source

    return PromGpuTelemetry(open_prometheus_source(env.settings))


def _gate(env: Environment, spec: dict[str, Any]) -> TelemetryGate | None:
    gate = spec.get("telemetry_gate") or {}
    if not gate.get("on"):
        return None
    if not env.settings.get("prometheus", {}).get("url"):
        raise RefusedError(
            f"campaign {spec.get('id')} gates on GPU telemetry ({gate.get('source')}), but no "
            "Prometheus is configured here: pass --prometheus URL (or set [prometheus] url)"
        )
    return TelemetryGate(_telemetry(env), float(gate.get("gpu_wait", 120.0)))


def _emitter(env: Environment) -> Emit:
    if env.output == "json":
        return write_events(env.stdout)
    tty = bool(getattr(env.stderr, "isatty", lambda: False)())

    def show(event: dict[str, Any]) -> None:
        kind = event.get("event")
        cid = event.get("campaign", "")
        if kind == "node":
            step, note = event.get("step") or "", event.get("note") or ""
            extra = f"{step} failed: {note}" if event["phase"] == "failed" else note
            line = (
                f"rollout {cid}: {event['node']} {event['phase']}"
                + (f" ({extra})" if extra else "")
                + f" [{event['done']}/{event['total']} done, {event['failed']} failed]"
            )
        elif kind == "campaign":
            status, message = str(event["status"]), str(event["message"])
            shown = message if message.startswith(status) else f"{status}: {message}"
            line = f"rollout {cid}: {shown}"
        else:
            line = f"rollout {cid}: warning: {event.get('node', '')} {event.get('message', '')}"
        prefix = time.strftime("%H:%M:%S ") if tty else "factoryctl: "
        env.stderr.write(prefix + line + "\n")
        env.stderr.flush()

    return show


def _confirm(env: Environment, what: str, yes: bool) -> None:
    if yes:
        return
    if not env.stdin_isatty:
        raise RefusedError("no terminal to confirm on: pass --yes to act without confirmation")
    if not click.confirm(what, default=False, err=True):
        raise RefusedError("not confirmed: nothing changed")


def _finish(env: Environment, status: ExitStatus, campaign: Campaign) -> int:
    word = "" if status is ExitStatus.OK else "error: "
    env.stderr.write(f"factoryctl: {word}rollout {campaign.id}: {campaign.message}\n")
    return int(status)


def _refuse(env: Environment, plan: dict[str, Any], message: str, argv: list[str]) -> None:
    audit_log(env).append(
        {
            "id": plan["id"],
            "event": "refused",
            "time": env.clock(),
            "user": plan["user"],
            "verb": "rollout",
            "nodes": plan["hostlist"],
            "reason": plan["stored_reason"],
            "argv": argv,
            "status": "refused",
            "message": message,
        }
    )


def _runner(
    env: Environment, store: Store, campaign: Campaign, gate: TelemetryGate | None
) -> Runner:
    return Runner(
        store=store,
        campaign=campaign,
        scheduler=env.scheduler(),
        audit=audit_log(env),
        environ=env.environ,
        emit=_emitter(env),
        clock=env.clock,
        interval=float(env.environ.get("FACTORYCTL_ROLLOUT_INTERVAL", "1") or 1),
        gate=gate,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM as ^C: stop the commands we started, keep the journal


def _run(
    env: Environment, store: Store, campaign: Campaign, gate: TelemetryGate | None = None
) -> int:
    import signal
    import threading

    with store.runner_lock(campaign.id) as got:
        if not got:
            raise RefusedError(f"campaign {campaign.id} is being run by another process")
        runner = _runner(env, store, campaign, gate)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
        try:
            status = runner.run()
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
    return _finish(env, status, runner.campaign)


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
    store = _store(env)
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
            _refuse(env, plan, refused.message, argv)
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
        _confirm(env, f"start rollout {cid} over {len(plan['order'])} node(s)?", yes)
    except RefusedError as err:
        _refuse(env, plan, err.message, argv)
        raise
    with store.registry_lock():
        # Fresh state under the lock: another operator may have acted while we asked.
        plan = build_rollout_plan(spec, scheduler, radius, env.environ, cid, store.held_nodes())
        refused = refusal(plan)
        if refused is not None:
            _refuse(env, plan, refused.message, argv)
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
    return _run(env, store, campaign, _gate(env, campaign.spec))


def _gate_spec(env: Environment, off: bool) -> dict[str, Any]:
    url = env.settings.get("prometheus", {}).get("url")
    if off:
        return {"telemetry": None, "telemetry_off": "--no-telemetry-gate"}
    if not url:
        return {"telemetry": None, "telemetry_off": "no Prometheus configured"}
    return {"telemetry": _telemetry(env).describe()}


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
    store = _store(env)
    campaign = store.load(_campaign_id(store, campaign_id))
    if campaign.status in TERMINAL_STATUS:
        raise RefusedError(f"campaign {campaign.id} is {campaign.status}: nothing to resume")
    if store.running(campaign.id):
        raise RefusedError(f"campaign {campaign.id} is running in another process")
    gate = _gate(env, campaign.spec)  # before anything is written: refused means untouched
    left = len(campaign.nodes) - campaign.count(*TERMINAL)
    _confirm(env, f"resume rollout {campaign.id} ({left} node(s) left)?", yes)
    control(store, campaign.id, "resume", operator(env.environ), reason, env.clock())
    campaign = store.load(campaign.id)
    campaign.spec["resumed"] = True
    return _run(env, store, campaign, gate)


@rollout.command("pause")
@click.argument("campaign_id", metavar="[ID]", required=False)
@click.option("--reason", default="", help="Why (recorded in the journal).")
def pause(campaign_id: str | None, reason: str) -> int:
    """Let nodes in flight finish and start no more (default: the latest campaign)."""
    env = get_env()
    store = _store(env)
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
    store = _store(env)
    campaign = store.load(_campaign_id(store, campaign_id))
    timeout = parse_duration(timeout_text)
    if campaign.status in TERMINAL_STATUS:
        raise RefusedError(f"campaign {campaign.id} is {campaign.status} already")
    _confirm(env, f"abort rollout {campaign.id}?", yes)
    control(store, campaign.id, "abort", operator(env.environ), reason, env.clock())
    if not store.running(campaign.id):
        return _run(env, store, store.load(campaign.id))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        campaign = store.load(campaign.id)
        if campaign.status == ABORTED:
            return _finish(env, ExitStatus.ROLLOUT_ABORTED, campaign)
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
    store = _store(env)
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
    rows = [{**n, "since": _when(n["since"])} for n in nodes]
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
    store = _store(env)
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
