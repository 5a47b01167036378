"""A rollout campaign's plan: the input checked, Slurm read, the order, the waves and the
capacity floor worked out before anything changes; and the campaign record that starts it.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from factoryctl import hostlists
from factoryctl.actions.guards import BlastRadius, RefusedError
from factoryctl.actions.plan import Verb, build_plan
from factoryctl.actions.rollout_journal import Campaign, Store, replay
from factoryctl.actions.rollout_phases import campaign_reason
from factoryctl.errors import FactoryctlError, UsageError
from factoryctl.model import Node
from factoryctl.scheduler.base import Scheduler
from factoryctl.scheduler.slurm_cli import validate_reason

# -- input --------------------------------------------------------------------------------


def parse_max_unavailable(text: str, partition_size: int) -> int:
    raw = text.strip()
    try:
        if raw.endswith("%"):
            share = float(raw[:-1])
            if not 0 < share <= 100:
                raise ValueError
            return max(1, math.floor(share * partition_size / 100 + 1e-9))
        value = int(raw)
        if value < 1:
            raise ValueError
        return value
    except ValueError:
        raise UsageError(
            f"invalid --max-unavailable {text!r}: a node count (2) or a share of the partition (10%)"
        ) from None


def command_template(option: str, text: str | None, environ: Mapping[str, str]) -> list[str]:
    """``--exec``/``--check`` as an argv template: shlex-split, ``{node}`` required, the
    program found and executable. Never a shell unless the user wrote ``sh -c``."""
    if text is None:
        return []
    try:
        argv = shlex.split(text)
    except ValueError as err:
        raise UsageError(f"{option}: cannot split {text!r}: {err}") from None
    if not argv:
        raise UsageError(f"{option} is empty")
    if not any("{node}" in a for a in argv):
        raise UsageError(f"{option} {text!r} does not name the node: put {{node}} where it goes")
    program = argv[0]
    if "/" in program:
        found = program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    else:
        found = shutil.which(program, path=environ.get("PATH", os.defpath))
    if found is None:
        raise UsageError(f"{option}: {program!r} is not an executable file (or not on PATH)")
    return argv


def substitute(template: Sequence[str], node: str) -> list[str]:
    return [a.replace("{node}", node) for a in template]


# -- the plan -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    hostlist: str
    reason: str
    user: str
    max_unavailable: str = "1"
    exec_cmd: str | None = None
    reboot: bool = False
    next_state: str = "resume"
    check_cmd: str | None = None
    drain_timeout: float = 7200.0
    reboot_timeout: float = 1800.0
    step_timeout: float = 3600.0
    max_failures: int | None = None
    force: bool = False
    # The telemetry gate: where it reads (None: off), why it is off, how long GPUs may take.
    telemetry: str | None = None
    telemetry_off: str = "no Prometheus configured"
    gpu_wait: float = 120.0


def partition_of(targets: Sequence[str], nodes: Sequence[Node]) -> list[Node]:
    """Every node sharing a partition with a target (all nodes when none is known)."""
    by = {n.name: n for n in nodes}
    parts = {p for t in targets for p in by[t].partitions}
    if not parts:
        return list(nodes)
    return [n for n in nodes if set(n.partitions) & parts]


def unavailable(node: Node) -> bool:
    return not node.state.in_service


def build_rollout_plan(
    spec: RolloutSpec,
    scheduler: Scheduler,
    radius: BlastRadius,
    environ: Mapping[str, str],
    campaign_id: str,
    held: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Validate everything, read Slurm, and say what will happen. Raises before anything
    changes: malformed hostlist (USAGE), unknown node (NOT_FOUND), bad --exec/--check
    (USAGE), a floor that cannot hold or nodes another campaign holds (REFUSED)."""
    names = hostlists.expand(spec.hostlist)
    validate_reason(spec.reason)
    longest = campaign_reason(campaign_id, f"reboot failed: {spec.reason}", spec.user)
    validate_reason(longest)
    exec_argv = command_template("--exec", spec.exec_cmd, environ)
    check_argv = command_template("--check", spec.check_cmd, environ)
    if spec.max_failures is not None and spec.max_failures < 1:
        raise UsageError("--max-failures must be 1 or more")
    nodes = scheduler.nodes()
    targets = hostlists.resolve(spec.hostlist, (n.name for n in nodes))
    assert set(targets) == set(names)
    jobs = scheduler.jobs()
    base = build_plan(Verb.ROLLOUT, targets, nodes, jobs, spec.user, spec.reason, spec.force)
    by = {n.name: n for n in nodes}
    partition = partition_of(targets, nodes)
    size = len(partition)
    max_unav = parse_max_unavailable(spec.max_unavailable, size)
    acting = [n for n in base.nodes if n.step.value == "act"]
    # Idle nodes first: they drain at once; busy ones wait for their jobs.
    acting.sort(key=lambda n: (bool(n.jobs), targets.index(n.name)))
    order = [n.name for n in acting]
    out_now = sorted(n.name for n in partition if unavailable(n))
    slots = max_unav - len(out_now)
    refusals: list[str] = []
    conflicts = {n: c for n, c in (held or {}).items() if n in set(order)}
    if conflicts:
        first = sorted(conflicts)[0]
        refusals.append(
            f"{hostlists.collect(conflicts)}: held by campaign {conflicts[first]} "
            "(factoryctl rollout list); nothing started"
        )
    if order and slots <= 0:
        refusals.append(
            f"capacity floor cannot hold: {len(out_now)} of {size} node(s) in the partition are "
            f"already out of service ({hostlists.collect(out_now) if out_now else '-'}), and "
            f"--max-unavailable {spec.max_unavailable} allows {max_unav}; nothing started"
        )
    if not spec.force and order:
        limit = radius.limit(len(nodes))
        if min(slots, len(order)) > limit:
            refusals.append(
                f"blast radius: up to {min(slots, len(order))} node(s) out at once, more than "
                f"the limit of {limit}; lower --max-unavailable or use --force"
            )
    wave = max(1, slots)
    waves = [order[i : i + wave] for i in range(0, len(order), wave)]
    stored = campaign_reason(campaign_id, spec.reason, spec.user)
    failure = campaign_reason(campaign_id, f"<step> failed: {spec.reason}", spec.user)
    on_failure = f"stays drained with reason {failure!r}; the campaign goes on with the others"
    if spec.max_failures is not None:
        on_failure += (
            f"; after {spec.max_failures} failed node(s) no new node starts and the "
            "campaign pauses (factoryctl rollout resume)"
        )
    node_rows = []
    for n in base.nodes:
        node = by[n.name]
        job_users = sorted({j.user for j in jobs if j.job_id in n.jobs})
        node_rows.append(
            {
                "name": n.name,
                "state": n.state.value,
                "reason": n.reason,
                "gpus": n.gpus,
                "jobs": list(n.jobs),
                "users": job_users,
                "step": "rollout" if n.step.value == "act" else n.step.value,
                "note": n.note,
                "wave": next((i + 1 for i, w in enumerate(waves) if n.name in w), None),
                "partitions": list(node.partitions),
            }
        )
    steps = ["drain", "wait DRAINED"]
    if exec_argv:
        steps.append("exec")
    if spec.reboot:
        steps.append("reboot")
    if check_argv:
        steps.append("check")
    if spec.telemetry is not None:
        steps.append("telemetry gate")
    steps.append("resume" if spec.next_state == "resume" else "leave down")
    return {
        "kind": "rollout-plan",
        "id": campaign_id,
        "user": spec.user,
        "reason": spec.reason,
        "stored_reason": stored,
        "hostlist": spec.hostlist,
        "order": order,
        "waves": waves,
        "steps": steps,
        "nodes": node_rows,
        "jobs": [
            {"job_id": j.job_id, "user": j.user, "name": j.name, "nodes": list(j.nodes)}
            for j in base.jobs
        ],
        "partition_nodes": size,
        "out_of_service_now": out_now,
        "max_unavailable": max_unav,
        "floor": size - max_unav,
        "on_failure": on_failure,
        "exec": exec_argv,
        "check": check_argv,
        "reboot": spec.reboot,
        "next_state": spec.next_state,
        "drain_timeout": spec.drain_timeout,
        "reboot_timeout": spec.reboot_timeout,
        "step_timeout": spec.step_timeout,
        "max_failures": spec.max_failures,
        "telemetry_gate": (
            {"on": True, "source": spec.telemetry, "gpu_wait": spec.gpu_wait}
            if spec.telemetry is not None
            else {"on": False, "why": spec.telemetry_off}
        ),
        "partition": sorted(n.name for n in partition),
        "refusals": refusals,
    }


def refusal(plan: Mapping[str, Any]) -> RefusedError | None:
    refusals = plan.get("refusals") or []
    return RefusedError(str(refusals[0])) if refusals else None


def create(store: Store, plan: Mapping[str, Any], argv: Sequence[str], now: float) -> Campaign:
    """Write the campaign record (the journal's first line). The caller holds the
    registry lock and has re-checked that no other campaign holds these nodes."""
    record = {
        "event": "campaign",
        "time": now,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "argv": list(argv),
        **{k: v for k, v in plan.items() if k not in ("kind", "refusals")},
    }
    journal = store.journal(str(plan["id"]))
    if journal.path.exists():
        raise FactoryctlError(f"campaign {plan['id']} exists already")
    journal.append(record)
    return replay([record])
