"""What ``factoryctl rollout`` prints: the plan, the status and list tables, and the
progress lines a person reads on stderr (scripts get JSON events instead)."""

from __future__ import annotations

import time
from typing import Any

from factoryctl import hostlists
from factoryctl.actions.rollout_records import Emit
from factoryctl.actions.rollout_runner import write_events
from factoryctl.cli.env import Environment
from factoryctl.formats import render_table
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


def local_time(t: Any) -> str:
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
        gate_line(plan.get("telemetry_gate") or {"on": False, "why": "not recorded"}),
    ]
    if plan["jobs"]:
        users = sorted({j["user"] for j in plan["jobs"]})
        lines.append(
            f"running jobs on these nodes: {len(plan['jobs'])} (users: {', '.join(users)})"
        )
    for why in plan["refusals"]:
        lines.append(f"REFUSED: {why}")
    return "\n".join(lines)


def gate_line(gate: dict[str, Any]) -> str:
    if gate.get("on"):
        return (
            f"telemetry gate: before resuming, the GPUs Slurm expects report ({gate['source']}; "
            f"waiting up to {float(gate['gpu_wait']):.0f}s after the work) and no new XID or "
            "uncorrectable ECC since the node was drained"
        )
    return f"telemetry gate: off ({gate.get('why', '')}): GPU telemetry is not checked"


def progress_emitter(env: Environment) -> Emit:
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
