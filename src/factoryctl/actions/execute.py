"""Plan, guard, log, act, verify, wait: the one path every cluster-changing action takes.

``prepare`` reads the scheduler and builds the plan (nothing changes). ``execute``
takes the audit lock, re-reads the state (another operator may have acted since the plan
was shown), re-applies the guards, writes the ``start`` record, makes one scheduler call
for the whole node set, reads the state back and writes the ``result`` record with a
result per node. ``factoryctl.actions.waiting.wait`` then polls, for ``--wait``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from factoryctl import hostlists
from factoryctl.actions.audit import AuditLog, new_action_id
from factoryctl.actions.guards import BlastRadius, apply_guards, refusal_error
from factoryctl.actions.outcome import (
    CHANGED,
    FAILED,
    PENDING,
    REFUSED,
    UNCHANGED,
    Outcome,
    Request,
)
from factoryctl.actions.plan import Plan, Step, Verb, build_plan, stored_reason
from factoryctl.errors import ExitStatus, FactoryctlError, NotFoundError
from factoryctl.model import Node, NodeState
from factoryctl.scheduler.base import NextState, ReservationRequest, Scheduler
from factoryctl.scheduler.slurm_cli import validate_reason


def resolve_targets(expression: str, nodes: Sequence[Node]) -> list[str]:
    """Malformed hostlist -> USAGE, unknown node -> NOT_FOUND, before anything runs."""
    return hostlists.resolve(expression, (n.name for n in nodes))


def prepare(scheduler: Scheduler, request: Request, radius: BlastRadius) -> Plan:
    if request.verb is Verb.MAINTENANCE_DELETE:
        # The nodes are the reservation's: look it up (NOT_FOUND when it does not exist).
        name = str(request.params["name"])
        found = [r for r in scheduler.reservations() if r.name == name]
        if not found:
            raise NotFoundError(f"unknown reservation: {name}")
        request = dataclasses.replace(request, nodes=hostlists.collect(found[0].nodes))
    names = hostlists.expand(request.nodes)  # syntax first: no scheduler call for garbage
    if request.verb not in (Verb.RESUME, Verb.MAINTENANCE_DELETE) or request.reason:
        validate_reason(request.reason)
        validate_reason(stored_reason(request.reason, request.user))  # length with prefix
    nodes = scheduler.nodes()
    targets = resolve_targets(request.nodes, nodes)
    assert set(targets) == set(names)
    # Only running jobs enter a plan: where the backend can read those alone (Slurm
    # 23.02+), the pending ones are never printed nor parsed.
    read_running = getattr(scheduler, "running_jobs", None)
    jobs = read_running() if callable(read_running) else scheduler.jobs()
    plan = build_plan(
        request.verb,
        targets,
        nodes,
        jobs,
        request.user,
        request.reason,
        request.force,
        dict(request.params),
    )
    return apply_guards(plan, radius, request.force)


def audit_record(action_id: str, event: str, p: Plan, /, **extra: Any) -> dict[str, Any]:
    plan = p
    return {
        "id": action_id,
        "event": event,
        "time": time.time(),
        "user": plan.user,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "verb": plan.verb.value,
        "nodes": hostlists.collect(n.name for n in plan.nodes) if plan.nodes else "",
        "reason": plan.stored_reason,
        **extra,
    }


def record_refusal(audit: AuditLog, plan: Plan, message: str, argv: Sequence[str] = ()) -> None:
    """A refused action changed nothing, but who tried what, and why it was refused,
    belongs in the log as much as what was done."""
    audit.append(
        audit_record(
            new_action_id(),
            "refused",
            plan,
            argv=list(argv),
            plan=plan.to_dict(),
            status="refused",
            message=message,
        )
    )


def _call(scheduler: Scheduler, plan: Plan) -> None:
    targets = plan.targets
    p = plan.params
    if plan.verb is Verb.DRAIN:
        scheduler.drain(targets, plan.stored_reason)
    elif plan.verb is Verb.RESUME:
        scheduler.resume(targets)
    elif plan.verb is Verb.REBOOT:
        scheduler.reboot(
            targets,
            plan.stored_reason,
            bool(p.get("asap")),
            NextState(p.get("next_state", "resume")),
        )
    elif plan.verb is Verb.MAINTENANCE_DELETE:
        scheduler.delete_reservation(str(p["name"]))
    elif plan.verb is Verb.MAINTENANCE:
        scheduler.create_reservation(
            ReservationRequest(
                name=str(p["name"]),
                nodes=tuple(targets),
                start_time=float(p["start_time"]),
                duration_seconds=float(p["duration_seconds"]),
                users=tuple(p.get("users", ("root",))),
            )
        )


def _verify(
    scheduler: Scheduler, plan: Plan, after: Mapping[str, Node]
) -> dict[str, dict[str, str]]:
    results: dict[str, dict[str, str]] = {}
    maint = plan.verb in (Verb.MAINTENANCE, Verb.MAINTENANCE_DELETE)
    names = {r.name for r in scheduler.reservations()} if maint else set()
    for n in plan.nodes:
        node = after.get(n.name)
        state = node.state.value if node else "unknown"
        if n.step is Step.SKIP:
            results[n.name] = {"result": UNCHANGED, "state": state}
            continue
        if n.step is Step.REFUSE:
            results[n.name] = {"result": REFUSED, "state": state}
            continue
        ok = node is not None and _took_effect(plan, node, names)
        results[n.name] = {"result": CHANGED if ok else FAILED, "state": state}
        if not ok and node is not None and _drained_by_other(plan, node):
            # Another operator's drain landed between our re-read and our call: the node
            # is drained as wanted, with their reason (the later write wins in Slurm).
            results[n.name] = {
                "result": UNCHANGED,
                "state": state,
                "note": f"drained concurrently: {node.reason}",
            }
    return results


def _drained_by_other(plan: Plan, node: Node) -> bool:
    return (
        plan.verb is Verb.DRAIN
        and node.state in (NodeState.DRAINING, NodeState.DRAINED)
        and node.reason != plan.stored_reason
    )


def _took_effect(plan: Plan, node: Node, reservations: set[str]) -> bool:
    if plan.verb is Verb.DRAIN:
        return node.state in (NodeState.DRAINING, NodeState.DRAINED, NodeState.DOWN) and (
            node.reason == plan.stored_reason
        )
    if plan.verb is Verb.RESUME:
        return node.state.in_service or node.state is NodeState.MAINT
    if plan.verb is Verb.REBOOT:
        # A fast reboot may already be over; its reason then is gone (resume) or ours (down).
        return (
            node.state is NodeState.REBOOTING
            or node.reason.startswith(plan.stored_reason)
            or (node.state.in_service)
        )
    if plan.verb is Verb.MAINTENANCE_DELETE:
        return str(plan.params.get("name")) not in reservations
    return str(plan.params.get("name")) in reservations


def execute(
    scheduler: Scheduler,
    request: Request,
    radius: BlastRadius,
    audit: AuditLog,
    argv: Sequence[str] = (),
) -> Outcome:
    action_id = new_action_id()
    with audit.lock():
        plan = prepare(scheduler, request, radius)  # fresh state, under the lock
        refused = refusal_error(plan)
        if refused is not None:
            audit.append(
                audit_record(
                    action_id,
                    "refused",
                    plan,
                    argv=list(argv),
                    plan=plan.to_dict(),
                    status="refused",
                    message=refused.message,
                )
            )
            raise refused
        audit.append(audit_record(action_id, "start", plan, argv=list(argv), plan=plan.to_dict()))
        outcome = Outcome(action_id, plan)
        error: FactoryctlError | None = None
        try:
            if plan.targets:
                _call(scheduler, plan)
        except FactoryctlError as err:
            error = err
        except BaseException as err:
            audit.append(
                audit_record(
                    action_id,
                    "result",
                    plan,
                    status="interrupted",
                    message=f"{type(err).__name__} during the scheduler call",
                )
            )
            raise
        try:
            after = {n.name: n for n in scheduler.nodes()}
            outcome.results = _verify(scheduler, plan, after)
        except FactoryctlError as err:
            outcome.results = {n: {"result": PENDING, "state": "unknown"} for n in plan.targets}
            error = error or err
        _conclude(outcome, error)
        audit.append(
            audit_record(
                action_id,
                "result",
                plan,
                status=outcome.status.name.lower(),
                message=outcome.message,
                result=outcome.results,
            )
        )
    return outcome


def _conclude(outcome: Outcome, error: FactoryctlError | None) -> None:
    plan = outcome.plan
    changed = [n for n, r in outcome.results.items() if r["result"] == CHANGED]
    failed = [n for n, r in outcome.results.items() if r["result"] in (FAILED, PENDING)]
    skipped = sum(1 for r in outcome.results.values() if r["result"] == UNCHANGED)
    verb = plan.verb.value
    if not plan.targets:
        outcome.message = (
            f"{verb}: nothing to do: all {skipped} node(s) already in the wanted state"
        )
    elif not failed:
        outcome.message = f"{verb}: {len(changed)} node(s) done" + (
            f", {skipped} already in the wanted state" if skipped else ""
        )
    elif changed:
        outcome.status = ExitStatus.PARTIAL
        outcome.message = (
            f"{verb}: partial: {len(changed)} node(s) done, failed on "
            f"{hostlists.collect(failed)}" + (f" ({error.message})" if error else "")
        )
    else:
        outcome.status = error.status if error else ExitStatus.SCHEDULER_ERROR
        outcome.message = error.message if error else f"{verb}: no node changed state"
